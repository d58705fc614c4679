"""Dense matching speed: pairs per second of :func:`pointmap.matching.reciprocal_matches` at
512x384, next to a re-implementation of the reference's algorithm run on the same descriptors.

The reference (MASt3R's ``fast_reciprocal_NNs`` with ``dist='dot', block_size=2**13``, as its demo
calls it) is re-implemented below as :func:`reference_style_matches`, faithfully: numpy state, at
most 10 there-and-back rounds, and for every query batch a blockwise brute-force search that
also computes the reverse nearest neighbours (which the reference computes and discards), with
no memory of pixels already searched. It lives here, not in the library, only as a baseline.

Descriptors: the first pair of the MASt3R parity model (tiny config, refilled weights, 512x384,
24-dim, from ``$POINTMAP_SHARED/parity``), and a synthetic pair (a smooth random descriptor field
and its copy shifted by 37x23 pixels with noise, the way a real pair's descriptors overlap).
Both methods must return the same matches; the script checks it.

    python benchmarks/bench_matching.py --device cpu --repeat 3 --out bench_matching_cpu.json
    python benchmarks/bench_matching.py --device cuda --batch 16 --out bench_matching_gpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pointmap.matching import reciprocal_matches, reciprocal_matches_batched


# ----------------------------------------------------------------------------- baseline
def _reference_nn(A: torch.Tensor, B: torch.Tensor, block: int) -> np.ndarray:
    """Brute-force dot-product nearest neighbours of ``A`` in ``B`` the way the reference does it:
    blockwise over both sets, reverse neighbours computed as well."""
    if len(A) * len(B) <= block**2:
        d = A @ B.T
        return d.max(1).indices.cpu().numpy()
    best_a = torch.full((len(A),), -math.inf, device=A.device)
    best_b = torch.full((len(B),), -math.inf, device=A.device)
    nn_a = torch.full((len(A),), -1, dtype=torch.int64, device=A.device)
    nn_b = torch.full((len(B),), -1, dtype=torch.int64, device=A.device)
    for i in range(0, len(A), block):
        for j in range(0, len(B), block):
            d = A[i:i + block] @ B[j:j + block].T
            va, ia = d.max(1)
            vb, ib = d.max(0)
            ma = va > best_a[i:i + block]
            mb = vb > best_b[j:j + block]
            best_a[i:i + block][ma] = va[ma]
            best_b[j:j + block][mb] = vb[mb]
            nn_a[i:i + block][ma] = ia[ma] + j
            nn_b[j:j + block][mb] = ib[mb] + i
    nn_b.cpu()  # the reference moves both results to the host
    return nn_a.cpu().numpy()


def reference_style_matches(d1: torch.Tensor, d2: torch.Tensor, subsample: int = 8,
                            block: int = 2**13) -> tuple[np.ndarray, np.ndarray]:
    """The reference algorithm on ``(H, W, D)`` descriptors -> ``(xy1, xy2)`` (N, 2) int (x, y)."""
    H1, W1, D = d1.shape
    H2, W2, _ = d2.shape
    p1, p2 = d1.reshape(-1, D), d2.reshape(-1, D)
    S = subsample
    y1, x1 = np.mgrid[S // 2:H1:S, S // 2:W1:S].reshape(2, -1)
    xy1 = np.int32(np.unique(x1 + W1 * y1))
    xy2 = np.full_like(xy1, -1)
    old1, old2 = xy1.copy(), xy2.copy()
    notyet = np.ones(len(xy1), dtype=bool)
    rounds = 0
    while notyet.any():
        xy2[notyet] = _reference_nn(p1[torch.from_numpy(xy1[notyet]).long()], p2, block)
        notyet &= old2 != xy2
        xy1[notyet] = _reference_nn(p2[torch.from_numpy(xy2[notyet]).long()], p1, block)
        notyet &= old1 != xy1
        rounds += 1
        if rounds >= 10:
            break
        old2[:] = xy2
        old1[:] = xy1
    ok = ~notyet
    a, b = xy1[ok].astype(np.int64), xy2[ok].astype(np.int64)
    key = np.unique(a * (H2 * W2) + b)
    a, b = key // (H2 * W2), key % (H2 * W2)
    return np.stack([a % W1, a // W1], -1), np.stack([b % W2, b // W2], -1)


# ----------------------------------------------------------------------------- descriptors
def parity_descriptors(shared: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The MASt3R parity model's descriptors of its first pair (512x384)."""
    from pointmap.inference import infer_pairs
    from pointmap.model import DUSt3R, load_weights, parse_constructor_string
    from pointmap.testing.refill import refill_state_dict

    d = shared / "parity" / "mast3r_tiny_512"
    manifest = json.loads((d / "manifest.json").read_text())
    vec = torch.load(d / "vectors.pt", weights_only=True)
    model = DUSt3R(parse_constructor_string(manifest["args"]))
    load_weights(model, refill_state_dict(manifest["keys"], vec["seed"]))
    imgs = [im["img"] for im in vec["images"]]
    p = infer_pairs(model.eval(), imgs, [tuple(vec["pairs"][0])], device="cpu")
    return p.desc_1[0], p.desc_2[0]


