"""Benchmark sparse alignment from matches against dense alignment on the same synthetic scenes
(accuracy, time, peak traced memory).

The scenes and predictions are :func:`pointmap.testing.synthetic_pairs.make_synthetic_scene`'s
(noise, smooth distortion, outlier blobs); the matches are the ground truth's
(:func:`~pointmap.testing.synthetic_pairs.synthetic_matches`, a grid of ``--step`` pixels) with
``--outliers`` of them replaced by random pixels. Memory is the process's peak resident set
(``ru_maxrss``, generating the scene included), next to the resident set just before the
alignment (``rss_before_mib``): run one method per process to compare. Example::

    python benchmarks/bench_sparse.py --n-images 50 --methods sparse
    python benchmarks/bench_sparse.py --n-images 50 --methods dense
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from bench_align import errors

from pointmap.align import AlignConfig, global_align
from pointmap.align.sparse import sparse_align
from pointmap.testing.synthetic_pairs import make_synthetic_scene, synthetic_matches


def rss_now_mib() -> float:
    """Current resident set of this process (MiB; Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**10
    return float("nan")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux -> MiB
    return out, dt, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", nargs="+", type=int, default=[50, 200])
    ap.add_argument("--size", default="64x48", help="WxH")
    ap.add_argument("--graph", default="swin-3")
    ap.add_argument("--step", type=int, default=4, help="match grid step (pixels)")
    ap.add_argument("--outliers", type=float, default=0.1, help="fraction of random matches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=["sparse", "dense"])
    args = ap.parse_args()
    W, H = (int(x) for x in args.size.split("x"))
    rows = []
    for n in args.n_images:
        gt = make_synthetic_scene(n, (W, H), graph=args.graph, seed=args.seed)
        m = synthetic_matches(gt, gt.preds.pairs, step=args.step, outliers=args.outliers, seed=args.seed)
        for method in args.methods:
            before = rss_now_mib()
            if method == "sparse":
                scene, dt, peak = timed(lambda: sparse_align(gt.preds, m))
            else:
                scene, dt, peak = timed(lambda: global_align(gt.preds, config=AlignConfig()))
            row = {"method": method, "n_images": n, "pairs": len(gt.preds),
                   "matches": sum(len(a) for a, _ in m.values()), "time_s": dt, "rss_before_mib": before, "peak_rss_mib": peak,
                   **errors(scene, gt)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    keys = ["method", "n_images", "pairs", "time_s", "rss_before_mib", "peak_rss_mib", "rot_err_med_deg", "centre_err_max",
            "focal_err_max"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
