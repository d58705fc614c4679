"""Benchmark global alignment on synthetic scenes (time, peak memory, accuracy).

Everything is generated in-process (:mod:`pointmap.testing.synthetic_pairs`); nothing outside the
repository is needed. ``--graph auto`` (default) uses the complete graph up to 50 images and
``logwin-5`` above (``swin-5`` etc. can be given explicitly). Examples::

    # the GPU targets: 10 and 50 images complete, 200 images logwin-5, at 512x384
    python benchmarks/bench_align.py --device cuda --n-images 10 50 200 --json bench_align.json
    # the CPU target
    python benchmarks/bench_align.py --device cpu --n-images 10 --sizes 224x224
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import roma
import torch

from pointmap.align import AlignConfig, align_pairs
from pointmap.geometry import align_multiple_poses
from pointmap.testing.synthetic_pairs import make_synthetic_scene


def errors(scene, gt) -> dict[str, float]:
    """Max relative focal error, median / max rotation error (deg) and max camera-centre error
    relative to the scene extent, after a similarity alignment of the poses."""
    fe = ((scene.focals - gt.focals) / gt.focals).abs()
    s, R, T = align_multiple_poses(scene.poses, gt.poses)
    ang = roma.rotmat_geodesic_distance(R @ scene.poses[:, :3, :3], gt.poses[:, :3, :3]).rad2deg()
    C = s * scene.poses[:, :3, 3] @ R.T + T
    ce = (C - gt.poses[:, :3, 3]).norm(dim=-1) / gt.extent
    return {"focal_err_max": float(fe.max()), "rot_err_med_deg": float(ang.median()),
            "rot_err_max_deg": float(ang.max()), "centre_err_max": float(ce.max())}


def graph_for(n: int, graph: str) -> str:
    if graph != "auto":
        return graph
    return "complete" if n <= 50 else "logwin-5"


def run_one(n: int, W: int, H: int, graph: str, args: argparse.Namespace) -> dict:
    cuda = args.device.startswith("cuda")
    t0 = time.perf_counter()
    gen_device = args.gen_device or args.device
    gt = make_synthetic_scene(n, (W, H), graph=graph, seed=args.seed, dtype=getattr(torch, args.dtype),
                              device=gen_device)
    t_gen = time.perf_counter() - t0
    cfg = AlignConfig(solver=args.solver, niter=args.niter)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = align_pairs(gt.preds, config=cfg, device=args.device)
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"size": f"{W}x{H}", "n_images": n, "pairs": len(gt.preds), "graph": graph,
            "device": args.device, "solver": cfg.solver, "time_s": dt, "peak_gib": mem,
            "stride": res.stride, "iterations": res.iterations, "gen_s": t_gen,
            **{f"t_{k}": v for k, v in res.timings.items()}, **errors(res.scene, gt),
            "loss_init": res.init_loss, "loss": res.loss, "loss_dense": res.dense_loss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gen-device", default=None, help="device that fabricates the predictions (default --device)")
    ap.add_argument("--sizes", nargs="+", default=["512x384"], help="WxH image sizes")
    ap.add_argument("--n-images", nargs="+", type=int, default=[10, 50, 200])
    ap.add_argument("--graph", default="auto", help="auto | complete | swin-K | logwin-K | oneref-K")
    ap.add_argument("--solver", default="gn", choices=["gn", "adam"])
    ap.add_argument("--niter", type=int, default=None, help="coarse iterations (default: solver's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float16", help="storage dtype of the synthetic predictions")
    ap.add_argument("--json", default=None, help="write results to this JSON file")
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        W, H = (int(x) for x in size.split("x"))
        for n in args.n_images:
            row = run_one(n, W, H, graph_for(n, args.graph), args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    keys = ["size", "n_images", "pairs", "graph", "time_s", "peak_gib", "iterations", "focal_err_max",
            "rot_err_med_deg", "centre_err_max"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    if args.json:
        meta = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
