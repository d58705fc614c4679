"""Benchmark global alignment on synthetic scenes (time, peak memory, accuracy).

Example::

    python benchmarks/bench_align.py --device cuda --n-images 10 50 --size 512x384 --graph complete
"""

from __future__ import annotations

import argparse
import json
import time

import roma
import torch

from pointmap.align import AlignConfig, align_pairs
from pointmap.geometry import align_multiple_poses
from pointmap.synthetic_pairs import make_synthetic_scene


def errors(scene, gt) -> dict[str, float]:
    fe = ((scene.focals - gt.focals) / gt.focals).abs()
    s, R, T = align_multiple_poses(scene.poses, gt.poses)
    ang = roma.rotmat_geodesic_distance(R @ scene.poses[:, :3, :3], gt.poses[:, :3, :3]).rad2deg()
    C = s * scene.poses[:, :3, 3] @ R.T + T
    ce = (C - gt.poses[:, :3, 3]).norm(dim=-1) / gt.extent
    return {"focal_err_max": float(fe.max()), "rot_err_med_deg": float(ang.median()),
            "centre_err_max": float(ce.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", nargs="+", default=["512x384"], help="WxH image sizes")
    ap.add_argument("--n-images", nargs="+", type=int, default=[10, 50, 200])
    ap.add_argument("--graph", default="complete", help="complete | swin-K | logwin-K | oneref-K")
    ap.add_argument("--niter", type=int, default=300)
    ap.add_argument("--solver", default="adam")
    ap.add_argument("--dtype", default="float16", help="storage dtype of the synthetic predictions")
    ap.add_argument("--json", default=None, help="write results to this JSON file")
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        W, H = (int(x) for x in size.split("x"))
        for n in args.n_images:
            gt = make_synthetic_scene(n, (W, H), graph=args.graph, seed=0, dtype=getattr(torch, args.dtype))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            res = align_pairs(gt.preds, config=AlignConfig(niter=args.niter, solver=args.solver), device=args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            mem = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
            row = {"size": size, "n_images": n, "pairs": len(gt.preds), "graph": args.graph,
                   "device": args.device, "time_s": dt, "peak_gib": mem, "stride": res.stride,
                   **{f"t_{k}": v for k, v in res.timings.items()}, **errors(res.scene, gt)}
            rows.append(row)
            print(json.dumps(row))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
