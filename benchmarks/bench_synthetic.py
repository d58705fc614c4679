"""Throughput of the synthetic pair renderer (pairs per second) at the training resolutions.

Usage::

    python benchmarks/bench_synthetic.py                      # CPU, 224x224 and 512x384
    python benchmarks/bench_synthetic.py --device cuda --batch 32 --pairs 256
    python benchmarks/bench_synthetic.py --threads 1 --no-shadows

Times ``render_pair_batch`` (planning, co-visibility check, rendering, exposure) after one warm-up
batch; building the texture bank is reported separately (it is cached per process).
"""

from __future__ import annotations

import argparse
import time

import torch

from pointmap.train.synthetic import (
    SyntheticConfig,
    build_texture_bank,
    render_pair_batch,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(resolution: tuple[int, int], device: torch.device, pairs: int, batch: int, shadows: bool) -> float:
    """Pairs per second for ``pairs`` pairs rendered ``batch`` at a time."""
    cfg = SyntheticConfig(resolution=resolution, device=str(device), shadows=shadows)
    render_pair_batch(cfg, list(range(10_000, 10_000 + batch)))  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    done = 0
    while done < pairs:
        n = min(batch, pairs - done)
        render_pair_batch(cfg, list(range(done, done + n)))
        done += n
    _sync(device)
    return pairs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pairs", type=int, default=16, help="pairs timed per resolution")
    ap.add_argument("--batch", type=int, default=8, help="pairs rendered per call")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-shadows", action="store_true")
    ap.add_argument("--resolutions", default="224x224,512x384", help="comma-separated WxH list")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    build_texture_bank(0, device=device)
    print(f"device={device} threads={torch.get_num_threads()} shadows={not args.no_shadows} "
          f"texture bank built in {time.perf_counter() - t0:.1f} s")
    for res in args.resolutions.split(","):
        w, h = (int(x) for x in res.lower().split("x"))
        rate = bench((w, h), device, args.pairs, args.batch, not args.no_shadows)
        print(f"{w}x{h}: {rate:.2f} pairs/s ({args.pairs} pairs, batch {args.batch})")


if __name__ == "__main__":
    main()
