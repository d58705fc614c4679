"""The ``pointmap`` command line.

The module is long because it holds the parser of every subcommand with its argument checks (run
before anything heavy is imported) next to the thin handlers that call the library.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import warnings
from typing import Callable, NoReturn, Sequence

from .errors import InputError, PointmapError

log = logging.getLogger("pointmap")

__all__ = ["main", "run", "build_parser", "conf_threshold", "positive_int", "non_negative_int", "positive_float",
           "finite_float", "request_from_args"]


def _cmd_convert(args: argparse.Namespace) -> int:
    from .io_utils import check_output_file

    check_output_file(args.output, overwrite=args.overwrite, option="--overwrite",
                      inputs=[args.input] if os.path.exists(args.input) else [])
    import torch

    from .model.checkpoint import load_model, save_model, save_reference_pth

    model = load_model(args.input)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    if args.output.endswith((".pth", ".pt")):
        save_reference_pth(model.to(dtype), args.output)
    else:
        save_model(model, args.output, dtype=dtype)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output} ({n / 1e6:.1f} M parameters, {args.dtype})")
    return 0


def _load_inputs(inputs: list[str], size: int, fps: float, skip_bad: bool):
    """The images of ``inputs`` (files, folders, videos): :func:`pointmap.pipeline.inputs.load_inputs`."""
    from .pipeline.inputs import load_inputs
    from .pipeline.request import Inputs

    return load_inputs(Inputs(list(inputs), fps=fps, skip_bad=skip_bad), size)


def request_from_args(args: argparse.Namespace):
    """The :class:`~pointmap.pipeline.Request` that ``reconstruct`` / ``pair`` arguments ask for
    (imports no torch unless ``--iterations`` or ``--solver`` need an alignment config)."""
    from .pipeline import (Alignment, ExportSpec, Inputs, ModelSpec, PostProcess, Priors, Request,
                           StorePolicy)

    dense = {k: v for k, v in (("niter", args.iterations), ("solver", args.solver)) if v is not None}
    dense_cfg = None
    if dense:
        from .align.config import AlignConfig

        dense_cfg = AlignConfig(**dense)
    return Request(
        inputs=Inputs(list(args.inputs), fps=args.fps or 1.0, skip_bad=args.skip_bad,
                      max_pixels=getattr(args, "max_pixels", None)),
        model=ModelSpec(weights=args.weights, device=args.device, dtype=args.dtype, fast=args.fast,
                        size=args.size, batch_size=args.batch_size),
        graph=args.graph, store=StorePolicy(mode=getattr(args, "store", "off"), replace=args.overwrite,
                                           full_pairs=getattr(args, "store_full", False)),
        align=Alignment(method=args.align, dense=dense_cfg),
        priors=Priors(cameras=args.cameras, masks=args.masks, shared_focal=args.shared_focal),
        post=PostProcess(conf_threshold=args.conf_threshold, clean=args.clean, mask_sky=args.mask_sky),
        export=ExportSpec(output=args.output, formats=tuple(args.export or EXPORT_FORMATS), overwrite=args.overwrite,
                          mesh=args.mesh, max_points=args.max_points or None),
        distributed=getattr(args, "distributed", False), progress=not args.quiet,
    )


def _check_online(args: argparse.Namespace) -> None:
    """Refuse, one line each, what ``reconstruct --online`` cannot do, or an online option
    without ``--online`` (before anything heavy is imported)."""
    given = [flag for dest, flag in ONLINE_OPTIONS.items() if getattr(args, dest) != args.online_defaults[dest]]
    if not args.online:
        if given:
            raise InputError(f"{given[0]} applies only to --online (following a video frame by frame)")
        return
    if len(args.inputs) != 1:
        raise InputError(f"--online follows one video file or folder of frames; got {len(args.inputs)} inputs")
    for dest, flag in OFFLINE_OPTIONS.items():
        if getattr(args, dest) != args.online_defaults[dest]:
            raise InputError(f"{flag} does not apply to --online (it follows the frames with keyframes and "
                             "PnP, without a scene graph or global alignment)")
    bad = [f for f in args.export or () if f not in ONLINE_EXPORT_FORMATS]
    if bad:
        raise InputError(f"--export {bad[0]} is not written by --online; it writes {', '.join(ONLINE_EXPORT_FORMATS)}")


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    import time

    if hasattr(args, "online_defaults"):  # reconstruct (pair has no --online)
        _check_online(args)
    if getattr(args, "online", False):
        args.source = args.inputs[0]
        return _cmd_online(args)
    t0 = time.perf_counter()
    request = request_from_args(args)
    from .pipeline.preflight import preflight

    out = None if request.distributed else preflight(request)  # before torch is imported
    from .pipeline.report import run_report
    from .pipeline.runner import run_request

    res = run_request(request, announce=lambda line: print(line, file=sys.stderr), checked=out)
    if res is None:  # not rank 0 of a distributed run: its share of the pairs went to rank 0
        return 0
    lines, warns = run_report(res, time.perf_counter() - t0)
    for text in warns:
        log.warning(text)
    print("\n".join(lines))
    return 0


def _cmd_pair(args: argparse.Namespace) -> int:
    args.inputs = [args.image_a, args.image_b]
    return _cmd_reconstruct(args)


def _cmd_match(args: argparse.Namespace) -> int:
    from .io_utils import OutputDir

    out = OutputDir(args.output, overwrite=args.overwrite, inputs=[args.image_a, args.image_b],
                    option="--overwrite")
    import numpy as np
    import torch

    from .images import load_images
    from .inference import infer_pairs, resolve_device
    from .matching import draw_matches, match_pair
    from .model import load_model

    dev = resolve_device(args.device)
    model = load_model(args.weights, device=dev)
    size = args.size or model.config.native_size
    imgs = load_images([args.image_a], size=size) + load_images([args.image_b], size=size)
    preds = infer_pairs(model, imgs, [(0, 1)], device=dev, progress=False)
    use = args.use
    if use == "auto":
        use = "desc" if preds.has_descriptors else "pts3d"
    xy1, xy2 = match_pair(preds, 0, subsample=args.subsample, use=use,
                          conf_threshold=args.conf_threshold, device=dev)
    c1 = (preds.desc_conf_1 if use == "desc" else preds.conf_1)[0]
    c2 = (preds.desc_conf_2 if use == "desc" else preds.conf_2)[0]
    conf = torch.minimum(c1[xy1[:, 1], xy1[:, 0]], c2[xy2[:, 1], xy2[:, 0]])
    with out.writing() as tmp:
        with open(tmp / "matches.npz", "wb") as f:
            np.savez(
                f, xy1=xy1.numpy(), xy2=xy2.numpy(), conf=conf.numpy(),
                xy1_original=imgs[0].meta.to_original_pixels(xy1.double()).numpy(),
                xy2_original=imgs[1].meta.to_original_pixels(xy2.double()).numpy(),
                image_a=str(args.image_a), image_b=str(args.image_b), features=use,
            )
        to8 = lambda im: (im.rgb.numpy() * 255).round().astype(np.uint8)  # noqa: E731
        draw_matches(to8(imgs[0]), to8(imgs[1]), xy1, xy2, tmp / "matches.png")
    print(f"{len(xy1)} matches ({use}) -> {args.output}/matches.npz, matches.png")
    return 0


def _cmd_localize(args: argparse.Namespace) -> int:
    from .io_utils import check_output_file

    check_output_file(args.output, overwrite=args.overwrite, option="--overwrite", inputs=args.queries)
    from .localization import localize, write_poses

    poses, lmap = localize(args.folder, args.queries, model=args.weights, k=args.k, size=args.size,
                           device=args.device, conf_threshold=args.conf_threshold,
                           min_inliers=args.min_inliers,
                           min_confidence=args.min_confidence, progress=not args.quiet)
    write_poses(args.output, poses, lmap)
    missed = [p for p in poses if not p.placed]
    print(f"placed {len(poses) - len(missed)}/{len(poses)} queries in {args.folder} ({len(lmap)} map images) "
          f"-> {args.output}")
    for p in missed:
        print(f"  not placed: {p.name} ({p.inliers} inliers of {p.n_matches} matches; it may show nothing "
              "the map holds)")
    return 0


def _cmd_online(args: argparse.Namespace) -> int:
    from .online import OnlineConfig
    from .online.runner import EXPORT_FORMATS, online_reconstruct

    cfg = OnlineConfig(window=args.window, keyframe_overlap=args.keyframe_overlap, refine_every=args.refine_every)
    res = online_reconstruct(args.source, args.output, weights=args.weights, size=args.size, device=args.device,
                             dtype=args.dtype, fast=args.fast, fps=args.fps, max_frames=args.max_frames,
                             overwrite=args.overwrite, config=cfg, conf_threshold=args.conf_threshold,
                             formats=tuple(args.export or EXPORT_FORMATS), progress=not args.quiet)
    print(f"{len(res.names)} frames ({int(res.tracked.sum())} tracked, {len(res.keyframes)} keyframes) in "
          f"{res.seconds:.1f} s ({res.fps:.2f} frames/s) -> {args.output}/trajectory_tum.txt")
    return 0


def _cmd_extend(args: argparse.Namespace) -> int:
    import time

    t0 = time.perf_counter()
    from .pipeline import ExportSpec, Inputs, ModelSpec, PostProcess, Request, StorePolicy
    from .pipeline.extend import read_reconstruction, run_extend
    from .pipeline.report import run_report

    old = read_reconstruction(args.folder)
    request = Request(
        inputs=Inputs(list(args.images)), model=ModelSpec(weights=args.weights, device=args.device, size=args.size),
        graph=args.graph, store=StorePolicy(mode="on"),
        post=PostProcess(conf_threshold=args.conf_threshold),
        export=ExportSpec(output=args.folder, formats=tuple(args.export or old.formats), overwrite=True),
        progress=not args.quiet)
    res, n_run = run_extend(request, freeze=args.freeze, k=args.k, announce=lambda line: print(line, file=sys.stderr))
    lines, warns = run_report(res, time.perf_counter() - t0)
    for text in warns:
        log.warning(text)
    print(f"added {len(args.images)} input(s) to {args.folder}: {len(res.scene)} images, {n_run} pairs run")
    print("\n".join(lines))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train.trainer import main_train

    res = main_train(args.config, args.overrides, max_minutes=args.max_minutes)
    print(f"training {res.status}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .io_utils import OutputDir

    out = OutputDir(args.out, overwrite=args.overwrite, option="--overwrite",
                    inputs=[args.dataset] if args.task.strip().lower() != "synthetic" else [])
    from .eval.tasks import run_eval

    with out.writing() as tmp:
        run_eval(args.task, args.dataset, tmp, model=args.weights, layout=args.layout,
                 device=args.device)
    print(f"report written to {args.out}")
    return 0


def _cmd_synth_preview(args: argparse.Namespace) -> int:
    from .io_utils import OutputDir
    from .train.preview import render_preview, write_preview

    out = OutputDir(args.out, overwrite=args.overwrite, option="--overwrite")  # checked before rendering
    cap = render_preview(args.engine, args.n, seed=args.seed, size=(args.width, args.height), layout=args.layout,
                         bank=args.bank)
    root = write_preview(cap, out, args.engine)
    print(f"{args.n} views of a {cap.layout} scene written to {root}")
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    from .app import launch

    launch(host=args.host, port=args.port, model=args.weights, device=args.device,
           max_images=args.max_images, max_upload_mb=args.max_upload_mb, share=args.share)
    return 0


# ---------------------------------------------------------------------------------------------
# The parser. Building it and checking arguments imports nothing heavy (no torch, no numpy), so
# ``pointmap --help`` and argument errors answer at once; each command imports what it needs when
# it runs. To add a command: write ``_add_<name>_args(p)`` and one line in ``build_parser``.

EXPORT_FORMATS = ("glb", "ply", "colmap", "transforms", "depth", "cameras")
"""Formats ``--export`` writes by default (the same as :data:`pointmap.export.FORMATS`; a test keeps
them equal, this copy keeps the parser free of the export modules' imports)."""

MATCH_EXPORT_FORMATS = ("colmap-db",)
"""Formats ``--export`` also accepts, written only when named: they need the pixel matches of the
pairs (:data:`pointmap.export.MATCH_FORMATS`)."""

ONLINE_EXPORT_FORMATS = ("glb", "ply", "cameras")
"""Formats ``--online`` writes (:data:`pointmap.online.runner.EXPORT_FORMATS`; a test keeps them equal)."""

ONLINE_OPTIONS = {"max_frames": "--max-frames", "window": "--window", "keyframe_overlap": "--keyframe-overlap",
                  "refine_every": "--refine-every"}
"""``reconstruct`` options that apply only with ``--online`` (dest: flag)."""

OFFLINE_OPTIONS = {"graph": "--graph", "store": "--store", "distributed": "--distributed", "batch_size": "--batch-size",
                   "iterations": "--iterations", "solver": "--solver", "align": "--align", "skip_bad": "--skip-bad",
                   "max_pixels": "--max-pixels", "cameras": "--cameras", "masks": "--masks",
                   "shared_focal": "--shared-focal", "clean": "--no-clean", "mask_sky": "--mask-sky",
                   "mesh": "--mesh", "max_points": "--max-points"}
"""``reconstruct`` options that ``--online`` refuses (dest: flag): they belong to the scene graph,
global alignment or exports it does not make."""

SOLVERS = ("gn", "adam")
"""``--solver`` choices (:class:`pointmap.align.AlignConfig`)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(kind: type, text: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return int(value)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return int(value)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return float(value)


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan`` and ``inf`` are refused)."""
    return float(_number(float, text))


def conf_threshold(text: str) -> float:
    """argparse type: a raw-confidence threshold, above 1 (raw confidence ``1 + exp(x)`` is always
    above 1), or 0 for every point (:func:`pointmap.pipeline.request.check_conf_threshold`)."""
    from .pipeline.request import check_conf_threshold

    value = float(_number(float, text))
    try:
        return check_conf_threshold(value)
    except PointmapError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="default",
                   help="'default' (the bundled demonstration model, trained on synthetic scenes only), "
                        "a released model by short name (dust3r-512-dpt, dust3r-512-linear, "
                        "dust3r-224-linear: from $POINTMAP_WEIGHTS or the hub), a checkpoint file or "
                        "folder, or a hub id")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available)")


