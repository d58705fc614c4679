"""Prototype for streamed reductions: dense depth from one canonical pointmap per image.

Today the dense stage re-solves every pixel's depth from every edge side's full prediction. A store
that keeps per pair only the coarse samples cannot do that; this measures what a per-image reduction
loses. The reduction: each image's canonical depth (its camera frame, the confidence-weighted
mean of every ``pts3d_1`` where it comes first, each divided by its median depth, then brought to
the median depth of the most confident one), accumulated pair by pair as the predictions leave the
network. The dense depth is then the canonical depth times the coarse solution's correction: the
ratio ``coarse depth / canonical depth`` at the coarse pixels, upsampled bilinearly (log) over the
image, so the coarse stage's depths stay exact at its pixels.

Synthetic scene with exact ground truth (:func:`pointmap.testing.synthetic_pairs.make_synthetic_scene`);
the poses come from the coarse stage either way (the dense stage does not move them). Reports the
median and 90th percentile of ``|s d - d_true| / d_true`` over every pixel, ``s`` the similarity
scale onto the true cameras, for: the dense stage (``dense``), the upsampled coarse depth
(``coarse``) and the reduction (``canonical``)::

    python benchmarks/bench_reduction.py --images 20 --size 128x96 --graph logwin-5 --out red.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from pointmap.align import AlignConfig, align_pairs
from pointmap.align.params import conf_transform
from pointmap.geometry import align_multiple_poses
from pointmap.testing.synthetic_pairs import make_synthetic_scene


def canonical_depths(preds, n: int, conf_trf: str) -> list[torch.Tensor]:
    """Per image ``(H, W)`` canonical depth, accumulated one pair at a time (as a stream would)."""
    num: dict[int, torch.Tensor] = {}
    den: dict[int, torch.Tensor] = {}
    best: dict[int, tuple[float, float]] = {}  # mean confidence, median depth of the best pair
    for e, (i, j) in enumerate(preds.pairs):
        z = preds.pts3d_1[e][..., 2].double()
        c = preds.conf_1[e].double()
        ok = z > 0
        med = float(z[ok].median()) if bool(ok.any()) else 1.0
        w = conf_transform(c, conf_trf).clamp(min=0) * ok
        num[i] = num.get(i, 0) + w * z / med
        den[i] = den.get(i, 0) + w
        if i not in best or float(c.mean()) > best[i][0]:
            best[i] = (float(c.mean()), med)
    return [num[k] / den[k].clamp(min=1e-12) * best[k][1] for k in range(n)]


def upsample_log_ratio(ratio: torch.Tensor, shape: tuple[int, int], stride: int) -> torch.Tensor:
    """Coarse-grid values ``(hs, ws)`` at pixels ``off + stride * i`` to ``(H, W)``, bilinear,
    border clamp (the grid the coarse stage samples)."""
    H, W = shape
    hs, ws = ratio.shape
    off = stride // 2 if stride > 1 else 0
    gx = 2 * ((torch.arange(W, dtype=torch.float64) - off) / stride) / max(ws - 1, 1) - 1
    gy = 2 * ((torch.arange(H, dtype=torch.float64) - off) / stride) / max(hs - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    return F.grid_sample(ratio[None, None], grid, mode="bilinear", padding_mode="border",
                         align_corners=True)[0, 0]


def depth_errors(depths: list[torch.Tensor], poses: torch.Tensor, gt) -> dict[str, float]:
    s, _, _ = align_multiple_poses(poses.double(), gt.poses.double())
    rel = torch.cat([((float(s) * d.double() - g.double()).abs() / g.double()).reshape(-1)
                     for d, g in zip(depths, gt.depths)])
    rel = rel[torch.isfinite(rel)]
    return {"median": float(rel.median()), "p90": float(rel.quantile(0.9)) if rel.numel() < 2**24
            else float(rel[:: rel.numel() // 2**23 + 1].quantile(0.9))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--graph", default="logwin-5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    W, H = (int(x) for x in args.size.split("x"))
    gt = make_synthetic_scene(args.images, (W, H), graph=args.graph, seed=args.seed)
    row: dict = {"n_images": args.images, "size": args.size, "graph": args.graph, "n_pairs": len(gt.preds)}
    t0 = time.perf_counter()
    dense = align_pairs(gt.preds, config=AlignConfig(), device="cpu", progress=False)
    coarse = align_pairs(gt.preds, config=AlignConfig(dense=False), device="cpu", progress=False)
    row["seconds_align"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    canon = canonical_depths(gt.preds, args.images, AlignConfig().conf_trf)
    st = coarse.stride
    off = st // 2 if st > 1 else 0
    red = []
    for k, zc in enumerate(canon):
        dk = coarse.scene.depths[k].double()
        r = (dk[off::st, off::st].log() - zc[off::st, off::st].clamp(min=1e-12).log())
        red.append(zc * upsample_log_ratio(r, (H, W), st).exp())
    row["seconds_reduction"] = time.perf_counter() - t0
    for name, depths, poses in (("dense", dense.scene.depths, dense.scene.poses),
                                ("coarse", coarse.scene.depths, coarse.scene.poses),
                                ("canonical", red, coarse.scene.poses)):
        row[f"depth_err_{name}"] = depth_errors(depths, poses, gt)
    row["same_poses"] = bool(torch.allclose(dense.scene.poses, coarse.scene.poses))
    print(json.dumps(row, indent=1))
    with open(args.out, "w") as f:
        json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
