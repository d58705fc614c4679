"""Benchmark reconstruction at scale: predictions store, global alignment and every export.

Synthetic scenes with exact ground truth (:mod:`pointmap.testing.synthetic_pairs`: cameras on an arc in a
ray-cast room; per pair a random scale, smooth distortion, 1 % pixel noise and low-confidence
outlier blobs, as ``bench_align.py``), so no network is needed for the predictions. They are
written batch by batch to a :class:`pointmap.store.PredictionStore` and go through the same
alignment (:func:`pointmap.align.align_pairs`) and export (:func:`pointmap.export.export_scene`)
code as ``pointmap reconstruct``. Reports per stage seconds (``seconds_fabricate``: the part of the
``pairs`` stage spent making the synthetic predictions, which a network run replaces;
``seconds_pipeline``: the total without it and without the ``ground_truth`` and ``optimum``
stages), peak host RSS and peak GPU memory, the store's size on disk, and accuracy (median
rotation error, max centre error / extent, max focal error). Examples::

    nice -n 5 /usr/bin/time -f %M python benchmarks/bench_scale.py --images 300 --size 512x384 \\
        --graph logwin-5 --device cpu --out scale300.json
    # a shuffled capture through the retrieval graph (descriptors from the bundled network's
    # encoder on the rendered images), with its precision against ground-truth co-visibility
    python benchmarks/bench_scale.py --images 120 --size 512x384 --graph retrieval-10 --shuffle \\
        --device cpu --out retr.json

``--optimum`` also runs the coarse stage from the ground truth (the same samples and loss) and
reports that optimum's accuracy (``optimum_*`` keys): the error the loss itself has on these
predictions, which no optimiser can go below, to compare the run from the usual initialisation
with (its memory is left out of ``peak_rss_gb``; ``/usr/bin/time`` counts it).

``--stage export`` times the exports alone: the ground-truth scene (true cameras and depths, the
rendered colours, a confidence from the colours) written by :func:`pointmap.export.export_scene`
once per ``--workers`` value (``--repeat`` rounds, alternating the order; the best time of
each), the files compared byte for byte with the first run's (the ``export`` key: seconds per
worker count, ``identical``)::

    python benchmarks/bench_scale.py --stage export --images 200 --size 512x384 --workers 1 2 4 8 \
        --out export200.json

``--reductions`` keeps in the store only what alignment reads (:mod:`pointmap.align.reduced`:
coarse samples per pair, confidence and canonical depth per image), reduced batch by batch as the
predictions are fabricated, and aligns from them (the dense stage replaced by the canonical depth
corrected by the coarse depths); run it beside a run without it to compare::

    python benchmarks/bench_scale.py --images 300 --size 512x384 --graph logwin-5 --device cpu \
        --reductions --out scale300_red.json

``--graph`` takes what ``pointmap reconstruct --graph`` takes (``retrieval-K`` and
``retrieval-K+swin-M`` need the bundled model). GPU runs: ``--device cuda`` (alignment and the
fabrication of predictions on the GPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_align import errors  # noqa: E402  (one definition of the accuracy figures)

from pointmap.align import AlignConfig, align_pairs  # noqa: E402
from pointmap.align.reduced import StreamedReductions  # noqa: E402
from pointmap.export import FORMATS, export_scene  # noqa: E402
from pointmap.pairs import connected_components, make_pairs  # noqa: E402
from pointmap.scene import Scene  # noqa: E402
from pointmap.stages import StageLog  # noqa: E402
from pointmap.store import PredictionStore  # noqa: E402
from pointmap.testing.synthetic_pairs import (  # noqa: E402
    co_visibility,
    iter_synthetic_predictions,
    synthetic_cameras,
    synthetic_image,
)


def retrieval_pairs(gt, graph: str, W: int, H: int, device: str) -> tuple[list[tuple[int, int]], dict]:
    """Pairs of a retrieval graph from the bundled network's encoder on the rendered images, and
    the graph's precision against ground-truth co-visibility."""
    from pointmap.model import load_model
    from pointmap.retrieval import image_descriptors

    model = load_model("default", device=device)
    imgs = [synthetic_image(gt, k).permute(2, 0, 1) * 2 - 1 for k in range(len(gt.poses))]
    desc = image_descriptors(model, imgs, device=device)
    pairs = make_pairs(len(imgs), graph, descriptors=desc)
    und = {(min(i, j), max(i, j)) for i, j in pairs}
    cov = {p: co_visibility(gt, *p) for p in und}
    return pairs, {"retrieval_edges": len(und),
                   "retrieval_precision": sum(v >= 0.1 for v in cov.values()) / len(und),
                   "retrieval_covis_min": min(cov.values()),
                   "retrieval_covis_median": sorted(cov.values())[len(cov) // 2]}


def optimum_from_truth(preds, gt, cfg: AlignConfig, device: str) -> dict:
    """Coarse stage started at the ground truth (cameras, focals, depths; pair similarities
    registered onto the true points, scales pinned as the initialisation pins them), on the
    samples :func:`align_pairs` uses: where the loss's own minimum lies."""
    import math

    from pointmap.align.coarse import coarse_solve
    from pointmap.align.data import build_edge_data
    from pointmap.align.common import KnownCameras
    from pointmap.align.init import InitResult
    from pointmap.geometry.camera import depth_to_world
    from pointmap.geometry.registration import rigid_registration

    dev = torch.device(device)
    data = build_edge_data(preds, dev, cfg.coarse_stride, cfg.coarse_pixels_for(len(preds)),
                           cfg.conf_trf, None, cfg.chunk_pixels, cfg.storage_dtype, 0)
    known = KnownCameras.from_inputs(preds.image_shapes)
    n = preds.n_images
    idx = data.idx.cpu()
    # the true world points and depths of the coarse pixels, image by image
    X = torch.stack([depth_to_world(gt.depths[k], gt.intrinsics[k], gt.poses[k]).reshape(-1, 3)[idx[k]]
                     for k in range(n)]).float().to(dev)
    depth = gt.depths.reshape(n, -1).gather(1, idx).float().to(dev)
    P, f = gt.poses.clone().float().to(dev), gt.focals.float().to(dev)
    s, R, T = rigid_registration(data.pts_i, X[data.ei], data.conf_i)
    k = math.exp(math.log(cfg.base_scale) - float(s.log().mean()))
    P[:, :3, 3] *= k
    init = InitResult(P, f, depth * k, s * k, R, T * k, True)
    co = coarse_solve(data, init, known, cfg, progress=False)
    poses = torch.eye(4).repeat(n, 1, 1)
    poses[:, :3, :3], poses[:, :3, 3] = co.R.cpu(), co.C.cpu()
    acc = errors(SimpleNamespace(poses=poses, focals=co.fx.cpu()), gt)
    return {"optimum_rot_err_med_deg": acc["rot_err_med_deg"],
            "optimum_center_err_max_rel": acc["centre_err_max"],
            "optimum_focal_err_max_rel": acc["focal_err_max"], "optimum_iterations": co.iterations}


def truth_scene(gt) -> Scene:
    """The ground truth as a :class:`Scene`: true cameras and depths, rendered colours, a raw
    confidence ``1 + 4 x`` the mean colour, every rendered pixel valid."""
    n = len(gt.poses)
    imgs = [synthetic_image(gt, k) for k in range(n)]
    return Scene(imgs=imgs, poses=gt.poses, intrinsics=gt.intrinsics.float(), depths=list(gt.depths),
                 confidence=[1.0 + 4.0 * im.mean(-1) for im in imgs], masks=[d > 0 for d in gt.depths],
                 names=[f"view_{k:05d}" for k in range(n)])


def export_only(args: argparse.Namespace, W: int, H: int, work: Path) -> dict:
    """``--stage export``: every format of the ground-truth scene once per ``--workers`` value,
    timed, the files compared byte for byte with the first run's."""
    t0 = time.perf_counter()
    scene = truth_scene(synthetic_cameras(args.images, (W, H), seed=args.seed))
    row: dict = {"n_images": args.images, "size": f"{W}x{H}", "device": "cpu", "formats": args.formats,
                 "seconds_scene": time.perf_counter() - t0, "export": {}, "identical": True}
    first = None
    for rep in range(args.repeat):  # alternate the worker counts, so that a changing load hits all
        for w in args.workers if rep % 2 == 0 else args.workers[::-1]:
            out = work / f"export_w{w}"
            t0 = time.perf_counter()
            export_scene(scene, out, formats=args.formats, overwrite=True, cloud_max_points=args.max_points,
                         workers=w)
            dt = time.perf_counter() - t0
            row["export"][str(w)] = min(dt, row["export"].get(str(w), dt))
            digest = {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
                      for f in sorted(out.rglob("*")) if f.is_file()}
            first = first or digest
            row["identical"] &= digest == first
            shutil.rmtree(out)
    base = row["export"][str(args.workers[0])]
    row["speedup"] = {k: base / v for k, v in row["export"].items()}
    row["load_average"] = os.getloadavg()
    row["cpus"] = os.cpu_count()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, required=True)
    ap.add_argument("--size", default="512x384", help="WxH")
    ap.add_argument("--graph", default="logwin-5")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--work", default=None, help="folder for the store and the exports "
                    "(default: a temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the store and the exports")
    ap.add_argument("--shuffle", action="store_true", help="shuffle the image order (a photo collection)")
    ap.add_argument("--formats", nargs="+", default=list(FORMATS))
    ap.add_argument("--max-points", type=int, default=2_000_000, help="point budget of PLY/GLB")
    ap.add_argument("--batch", type=int, default=16, help="pairs per store shard")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", choices=["all", "export"], default="all",
                    help="export: time the exports of the ground-truth scene alone (--workers)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4],
                    help="--stage export: export threads to time, the first is the reference")
    ap.add_argument("--repeat", type=int, default=1, help="--stage export: rounds (best time kept)")
    ap.add_argument("--optimum", action="store_true",
                    help="also run the coarse stage from the ground truth (optimum_* keys)")
    ap.add_argument("--sparse-solver", default="auto", choices=["auto", "direct", "cg"],
                    help="AlignConfig.sparse_solver (auto: conjugate gradients on a GPU, SuperLU on the CPU)")
    ap.add_argument("--reductions", action="store_true",
                    help="store the streamed reductions (pointmap.align.reduced) instead of full pairs "
                    "and align from them (no --optimum)")
    args = ap.parse_args()
    W, H = (int(x) for x in args.size.split("x"))
    n = args.images
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.stage == "export":
        row = export_only(args, W, H, work)
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        Path(args.out).write_text(json.dumps(row, indent=1))
        print(json.dumps(row))
        return
    log = StageLog(args.device)
    t_all = time.perf_counter()
    extra: dict = {}

    with log.stage("ground_truth"):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed)).tolist() \
            if args.shuffle else None
        gt = synthetic_cameras(n, (W, H), seed=args.seed, order=order)
    with log.stage("graph"):
        if args.graph.startswith("retrieval"):
            pairs, extra = retrieval_pairs(gt, args.graph, W, H, args.device)
        else:
            pairs = make_pairs(n, args.graph, symmetrize=True)
        extra["connected"] = len(connected_components(pairs, n)) == 1
    store_dir = work / "store"
    if store_dir.exists():
        shutil.rmtree(store_dir)
    # the identity's fields in store_identity's layout (what made the predictions)
    ident = {"model": {"name": "bench_scale ground truth"},
             "preprocessing": {"images": n, "size": [W, H], "seed": args.seed}}
    if args.reductions:  # only what alignment reads, reduced batch by batch
        red = StreamedReductions.open(store_dir, ident, [(H, W)] * n, len(pairs), AlignConfig(),
                                      device=args.device)
        store = red.store
    else:
        store = PredictionStore.open(store_dir, ident)
    fabricate = 0.0  # seconds spent making the synthetic predictions (the network's stand-in)
    with log.stage("pairs"):
        batches = iter_synthetic_predictions(gt, pairs, batch=args.batch, seed=args.seed, device=args.device)
        while True:
            t0 = time.perf_counter()
            item = next(batches, None)
            fabricate += time.perf_counter() - t0
            if item is None:
                break
            (red if args.reductions else store).write(*item)
        if args.reductions:
            red.save()
    store_bytes = store.nbytes()
    with log.stage("alignment"):
        if args.reductions:
            res = red.align(pairs, AlignConfig(sparse_solver=args.sparse_solver), device=args.device)
        else:
            preds = store.predictions(pairs, n_images=n)
            res = align_pairs(preds, config=AlignConfig(sparse_solver=args.sparse_solver), device=args.device,
                              progress=False)
    scene = res.scene
    scene.names = [f"view_{k:05d}" for k in range(n)]
    acc = errors(scene, gt)
    with log.stage("export"):
        paths = export_scene(scene, work / "export", formats=args.formats, overwrite=True,
                             cloud_max_points=args.max_points)
    if args.optimum and not args.reductions:
        with log.stage("optimum"):
            extra.update(optimum_from_truth(preds, gt, AlignConfig(), args.device))
    export_bytes = sum(f.stat().st_size for f in (work / "export").rglob("*") if f.is_file())
    total = time.perf_counter() - t_all
    row = {
        "n_images": n, "n_pairs": len(pairs), "size": f"{W}x{H}", "graph": args.graph,
        "device": args.device, "shuffled": args.shuffle, "reductions": args.reductions,
        "seconds_total": total, "seconds_fabricate": fabricate,
        "seconds_pipeline": total - fabricate - sum(log.stages[k].seconds for k in ("ground_truth", "optimum")
                                                    if k in log.stages),
        "peak_rss_gb": max(s.peak_rss_gb for k, s in log.stages.items() if k != "optimum"),
        "rot_err_med_deg": acc["rot_err_med_deg"], "rot_err_max_deg": acc["rot_err_max_deg"],
        "center_err_max_rel": acc["centre_err_max"], "focal_err_max_rel": acc["focal_err_max"],
        "placed": int(scene.placed.sum()),
        "store_gb": store_bytes / 1e9, "export_gb": export_bytes / 1e9,
        "stages": log.as_dict(), "align_timings": res.timings, "iterations": res.iterations,
        "exports": sorted(paths), **extra,
        "meta": {"torch": torch.__version__, "python": platform.python_version(),
                 "cpus": os.cpu_count(),
                 "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
    }
    store.close()
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(row, indent=1))
    print(json.dumps({k: v for k, v in row.items() if k not in ("stages", "meta")}))
    print(log.summary())


if __name__ == "__main__":
    main()
