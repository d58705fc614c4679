"""Benchmark online tracking on a synthetic video (bounded memory, trajectory error).

The camera circles the synthetic room of :mod:`pointmap.testing.synthetic_pairs` (400 frames per
turn) and pair predictions are fabricated with exact ground truth, so no network runs. Each run of
``--frames N`` happens in its own process so that its peak RSS is its own, and the peak RSS is also
recorded after ``--checkpoints`` frames of that run::

    # peak RSS after 500 and 2000 frames (one process; also separate runs with --frames 500 2000)
    python benchmarks/bench_online.py --frames 2000 --checkpoints 500 --size 32 24
    # the offline logwin-5 alignment of the same frames (first 200), for comparison
    python benchmarks/bench_online.py --offline 200
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def online(n: int, refine_every: int, size: tuple[int, int], checkpoints: list[int]) -> dict:
    """Track ``n`` frames; peak RSS (also after each of ``checkpoints`` frames), time, keyframes
    and the ATE (also on the first 200 frames)."""
    from pointmap.online import OnlineConfig, Tracker, absolute_trajectory_error
    from pointmap.testing.synthetic_video import SyntheticVideo

    video = SyntheticVideo(size=size)
    tracker = Tracker(video, OnlineConfig(refine_every=refine_every))
    t0 = time.perf_counter()
    stored, at = 0, {}
    for k in range(n):
        tracker.add_frame(k)
        stored = max(stored, tracker.stored_frames())
        if k + 1 in checkpoints:
            at[k + 1] = {"peak_rss_mib": _peak_rss_mib(), "keyframes": len(tracker.keyframes),
                         "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps({"at_frame": k + 1, **at[k + 1]}), file=sys.stderr, flush=True)
    secs = time.perf_counter() - t0
    P, G = tracker.poses(), video.poses(n)
    m = min(n, 200)
    return {"frames": n, "size": list(size), "seconds": round(secs, 1), "fps": round(n / secs, 2),
            "peak_rss_mib": _peak_rss_mib(), "at": at,
            "keyframes": len(tracker.keyframes), "max_stored_frames": stored,
            "untracked": int((~tracker.tracked()).sum()), "refinements": tracker.refinements,
            "ate": absolute_trajectory_error(P, G), f"ate_first_{m}": absolute_trajectory_error(P[:m], G[:m]),
            "extent": float(np.linalg.norm(np.ptp(G[:, :3, 3], axis=0)))}


def offline(n: int) -> dict:
    """Global alignment (dense, the default) of the first ``n`` frames with the ``logwin-5``
    graph that ``pointmap reconstruct`` uses for video frames; its ATE."""
    import torch

    from pointmap.align import global_align
    from pointmap.online import absolute_trajectory_error
    from pointmap.pairs import make_pairs
    from pointmap.predictions import PairPredictions
    from pointmap.testing.synthetic_video import SyntheticVideo

    video = SyntheticVideo()
    pairs = make_pairs(n, "logwin-5")
    outs = [video.predict(i, [j])[0] for i, j in pairs]
    preds = PairPredictions(pairs, *[[o[k] for o in outs] for k in range(4)], n_images=n)
    t0 = time.perf_counter()
    scene = global_align(preds, [video.colours(k) for k in range(n)], progress=False)
    secs = time.perf_counter() - t0
    P = scene.poses.double().numpy()
    return {"offline_frames": n, "pairs": len(pairs), "align_seconds": round(secs, 1),
            "ate": absolute_trajectory_error(P, video.poses(n)), "placed": int(scene.placed.sum()),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="*", default=[], help="online runs, one process each")
    p.add_argument("--offline", type=int, default=0, help="frames of the offline logwin-5 run (0: none)")
    p.add_argument("--refine-every", type=int, default=0, help="keyframes between global refinements")
    p.add_argument("--size", type=int, nargs=2, default=[64, 48], metavar=("W", "H"), help="frame size")
    p.add_argument("--checkpoints", type=int, nargs="*", default=[500],
                   help="also record the peak RSS after these many frames (same process)")
    p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # a child process's run
    a = p.parse_args()
    if a.one:
        print(json.dumps(online(a.one, a.refine_every, tuple(a.size), a.checkpoints)))
        return
    for n in a.frames:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--refine-every", str(a.refine_every),
                              "--size", *map(str, a.size), "--checkpoints", *map(str, a.checkpoints)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        print(out.strip(), flush=True)
    if a.offline:
        print(json.dumps(offline(a.offline)), flush=True)


if __name__ == "__main__":
    main()
