"""Benchmark ``pointmap extend`` against a reconstruction from scratch (time, pairs, accuracy).

A synthetic capture of ``--n-images`` cameras with exact ground truth is written as PNG files;
every fourth image is held back. The others are reconstructed through the pipeline with a
predictions store, then extended by the held-back ones (with and without ``--freeze``), and all
are reconstructed from scratch. The network is replaced by
:class:`pointmap.testing.synthetic_capture.SyntheticNetwork` (synthetic pair predictions), so the
times are those of the pipeline around it: scene graph and retrieval, store, alignment, exports.
With ``--rounds R`` the three compared rows (extend, extend --freeze, from scratch) run R times,
interleaved (each extend on a fresh copy of the 90-image folder), so that they share the machine's
load; each row reports its median, and the load average is recorded. Each row also reports the
process's CPU seconds (with ``--threads 1``, the work done, which the machine's load hardly
changes); the scratch row's ``descriptors`` stage is the retrieval descriptors its store keeps for
a later extend.
Example::

    python benchmarks/bench_extend.py --n-images 120 --size 64x48 --json bench_extend.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import shutil
import tempfile
import time
from pathlib import Path

import roma
import torch

from pointmap.align import AlignConfig
from pointmap.geometry import align_multiple_poses
from pointmap.pipeline import Alignment, ExportSpec, Inputs, ModelSpec, PostProcess, Request, StorePolicy, core
from pointmap.pipeline import extend as X
from pointmap.pipeline.runner import run_request
from pointmap.testing.synthetic_capture import SyntheticNetwork, write_capture
from pointmap.testing.synthetic_pairs import synthetic_cameras


def errors(scene, gt) -> dict[str, float]:
    """Mean camera-centre error (fraction of the extent) and mean rotation error (degrees) after a
    similarity alignment of the poses."""
    ids = [int(n[4:7]) for n in scene.names]
    est, ref = scene.poses.double(), gt.poses[ids].double()
    s, R, t = align_multiple_poses(est, ref)
    ce = (s * est[:, :3, 3] @ R.T + t - ref[:, :3, 3]).norm(dim=-1).mean() / gt.extent
    ang = roma.rotmat_geodesic_distance(R @ est[:, :3, :3], ref[:, :3, :3]).rad2deg().mean()
    return {"centre_err_mean": float(ce), "rot_err_mean_deg": float(ang)}


def stage_seconds(res) -> dict[str, float]:
    """Seconds per stage of a run (inference, alignment, export, ...)."""
    return {k: round(v.seconds, 2) for k, v in res.stages.stages.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-images", type=int, default=120)
    ap.add_argument("--size", default="64x48", help="WxH of the synthetic images")
    ap.add_argument("--graph", default="swin-3")
    ap.add_argument("-k", type=int, default=4, help="old images paired with each new one")
    ap.add_argument("--coarse-pixels", type=int, default=None, help="AlignConfig.coarse_pixels (default: its own)")
    ap.add_argument("--no-dense", action="store_true", help="AlignConfig.dense=False")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of the compared rows")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    W, H = map(int, args.size.split("x"))
    gt = synthetic_cameras(args.n_images, (W, H), seed=0)
    new_ids = [k for k in range(args.n_images) if k % 4 == 3]
    old_ids = [k for k in range(args.n_images) if k % 4 != 3]
    cfg = AlignConfig(dense=not args.no_dense, **({"coarse_pixels": args.coarse_pixels} if args.coarse_pixels else {}))
    net = SyntheticNetwork(gt)
    core.infer_pairs = X.infer_pairs = net
    root = Path(tempfile.mkdtemp(prefix="bench_extend_"))
    old_p, new_p = write_capture(gt, root / "old", old_ids), write_capture(gt, root / "new", new_ids)

    def request(paths, out: Path) -> Request:
        return Request(inputs=Inputs([str(p) for p in paths]), model=ModelSpec(size=W), graph=args.graph,
                       store=StorePolicy(mode="on", full_pairs=True), align=Alignment(dense=cfg), post=PostProcess(),
                       export=ExportSpec(output=str(out), formats=("cameras", "depth", "transforms")))

    rows: dict[str, dict] = {}
    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    run_request(request(old_p, root / "base"))
    rows["base"] = {"seconds": time.perf_counter() - t0, "pairs_run": len(net.ran)}
    times: dict[str, list[float]] = {"extend": [], "extend --freeze": [], "scratch": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    for r in range(args.rounds):
        for name, freeze in (("extend", False), ("extend --freeze", True)):
            folder = root / f"{'frozen' if freeze else 'free'}_{r}"
            shutil.copytree(root / "base", folder)
            net.ran.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            res, _ = X.run_extend(request(new_p, folder), freeze=freeze, k=args.k)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            rows[name] = {"pairs_run": len(net.ran), **errors(res.scene, gt), "stages": stage_seconds(res)}
            shutil.rmtree(folder)
        net.ran.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_request(request(sorted(old_p + new_p), root / f"scratch_{r}"))
        times["scratch"].append(time.perf_counter() - t0)
        cpu["scratch"].append(time.process_time() - c0)
        rows["scratch"] = {"pairs_run": len(net.ran), **errors(res.scene, gt), "stages": stage_seconds(res)}
        shutil.rmtree(root / f"scratch_{r}")
        load.append(os.getloadavg()[0])
    for name, ts in times.items():
        rows[name].update(seconds=statistics.median(ts), all_seconds=ts, cpu_seconds=statistics.median(cpu[name]),
                          all_cpu_seconds=cpu[name])
    shutil.rmtree(root)
    print(f"1-minute load average at the start and after each round: {', '.join(f'{x:.1f}' for x in load)}")
    for name, r in rows.items():
        ratio = r["seconds"] / rows["scratch"]["seconds"]
        cpu_ratio = r["cpu_seconds"] / rows["scratch"]["cpu_seconds"] if "cpu_seconds" in r else None
        print(f"{name:16s} {r['seconds']:7.1f} s ({100 * ratio:5.1f} % of scratch), {r['pairs_run']:4d} pairs run"
              + (f", CPU {r['cpu_seconds']:.2f} s ({100 * cpu_ratio:.1f} %)" if cpu_ratio is not None else "")
              + (f", centre err {r['centre_err_mean']:.2e} of extent, rot err {r['rot_err_mean_deg']:.3f} deg"
                 if "centre_err_mean" in r else "") + (f"; stages {r['stages']}" if "stages" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.machine(), "cpus": torch.get_num_threads(),
                                               "load_average_1min": load, "args": vars(args), "rows": rows},
                                              indent=1))


if __name__ == "__main__":
    main()