def _add_scene_args(p: argparse.ArgumentParser) -> None:
    """Options shared by ``reconstruct`` and ``pair``."""
    p.add_argument("-o", "--output", required=True,
                   help="output folder (created; never an input folder or one holding an input)")
    _add_model_args(p)
    p.add_argument("--size", type=int, choices=[224, 512], default=None, help="image size (default: the model's)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="inference precision (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--fast", action="store_true",
                   help="GPU only: compiled network, bfloat16 trunk and heads (about 2x faster than the "
                        "default bfloat16 autocast; compiling takes a few seconds per image shape)")
    p.add_argument("--conf-threshold", type=conf_threshold, default=None,
                   help="keep points whose raw confidence (1 + exp(x), > 1) exceeds this; 0 keeps every "
                        "point (default: the model's recommendation; 3 for the released DUSt3R models)")
    p.add_argument("--export", nargs="+", default=None,
                   choices=[*EXPORT_FORMATS, *MATCH_EXPORT_FORMATS],
                   help="formats to write (default: all but colmap-db; with --online: glb ply cameras). colmap-db: the pairs' pixel "
                        "matches as a COLMAP database (keypoints, matches, two-view geometries verified "
                        "by RANSAC) in colmap/database.db and the aligned cameras as an initial model in "
                        "colmap/init, for COLMAP's or GLOMAP's mappers (needs pycolmap: the colmap extra)")
    p.add_argument("--mesh", action="store_true", help="GLB as a mesh instead of a point cloud")
    p.add_argument("--max-points", type=non_negative_int, default=2_000_000,
                   help="most points in the PLY and GLB clouds, sampled from every image in proportion "
                        "to its valid points (default 2000000; 0 keeps every point)")
    p.add_argument("--no-clean", dest="clean", action="store_false", help="skip the occlusion clean-up")
    p.add_argument("--mask-sky", action="store_true", help="drop sky pixels")
    p.add_argument("--cameras", default=None, metavar="FILE_OR_DIR",
                   help="known intrinsics and/or poses of some or all images, matched by file name: a "
                        "pointmap cameras.json, a nerfstudio transforms.json or a COLMAP model (text or "
                        "binary; a folder such as sparse/0); they are kept fixed during alignment")
    p.add_argument("--shared-focal", action="store_true",
                   help="one focal length for all images whose focal is not known")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="folder of per-image masks named like the images (photo.jpg: photo.png or "
                        "photo_mask.png; non-zero = keep): masked-out pixels are left out of the "
                        "alignment and of every export")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in the output folder (only the files "
                        "pointmap wrote there; other files are never touched)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_reconstruct_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files, folders, or video files")
    p.add_argument("--graph", default="auto",
                   help="scene graph: auto (default: complete up to 20 images, logwin-5 for video frames, "
                        "retrieval-10 for larger photo sets), complete, swin-K, logwin-K, oneref-K, "
                        "retrieval-K (each image with its K most similar by the network's encoder), "
                        "retrieval-K+swin-M")
    p.add_argument("--store", default="auto", choices=["auto", "on", "off"],
                   help="write pair predictions to OUTPUT/.pointmap-store (float16, read back on demand; "
                        "an interrupted run rerun with the same arguments resumes from it). auto: on "
                        "above 20 images or when the output folder already has a store. With a store, "
                        "dense alignment runs from streamed reductions of each pair (the store keeps "
                        "about a tenth of the full pairs; same cameras, depth maps from a per-image "
                        "canonical depth: docs/benchmarks.md); without one (auto up to 20 images) the "
                        "full dense stage runs")
    p.add_argument("--store-full", action="store_true",
                   help="keep every pair's full predictions in the store and run the full dense stage "
                        "(needed by `pointmap extend --export colmap-db`; --store auto then keeps a store at any number of "
                        "images; sparse alignment, --cameras, --export colmap-db and --distributed keep "
                        "them anyway)")
    p.add_argument("--distributed", action="store_true",
                   help="split pair inference over torchrun processes (one per GPU); rank 0 aligns and writes")
    _add_scene_args(p)
    p.add_argument("--batch-size", type=positive_int, default=16, help="pairs per network batch")
    p.add_argument("--iterations", "--niter", dest="iterations", type=non_negative_int, default=None,
                   help="alignment iterations (default: the solver's)")
    p.add_argument("--solver", default=None, choices=SOLVERS,
                   help="alignment solver: gn (robust Levenberg-Marquardt, default) or adam (the "
                        "reference's first-order schedule)")
    p.add_argument("--align", default="dense", choices=["dense", "sparse", "auto"],
                   help="alignment: dense (default; every pixel of every pair), sparse (from pixel "
                        "matches: poses, focals and depth scales; for many images) or auto (sparse "
                        "for MASt3R models or from 1000 ordered pairs on)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images with a warning")
    p.add_argument("--fps", type=positive_float, default=None,
                   help="frames per second sampled from videos (default 1.0; with --online every frame)")
    p.add_argument("--max-pixels", type=positive_int, default=None,
                   help="largest photo, in pixels (width x height), that is decoded (default: the "
                        "image loader's memory-based bound); larger photos are refused")
    p.add_argument("--online", action="store_true",
                   help="follow one video or folder of frames frame by frame with bounded memory (the same "
                        "as 'pointmap online'): writes trajectory_tum.txt, frames.json and the keyframes' "
                        "glb, ply and cameras.json")
    _add_online_options(p)
    p.set_defaults(online_defaults={d: p.get_default(d) for d in (*ONLINE_OPTIONS, *OFFLINE_OPTIONS)})


