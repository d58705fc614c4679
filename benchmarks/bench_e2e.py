"""End-to-end benchmark: image files to every default export, through ``pointmap reconstruct``.

N views of a ray-cast synthetic room with exact ground truth
(:func:`pointmap.testing.synthetic_pairs.synthetic_cameras`, cameras on an arc) are rendered on the
fly and written as image files into a work folder; then the command line's own entry point
(``pointmap.cli.main(["reconstruct", ...])``) runs the whole path a user runs: decode the files,
plan the scene graph, run the network (pair predictions reduced batch by batch into the
predictions store: the default; ``--reconstruct-args --store-full`` keeps the full pairs, the former
path), align, clean up and write every default export. Nothing outside the repository is read and no network is used.

Weights (``--weights``):

* ``refill``: the architecture of ``--arch`` (default ``configs/dust3r_512_dpt.yaml``, the released
  512 DPT network) with the parity refill weights (:func:`pointmap.testing.refill.refill_state_dict`,
  seed 0), saved as a checkpoint in the work folder: for timing (speed does not depend on the
  values; the accuracy keys are meaningless);
* ``bundled``: the bundled demonstration model on the same renders, for accuracy.

JSON keys: ``n_images``, ``n_pairs``, ``seconds_total`` (decode to the last export file),
``seconds_by_stage`` (``model_load``, ``decode``, ``graph``, ``inference`` (the network, without
store writes), ``reduction_store`` (reducing each batch on the device and writing the reductions,
or writing the full pair predictions, into the store),
``alignment``, ``export`` (clean-up and every export), and any other stage the run records),
``peak_gpu_gb`` (the largest per-stage peak of ``torch.cuda.max_memory_allocated``),
``peak_rss_gb`` (the largest host RSS sampled during the run's stages; ``peak_rss_gb_process``: the
process high-water mark, rendering included), ``store_gb`` (the store folder on disk),
``export_gb``, ``rot_err_med_deg`` / ``rot_err_max_deg`` (rotations of ``cameras.json`` after a
similarity alignment to the ground truth), ``centre_err_max_rel``, ``placed``, ``device``,
``variant`` and ``store_kind`` (``reductions`` or ``full``).

``--compare`` runs, in one process on the same renders, the store on in both, first
``--store-full`` (variant ``full``) then the default (variant ``default``) and writes both rows (a
list); the second row's ``peak_rss_gb_process`` is the process's high-water mark over both runs
(``peak_rss_gb``, sampled per stage, is its own).

Examples::

    # timing, on a GPU: 1000 images, and the 100-image baseline
    python benchmarks/bench_e2e.py --images 1000 --size 512x384 --graph logwin-5 --device cuda \\
        --weights refill --fast --out e2e1000.json
    python benchmarks/bench_e2e.py --images 100 --size 512x384 --graph logwin-5 --device cuda \\
        --weights refill --fast --out e2e100.json
    # accuracy on the same renders with the bundled model
    python benchmarks/bench_e2e.py --images 100 --size 512x384 --graph logwin-5 --device cuda \\
        --weights bundled --out e2e100_bundled.json
    # the former path (full pairs) and the default back to back, one call
    python benchmarks/bench_e2e.py --images 100 --size 512x384 --graph logwin-5 --device cuda \\
        --weights refill --fast --compare --out e2e100_compare.json
    # a CPU smoke run
    python benchmarks/bench_e2e.py --images 8 --size 224x168 --graph logwin-5 --device cpu \\
        --weights bundled --out e2e8.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_align import errors  # noqa: E402  (one definition of the accuracy figures)

import pointmap.cli  # noqa: E402
import pointmap.images  # noqa: E402
import pointmap.model  # noqa: E402
from pointmap.align.reduced import StreamedReductions  # noqa: E402
from pointmap.model import ModelConfig  # noqa: E402
from pointmap.model.checkpoint import save_model  # noqa: E402
from pointmap.pairs import auto_graph, make_pairs, needs_descriptors  # noqa: E402
from pointmap.stages import StageLog  # noqa: E402
from pointmap.store import STORE_DIRNAME, PredictionStore  # noqa: E402
from pointmap.testing.refill import refilled_model  # noqa: E402
from pointmap.testing.synthetic_pairs import synthetic_cameras, synthetic_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def render(n: int, size: tuple[int, int], folder: Path, ext: str, seed: int) -> SimpleNamespace:
    """Write ``n`` views of the synthetic room as ``view_00000.<ext>`` ...; the ground truth
    (poses, focals, extent) without the depth maps."""
    gt = synthetic_cameras(n, size, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)

    def write(k: int) -> None:
        rgb = (synthetic_image(gt, k).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        Image.fromarray(rgb).save(folder / f"view_{k:05d}.{ext}", **({"quality": 95} if ext == "jpg" else {}))

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(n)))
    return SimpleNamespace(poses=gt.poses, focals=gt.focals, extent=gt.extent)


def refill_checkpoint(arch_yaml: Path, path: Path) -> Path:
    """The ``model.arch`` of a training config with the parity refill weights (seed 0), saved as a
    pointmap checkpoint."""
    arch = (yaml.safe_load(arch_yaml.read_text()).get("model") or {}).get("arch") or {}
    return save_model(refilled_model(ModelConfig.from_dict(arch), seed=0), path)


class Probe:
    """Records what the run does without changing it: every :class:`StageLog` stage, and the
    seconds spent in the model loader, the image decoder and the store's writes."""

    def __init__(self) -> None:
        self.logs: list[StageLog] = []
        self.t0 = time.perf_counter()
        self.first_stage: float | None = None
        self.seconds = {"model_load": 0.0, "decode": 0.0, "reduction_store": 0.0}
        self._undo: list = []
        self._inside: set[str] = set()

    def _wrap(self, owner: object, name: str, bucket: str) -> None:
        if not hasattr(owner, name):
            return
        real = getattr(owner, name)
        inside = self._inside

        @functools.wraps(real)
        def timed(*a, **k):
            if bucket in inside:  # a store write inside a reduction's write: counted once
                return real(*a, **k)
            inside.add(bucket)
            t0 = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                self.seconds[bucket] += time.perf_counter() - t0
                inside.discard(bucket)

        setattr(owner, name, timed)
        self._undo.append((owner, name, real))

    @contextlib.contextmanager
    def active(self):
        real_stage = StageLog.stage
        probe = self

        @contextlib.contextmanager
        def stage(log: StageLog, name: str):
            if probe.first_stage is None:
                probe.first_stage = time.perf_counter()
            if all(log is not x for x in probe.logs):
                probe.logs.append(log)
            t0 = time.perf_counter()
            with real_stage(log, name):
                yield
            # as each stage ends (a run stopped by a time limit still tells where its time went)
            print(f"  stage {name}: {time.perf_counter() - t0:.1f} s (ended {time.perf_counter() - probe.t0:.1f} s "
                  "after the start)", flush=True)

        StageLog.stage = stage
        self._wrap(pointmap.model, "load_model", "model_load")
        self._wrap(pointmap.images, "load_images", "decode")
        self._wrap(PredictionStore, "write", "reduction_store")
        self._wrap(StreamedReductions, "write", "reduction_store")  # reduce on the device, then store
        try:
            yield self
        finally:
            StageLog.stage = real_stage
            for owner, name, real in reversed(self._undo):
                setattr(owner, name, real)

    def stages(self) -> dict[str, dict[str, float]]:
        """``{stage: {"seconds", "peak_rss_gb", "peak_gpu_gb"}}`` over every log (summed / max)."""
        out: dict[str, dict[str, float]] = {}
        for log in self.logs:
            for name, st in log.stages.items():
                cur = out.setdefault(name, {"seconds": 0.0, "peak_rss_gb": 0.0, "peak_gpu_gb": float("nan")})
                cur["seconds"] += st.seconds
                cur["peak_rss_gb"] = max(cur["peak_rss_gb"], st.peak_rss_gb)
                if st.peak_gpu_gb == st.peak_gpu_gb:
                    cur["peak_gpu_gb"] = st.peak_gpu_gb if cur["peak_gpu_gb"] != cur["peak_gpu_gb"] \
                        else max(cur["peak_gpu_gb"], st.peak_gpu_gb)
        return out


