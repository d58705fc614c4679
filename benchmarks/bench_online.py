"""Benchmark online tracking on a synthetic video (bounded memory, trajectory error, frames per second).

The camera circles the synthetic room of :mod:`pointmap.testing.synthetic_pairs` (400 frames per
turn). Without ``--network`` the pair predictions are fabricated with exact ground truth, so no
network runs. Each run of ``--frames N`` happens in its own process so that its peak RSS is its own,
and the peak RSS is also recorded after ``--checkpoints`` frames of that run::

    # peak RSS after 500 and 2000 frames (one process; also separate runs with --frames 500 2000)
    python benchmarks/bench_online.py --frames 2000 --checkpoints 500 --size 32x24
    # the offline logwin-5 alignment of the same frames (first 200), for comparison
    python benchmarks/bench_online.py --offline 200

With ``--network`` the frames of the video are rendered (textured room, exact camera poses) and a
network tracks them through :class:`pointmap.online.runner.NetworkPredictor`, as ``pointmap
reconstruct --online`` does: ``bundled`` is the bundled model, ``refill`` the architecture of
``--arch`` with the parity refill weights (seed 0; nothing is downloaded; its predictions are
random, so only its speed and memory mean something)::

    # the CPU figure of docs/benchmarks.md (bundled model at its 224 px)
    python benchmarks/bench_online.py --network bundled --device cpu --size 512x384 --frames 16
    # one GPU, the released 512 DPT architecture at 512x384, compiled bfloat16
    python benchmarks/bench_online.py --network refill --arch 512-dpt --device cuda --size 512x384 \\
        --frames 400 --fast

The frames are rendered before the clock starts (kept as uint8); the time per frame includes
preprocessing, inference and tracking; ``cpu_seconds_per_frame`` (the process's CPU time, all
threads) is less sensitive than the wall clock to other work on a shared CPU. ``--fast`` compiles the network (CUDA) and tracks a few
warm-up frames untimed first.
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


def _frame_size(text: str) -> tuple[int, int]:
    """``WxH`` -> ``(W, H)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 512x384)") from None
    return w, h


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


def _network(kind: str, arch: str, device: str, fast: bool):
    """The network of ``--network`` on ``device`` (compiled with bfloat16 trunk and heads with ``fast``)."""
    import torch

    from pointmap.model import ModelConfig, load_model

    if kind == "bundled":
        model = load_model("default", device=device)
    else:
        from pointmap.testing.refill import refilled_model

        spec: dict = {}  # the ModelConfig defaults are the released 512 DPT architecture
        if arch != "512-dpt":  # a training config: its model.arch
            import yaml

            with open(arch) as f:
                spec = (yaml.safe_load(f).get("model") or {}).get("arch") or {}
        model = refilled_model(ModelConfig.from_dict(spec), seed=0).to(device)
    if fast:
        model.optimize_for_inference(trunk_dtype=torch.bfloat16, head_dtype=torch.bfloat16)
    return model


def network_online(a: argparse.Namespace, n: int) -> dict:
    """Track ``n`` rendered frames of the synthetic video with a network; frames per second,
    keyframes, peak RSS and GPU memory, ATE against the exact poses."""
    import torch

    from pointmap.images import load_image_arrays
    from pointmap.online import OnlineConfig, Tracker, absolute_trajectory_error
    from pointmap.online.runner import NetworkPredictor
    from pointmap.testing.synthetic_video import SyntheticVideo

    dev = torch.device(a.device)
    model = _network(a.network, a.arch, a.device, a.fast)
    size = a.net_size or model.config.native_size
    video = SyntheticVideo(size=a.size, frames_per_loop=a.frames_per_loop)
    t0 = time.perf_counter()
    rendered = [(video.colours(k).numpy() * 255).round().astype(np.uint8) for k in range(n)]
    t_render = time.perf_counter() - t0
    cfg = OnlineConfig(window=a.window, loop=a.loop, keyframe_overlap=a.keyframe_overlap,
                       conf_threshold=model.recommended_conf_threshold)
    predictor = NetworkPredictor(model, dev, a.dtype)
    warm = Tracker(predictor, cfg)
    for k in range(min(a.warmup, n)):  # compiles (--fast), autotunes; not timed
        warm.add_frame(load_image_arrays([rendered[k]], size=size)[0])
    del warm
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    tracker = Tracker(predictor, cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    half = None
    for k in range(n):
        tracker.add_frame(load_image_arrays([rendered[k]], size=size)[0])
        if k + 1 == n // 2:
            half = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    P, G = tracker.poses(), video.poses(n)
    return {"network": a.network, "arch": a.arch if a.network == "refill" else "bundled", "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "fast": a.fast,
            "frames": n, "size": f"{a.size[0]}x{a.size[1]}", "network_size": size, "render_seconds": round(t_render, 1),
            "seconds": round(secs, 2), "fps": round(n / secs, 2), "cpu_seconds_per_frame": round(cpu / n, 3),
            "fps_second_half": round((n - n // 2) / (time.perf_counter() - half), 2) if half else None,
            "keyframes": len(tracker.keyframes), "untracked": int((~tracker.tracked()).sum()),
            "peak_rss_mib": _peak_rss_mib(),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None,
            "ate": absolute_trajectory_error(P, G), "extent": float(np.linalg.norm(np.ptp(G[:, :3, 3], axis=0))),
            "torch_threads": torch.get_num_threads()}


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
    p.add_argument("--size", type=_frame_size, default=(64, 48), help="frame size WxH (default 64x48)")
    p.add_argument("--checkpoints", type=int, nargs="*", default=[500],
                   help="also record the peak RSS after these many frames (same process)")
    p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # a child process's run
    net = p.add_argument_group("with a network")
    net.add_argument("--network", choices=["bundled", "refill"], default=None,
                     help="track rendered frames with the bundled model or a refilled architecture")
    net.add_argument("--arch", default="512-dpt",
                     help="--network refill: '512-dpt' (the released 512 DPT architecture) or a training "
                          "config YAML whose model.arch is used (needs pyyaml)")
    net.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    net.add_argument("--dtype", default=None, help="inference precision (default: float32 on CPU, bfloat16 on CUDA)")
    net.add_argument("--fast", action="store_true", help="compiled network, bfloat16 trunk and heads (CUDA)")
    net.add_argument("--net-size", type=int, choices=[224, 512], default=None,
                     help="network input size (default: the model's)")
    net.add_argument("--frames-per-loop", type=int, default=400, help="frames per turn around the room")
    net.add_argument("--window", type=int, default=3)
    net.add_argument("--loop", type=int, default=1)
    net.add_argument("--keyframe-overlap", type=float, default=0.85)
    net.add_argument("--warmup", type=int, default=3, help="frames tracked untimed first")
    a = p.parse_args()
    if a.network:
        for n in a.frames:
            print(json.dumps(network_online(a, n)), flush=True)
        return
    if a.one:
        print(json.dumps(online(a.one, a.refine_every, tuple(a.size), a.checkpoints)))
        return
    for n in a.frames:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--refine-every", str(a.refine_every),
                              "--size", "x".join(map(str, a.size)), "--checkpoints", *map(str, a.checkpoints)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        print(out.strip(), flush=True)
    if a.offline:
        print(json.dumps(offline(a.offline)), flush=True)


if __name__ == "__main__":
    main()
