"""Throughput of the realistic engine's mesh rasteriser (views per second) on an asset bank.

Usage::

    python benchmarks/bench_realistic.py --bank asset-bank                  # CPU, 224x224 and 512x384
    python benchmarks/bench_realistic.py --bank asset-bank --device cuda --views 64

Composes one scene per layout (room, turntable, street, clutter; the time to compose and pack them
with their textures is reported apart), then times :func:`render_meshes` on ``--views`` views per
call (cameras from each scene's trajectory, colour, exposure; shadows with ``--shadows``) after one
warm-up call. Capture effects (blur, noise, JPEG) are not included. Besides wall-clock views per second it
prints the process CPU time per view, which a machine shared with other jobs inflates less.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from pointmap.train.realistic.capture import RealisticConfig, open_bank, plan_capture
from pointmap.train.realistic.composer import REALISTIC_LAYOUTS
from pointmap.train.realistic.meshes import pack_mesh_scenes
from pointmap.train.realistic.raster import render_meshes
from pointmap.train.synthetic import intrinsics_from_fov


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bank", default=os.environ.get("POINTMAP_ASSET_BANK"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--views", type=int, default=8, help="views rendered per call (spread over the 4 scenes)")
    ap.add_argument("--calls", type=int, default=3, help="timed calls per resolution")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shadows", action="store_true")
    ap.add_argument("--resolutions", default="224x224,512x384")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = RealisticConfig(bank=args.bank or "", n_views=args.views)
    bank = open_bank(cfg)
    t0 = time.perf_counter()
    plans = [plan_capture(cfg, bank, 1000 + i, layout=lay) for i, lay in enumerate(REALISTIC_LAYOUTS)]
    batch, tex = pack_mesh_scenes([p.scene for p in plans], lambda k: bank.texture(k, 256), dev)
    _sync(dev)
    n_tri = [len(p.scene.tri) for p in plans]
    print(f"compose + pack 4 scenes: {time.perf_counter() - t0:.2f} s; triangles per scene {n_tri}; "
          f"{tex.n_textures} textures")
    V = args.views
    sidx = torch.arange(V, device=dev) % len(plans)
    poses = torch.from_numpy(np.stack([plans[int(s)].poses[k // len(plans)] for k, s in enumerate(sidx.tolist())]))
    poses = poses.float().to(dev)
    for res in args.resolutions.split(","):
        w, h = (int(x) for x in res.split("x"))
        K = torch.from_numpy(intrinsics_from_fov(60.0, w, h)).to(dev).expand(V, 3, 3).contiguous()
        render_meshes(batch, sidx, poses, K, h, w, bank=tex, shadows=args.shadows)  # warm-up
        _sync(dev)
        t1, c1 = time.perf_counter(), time.process_time()
        for _ in range(args.calls):
            out = render_meshes(batch, sidx, poses, K, h, w, bank=tex, shadows=args.shadows)
        _sync(dev)
        dt, dc = time.perf_counter() - t1, time.process_time() - c1
        print(f"{w}x{h}: {args.calls * V / dt:.1f} views/s ({dt / args.calls * 1000:.0f} ms per call of {V} views; "
              f"process CPU time {dc / (args.calls * V) * 1000:.0f} ms per view; "
              f"valid {float(out.valid.float().mean()):.2f})", flush=True)


if __name__ == "__main__":
    main()