def _add_pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image_a")
    p.add_argument("image_b")
    _add_scene_args(p)
    # what reconstruct's options mean for two images (they are not offered: they do not apply)
    p.set_defaults(graph="complete", distributed=False, batch_size=16, iterations=None, solver=None,
                   skip_bad=False, fps=1.0, align="dense", max_pixels=None)


def _add_match_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("-o", "--output", required=True, help="output folder (matches.npz, matches.png)")
    _add_model_args(p)
    p.add_argument("--size", type=int, choices=[224, 512], default=None, help="image size (default: the model's)")
    p.add_argument("--subsample", type=positive_int, default=8, help="seed grid step in pixels (1: every pixel)")
    p.add_argument("--use", choices=["auto", "desc", "pts3d"], default="auto",
                   help="match descriptors (MASt3R) or 3D points (DUSt3R); auto: descriptors when the "
                        "model has them")
    p.add_argument("--conf-threshold", type=conf_threshold, default=None,
                   help="only pixels whose raw confidence (> 1) exceeds this may match (default: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in the output folder")


def _add_localize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="output folder of a reconstruction (cameras.json, depth/, images/; only read)")
    p.add_argument("queries", nargs="+", help="image files or folders to place in it")
    p.add_argument("-o", "--output", default="poses.json",
                   help="JSON file of each query's pose, intrinsics, inliers and confidence (default poses.json)")
    _add_model_args(p)
    p.add_argument("--size", type=int, choices=[224, 512], default=None,
                   help="image size (default: the model's; the one the reconstruction was made at)")
    p.add_argument("-k", type=positive_int, default=5, help="map images paired with each query (default 5)")
    p.add_argument("--conf-threshold", type=finite_float, default=None,
                   help="raw confidence above which predicted points are matched (default: the model's)")
    p.add_argument("--min-inliers", type=positive_int, default=30,
                   help="PnP inliers a query needs to be placed (default 30)")
    p.add_argument("--min-confidence", type=positive_float, default=0.5,
                   help="fraction of its 2D-3D matches that must be PnP inliers for a query to be placed "
                        "(default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_online_options(p: argparse.ArgumentParser) -> None:
    """The options of online tracking, shared by ``online`` and ``reconstruct --online``."""
    p.add_argument("--max-frames", type=positive_int, default=None, help="online: stop after this many frames")
    p.add_argument("--window", type=positive_int, default=3,
                   help="online: recent keyframes each frame is paired with (default 3)")
    p.add_argument("--keyframe-overlap", type=finite_float, default=0.85,
                   help="online: a frame becomes a keyframe when it sees less than this fraction of its "
                        "keyframes' points (default 0.85)")
    p.add_argument("--refine-every", type=non_negative_int, default=0,
                   help="online: globally align the keyframes after this many new ones and at the end "
                        "(default 0: never)")


def _add_online_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a video file or a folder of frames (taken in name order)")
    p.add_argument("-o", "--output", required=True, help="output folder: trajectory_tum.txt, frames.json and "
                   "the keyframes' glb, ply and cameras.json")
    _add_model_args(p)
    p.add_argument("--size", type=int, choices=[224, 512], default=None, help="image size (default: the model's)")
    p.add_argument("--fps", type=positive_float, default=None,
                   help="frames per second taken from a video (default: every frame); a folder's "
                        "frames are 1/fps seconds apart in the trajectory (default 30)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="inference precision (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--fast", action="store_true", help="GPU only: compiled network, bfloat16 trunk and heads")
    p.add_argument("--conf-threshold", type=conf_threshold, default=None,
                   help="raw confidence (1 + exp(x), > 1) of the points used (default: the model's recommendation)")
    p.add_argument("--export", nargs="+", default=None, choices=ONLINE_EXPORT_FORMATS,
                   help="formats of the keyframes to write (default: all three)")
    _add_online_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in the "
                   "output folder (only the files pointmap wrote there)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_extend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="output folder of a reconstruction made with a predictions store (--store on, "
                                  "with or without --store-full; its exports are rewritten)")
    p.add_argument("images", nargs="+", help="image files or folders to add")
    _add_model_args(p)
    p.add_argument("--size", type=int, choices=[224, 512], default=None,
                   help="image size (default: the model's; the one the reconstruction was made at)")
    p.add_argument("--freeze", action="store_true",
                   help="keep the old cameras and depth maps exactly; align only the new images")
    p.add_argument("-k", type=positive_int, default=10,
                   help="old images each new image is paired with, the most similar first (default 10)")
    p.add_argument("--graph", default="auto", help="scene graph of the new images among themselves (as reconstruct's)")
    p.add_argument("--conf-threshold", type=conf_threshold, default=None,
                   help="keep points whose raw confidence (> 1) exceeds this (default: the model's)")
    p.add_argument("--export", nargs="+", default=None, choices=[*EXPORT_FORMATS, *MATCH_EXPORT_FORMATS],
                   help="formats to write (default: those the folder holds)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="checkpoint file, hub-layout folder, hub id or bundled model name")
    p.add_argument("output", help="output .safetensors (pointmap format) or .pth (reference layout)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    p.add_argument("--max-minutes", type=positive_float, default=None, help="time budget (checkpoint and stop)")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task")
    p.add_argument("dataset", help="dataset folder")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the report of an earlier run in --out (only the files pointmap wrote)")
    _add_model_args(p)
    p.add_argument("--layout", default=None, help="dataset layout (default: detected)")


SYNTH_ENGINES = ("procedural", "realistic")  # pointmap.train.preview.ENGINES (kept free of its imports)
SYNTH_LAYOUTS = ("room", "turntable", "street", "clutter")


def _add_synth_preview_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=SYNTH_ENGINES, default="procedural",
                   help="procedural: analytic primitives; realistic: photo-textured models from an asset bank")
    p.add_argument("--n", type=positive_int, default=4, help="views of the scene (default 4)")
    p.add_argument("-o", "--out", required=True, help="output folder (images/, depth/, cameras.json)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--width", type=positive_int, default=512)
    p.add_argument("--height", type=positive_int, default=384)
    p.add_argument("--layout", choices=SYNTH_LAYOUTS, default=None, help="scene layout (default: random)")
    p.add_argument("--bank", default=None,
                   help="asset bank folder of the realistic engine (default: $POINTMAP_ASSET_BANK)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def _add_app_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this computer only)")
    p.add_argument("--port", type=positive_int, default=None)
    _add_model_args(p)
    p.add_argument("--max-images", type=positive_int, default=32)
    p.add_argument("--max-upload-mb", type=positive_float, default=50)
    p.add_argument("--share", action="store_true", help="public Gradio link (off by default)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command (imports nothing heavy)."""
    p = _Parser(prog="pointmap", description="Unposed photos to 3D with DUSt3R.")
    sub = p.add_subparsers(dest="command", required=True)
    commands = [
        ("convert", "convert a checkpoint to pointmap's safetensors format (or back to .pth)",
         _add_convert_args, _cmd_convert),
        ("reconstruct", "images, folders or a video -> 3D scene and exports", _add_reconstruct_args,
         _cmd_reconstruct),
        ("pair", "two images -> two-view scene and exports", _add_pair_args, _cmd_pair),
        ("match", "two images -> pixel matches (descriptors or 3D points) and a picture of them",
         _add_match_args, _cmd_match),
        ("localize", "new photos -> their poses in a reconstruction", _add_localize_args, _cmd_localize),
        ("online", "a video or folder of frames, followed frame by frame -> trajectory (= reconstruct --online)",
         _add_online_args, _cmd_online),
        ("extend", "add photos to a reconstruction (only pairs with a new photo run)", _add_extend_args, _cmd_extend),
        ("train", "train or fine-tune a model from a YAML config", _add_train_args, _cmd_train),
        ("eval", "evaluate on a dataset (pose, depth, localization, reconstruction)", _add_eval_args,
         _cmd_eval),
        ("synth-preview", "render N views of one synthetic training scene (images, depth, cameras)",
         _add_synth_preview_args, _cmd_synth_preview),
        ("app", "serve the web app on this computer (needs the 'app' extra)", _add_app_args, _cmd_app),
    ]
    for name, help_text, add_args, func in commands:
        c = sub.add_parser(name, help=help_text, description=help_text)
        add_args(c)
        c.set_defaults(func=func)
    return p


class _OneLineHandler(logging.Handler):
    """Log records as ``pointmap: warning: <message>``, one line each, on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())
            print(f"pointmap: {record.levelname.lower()}: {text}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _setup_logging() -> Callable[[], None]:
    """Log records of pointmap as one line each on stderr; returns what puts the logger back."""
    before = (list(log.handlers), log.level, log.propagate)
    if not any(isinstance(h, _OneLineHandler) for h in log.handlers):
        log.addHandler(_OneLineHandler())
    log.setLevel(logging.INFO)
    log.propagate = False

    def restore() -> None:
        log.handlers[:] = before[0]
        log.setLevel(before[1])
        log.propagate = before[2]

    return restore


def _warning_as_log(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: object = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the command line: one clean line, no source file or line, and
    never torch's advice to turn safe loading off."""
    text = " ".join(str(message).split())
    if "weights_only" in text:
        from .model.checkpoint import _without_unsafe_advice

        text = _without_unsafe_advice(text)
    if text:
        log.warning(text)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _stop_on_sigterm() -> Callable[[], None]:
    """``kill`` (SIGTERM) stops a run like Ctrl-C does, so its temporary output folder is removed
    and earlier results stay as they were. Returns what puts the earlier handler back."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None
    signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors print one line, no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    restore_logging = _setup_logging()
    shown = warnings.showwarning
    warnings.showwarning = _warning_as_log
    restore_signals = _stop_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except PointmapError as exc:
        print(f"pointmap: error: {_one_line(exc.cli_message or str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pointmap: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
        restore_signals()
        restore_logging()


def run() -> NoReturn:
    """The ``pointmap`` program: :func:`main`, then exit.

    The process ends right after, so the objects it holds are frozen out of the garbage collector
    first (``gc.freeze``): Python's teardown then skips collecting the module graph of torch (and
    the ``torch._dynamo`` that roma imports), which took 1 to 3 s after every command on a 2-core
    CPU. Files are all closed by then; exit handlers still run.
    """
    code = main()
    import gc

    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