def by_stage(probe: Probe, stages: dict, t_start: float) -> dict[str, float]:
    """Seconds per stage (decode, graph, inference, store, alignment, export); the store's
    writes are taken out of ``inference``."""
    sec = {k: v["seconds"] for k, v in stages.items()}
    out = {"model_load": probe.seconds["model_load"]}
    if "decode" in sec:
        out["decode"] = sec.pop("decode")
    elif probe.seconds["decode"] > 0:
        out["decode"] = probe.seconds["decode"]
    else:  # the decoder was not seen: everything before the first stage but the model load
        out["decode"] = (probe.first_stage or t_start) - t_start - probe.seconds["model_load"]
    out["graph"] = sec.pop("graph", 0.0)
    store = probe.seconds["reduction_store"]
    out["inference"] = sec.pop("inference", 0.0) - store
    out["reduction_store"] = store + sec.pop("reduction", 0.0) + sec.pop("store", 0.0)
    out["alignment"] = sec.pop("alignment", 0.0)
    out["export"] = sec.pop("export", 0.0)
    out.update(sec)
    return out


def pose_errors(cameras_json: Path, gt: SimpleNamespace) -> dict[str, float]:
    """Accuracy of the placed cameras of ``cameras.json`` against the ground truth."""
    cams = json.loads(cameras_json.read_text())["images"]
    placed = {int(Path(c["name"]).stem.split("_")[-1]): c for c in cams if c["placed"]}  # view_00012.jpg
    keep = sorted(placed)
    if len(keep) < 3:
        return {"placed": len(keep)}
    poses = torch.tensor([placed[k]["cam2world"] for k in keep], dtype=torch.float64)
    # a focal the run could not state is null in cameras.json
    focals = torch.tensor([placed[k]["focal_original"] or float("nan") for k in keep], dtype=torch.float64)
    truth = SimpleNamespace(poses=gt.poses[keep].double(), focals=gt.focals[keep].double(), extent=gt.extent)
    e = errors(SimpleNamespace(poses=poses, focals=focals), truth)
    return {"placed": len(keep), "rot_err_med_deg": e["rot_err_med_deg"], "rot_err_max_deg": e["rot_err_max_deg"],
            "centre_err_max_rel": e["centre_err_max"], "focal_err_max_rel": e["focal_err_max"]}