def synthetic_descriptors(H: int = 384, W: int = 512, D: int = 24, seed: int = 0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random unit descriptor field and its shifted, noisy copy."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, D, H // 8 + 8, W // 8 + 8, generator=g)
    field = F.interpolate(base, scale_factor=8, mode="bicubic", align_corners=False)[0]
    d1 = field[:, :H, :W].permute(1, 2, 0)
    d2 = field[:, 23:23 + H, 37:37 + W].permute(1, 2, 0)
    d2 = d2 + 0.05 * torch.randn(d2.shape, generator=g)
    return F.normalize(d1.contiguous(), dim=-1), F.normalize(d2.contiguous(), dim=-1)


# ----------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, repeat: int, device: torch.device, warm: bool = True):
    """Best wall time of ``repeat`` calls (after one warm-up call when ``warm``), and the last result."""
    if warm:
        fn()
        _sync(device)
    best, out = math.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="pairs per batched call (GPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    shared = Path(os.environ.get("POINTMAP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    sets = {"synthetic": synthetic_descriptors()}
    if (shared / "parity" / "mast3r_tiny_512").is_dir():
        sets["parity_model"] = parity_descriptors(shared)
    report: dict = {
        "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "size": "512x384", "desc_dim": 24, "subsample": 8, "results": {},
    }
    for name, (d1, d2) in sets.items():
        d1, d2 = d1.to(dev), d2.to(dev)
        res: dict = {}
        t, mine = _time(lambda: reciprocal_matches(d1, d2, subsample=8), args.repeat, dev)
        res["n_matches"] = len(mine[0])
        res["pointmap_s_per_pair"] = t
        res["pointmap_pairs_per_s"] = 1 / t
        if dev.type == "cuda" and args.batch > 1:
            b1 = d1[None].expand(args.batch, -1, -1, -1).contiguous()
            b2 = d2[None].expand(args.batch, -1, -1, -1).contiguous()
            tb, _ = _time(lambda: reciprocal_matches_batched(b1, b2, subsample=8), args.repeat, dev)
            res["pointmap_batched_pairs_per_s"] = args.batch / tb
            res["batch"] = args.batch
        if not args.no_baseline:
            tr, ref = _time(lambda: reference_style_matches(d1, d2), args.repeat, dev, warm=False)
            same = (np.array_equal(ref[0], mine[0].numpy()) and np.array_equal(ref[1], mine[1].numpy()))
            res["same_matches_as_baseline"] = bool(same)
            res["baseline_s_per_pair"] = tr
            res["baseline_pairs_per_s"] = 1 / tr
            res["speedup"] = tr / t
        report["results"][name] = res
        print(json.dumps({name: res}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