def n_pairs(n: int, graph: str) -> int | None:
    if graph == "auto":
        graph = auto_graph(n)
    return None if needs_descriptors(graph) else len(make_pairs(n, graph, symmetrize=True))


def folder_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9 if path.is_dir() else 0.0


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, required=True)
    ap.add_argument("--size", default="512x384", help="WxH of the rendered image files")
    ap.add_argument("--graph", default="logwin-5")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--weights", choices=["refill", "bundled"], default="refill")
    ap.add_argument("--arch", default=str(REPO / "configs" / "dust3r_512_dpt.yaml"),
                    help="--weights refill: the training config whose model.arch is refilled")
    ap.add_argument("--net-size", type=int, choices=[224, 512], default=None,
                    help="the network's image size (reconstruct --size; default: the model's)")
    ap.add_argument("--fast", action="store_true", help="reconstruct --fast (bf16, compiled; CUDA)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--format", choices=["jpg", "png"], default="jpg", help="image file format")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reconstruct-args", nargs=argparse.REMAINDER, default=[],
                    help="further arguments for pointmap reconstruct (last on the line)")
    ap.add_argument("--compare", action="store_true",
                    help="two runs back to back in this process on the same renders, the store on in both: "
                         "--store-full (the full pairs and the full dense stage, the former path) and the "
                         "default (streamed reductions); --out then holds a list of both rows")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--out", required=True, help="JSON results file")
    args = ap.parse_args()
    W, H = (int(x) for x in args.size.split("x"))
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_e2e_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gt = render(args.images, (W, H), work / "images", args.format, args.seed)
    t_render = time.perf_counter() - t0
    weights = "default"
    if args.weights == "refill":
        weights = str(refill_checkpoint(Path(args.arch), work / "refill.safetensors"))
    if args.compare:  # the full pairs (the former path) first, then the default, in this process
        rows = [run_once(args, work, gt, weights, "full", ["--store", "on", "--store-full"]),
                run_once(args, work, gt, weights, "default", ["--store", "on"])]
    else:
        rows = [run_once(args, work, gt, weights, "run", [])]
    for row in rows:
        row["seconds_render"] = t_render
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(rows if args.compare else rows[0], indent=1))
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k not in ("stages", "meta")}, indent=1))


def run_once(args: argparse.Namespace, work: Path, gt: SimpleNamespace, weights: str, variant: str,
             store_args: list[str]) -> dict:
    """One ``pointmap reconstruct`` of the rendered images into ``work/out-<variant>``, measured."""
    out = work / f"out-{variant}"
    argv = ["reconstruct", str(work / "images"), "-o", str(out), "--overwrite", "--graph", args.graph,
            "--device", args.device, "--weights", weights, "--batch-size", str(args.batch_size), "-q",
            *(["--size", str(args.net_size)] if args.net_size else []), *(["--fast"] if args.fast else []),
            *store_args, *args.reconstruct_args]
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with Probe().active() as probe:
        t_start = time.perf_counter()
        rc = pointmap.cli.main(argv)
        total = time.perf_counter() - t_start
    if rc != 0:
        raise SystemExit(f"pointmap reconstruct failed (exit {rc}): {' '.join(argv)}")
    stages = probe.stages()
    gpu = [v["peak_gpu_gb"] for v in stages.values() if v["peak_gpu_gb"] == v["peak_gpu_gb"]]
    W, H = (int(x) for x in args.size.split("x"))
    return {
        "variant": variant, "n_images": args.images, "n_pairs": n_pairs(args.images, args.graph),
        "size": f"{W}x{H}", "graph": args.graph, "weights": args.weights, "fast": args.fast,
        "seconds_total": total, "seconds_by_stage": by_stage(probe, stages, t_start),
        "peak_gpu_gb": max(gpu) if gpu else None,
        "peak_rss_gb": max((v["peak_rss_gb"] for v in stages.values()), default=None),
        "peak_rss_gb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "store_gb": folder_gb(out / STORE_DIRNAME),
        "store_kind": "reductions" if (out / STORE_DIRNAME / "state-images.safetensors").is_file() else "full",
        "export_gb": folder_gb(out) - folder_gb(out / STORE_DIRNAME),
        **pose_errors(out / "cameras.json", gt),
        "device": device_name(args.device),
        "stages": stages,
        "meta": {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
                 "load_average": os.getloadavg(), "argv": argv[1:]},
    }


if __name__ == "__main__":
    main()
