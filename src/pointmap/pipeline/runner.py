"""One function runs a :class:`~pointmap.pipeline.request.Request` end to end.

Check (before the model is loaded), load the model and the inputs, read the priors, open the
predictions store, infer, match (once), align, post-process and export. The command line, the
Python API and the web app all run requests through :func:`run_request`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..errors import InputError, PointmapError
from ..images import LoadedImage
from ..io_utils import OutputDir
from ..inference import resolve_device, resolve_dtype
from ..known_cameras import alignment_priors
from ..model import DUSt3R, load_model
from ..model.checkpoint import BUNDLED_MODELS
from ..store import STORE_DIRNAME, PredictionStore
from .core import ReconstructionResult, align_config, reconstruct_images
from .targets import StoreTarget, open_store, store_target
from .finishing import finish
from .inputs import has_video, load_inputs
from .preflight import preflight
from .request import Request

__all__ = ["run_request", "store_settings"]

STORE_AUTO_IMAGES = 20
"""``StorePolicy.mode="auto"`` keeps a predictions store above this many images."""



def run_request(
    request: Request,
    *,
    model: DUSt3R | None = None,
    images: list[LoadedImage] | None = None,
    announce: Callable[[str], None] | None = None,
    checked: OutputDir | None = None,
) -> ReconstructionResult | None:
    """Run ``request``: every refusal knowable beforehand comes before the model is loaded.

    Args:
        model: an already loaded network (default: ``request.model.weights`` is loaded).
        images: already loaded images (default: ``request.inputs`` are loaded).
        announce: called with lines worth telling the user (scene graph, resumed pairs, ...).
        checked: the output folder :func:`~pointmap.pipeline.preflight.preflight` returned for
            this request (the command line checks before importing torch); default: checked here.

    Returns:
        The :class:`~pointmap.pipeline.core.ReconstructionResult` (``scene`` post-processed as
        exported, ``aligned`` before it; ``matches`` when computed); ``None`` on ranks other
        than 0 of a distributed run.
    """
    t0 = time.perf_counter()
    rank, dev = _rank_and_device(request)
    out = checked if checked is not None else preflight(request, rank)
    net = model if model is not None else load_model(request.model.weights, device=dev)
    if request.model.fast:
        net.optimize_for_inference(trunk_dtype=torch.bfloat16, head_dtype=torch.bfloat16)
    size = request.model.size or net.config.native_size
    images = images if images is not None else load_inputs(request.inputs, size)
    want_db = "colmap-db" in request.export.formats
    if want_db and len(images) < 2:
        raise PointmapError("--export colmap-db needs two or more images (the database holds the "
                            "matches between images)")
    priors = alignment_priors(images, request.priors.cameras, request.priors.masks, names=request.inputs.names)
    if announce is not None and rank == 0:
        if model is None and request.model.weights in BUNDLED_MODELS:
            announce("using the bundled demonstration model (small, trained on synthetic scenes only; see "
                     "docs/results.md); for real photos pass --weights dust3r-512-dpt")
        announce(f"{len(images)} images at {size}px, model {request.model.weights}, device {dev}")
    t_load = time.perf_counter() - t0
    store = _store(request, net, images, size, dev, rank, announce)
    res = reconstruct_images(
        images, net, graph=request.graph, batch_size=request.model.batch_size, device=dev,
        dtype=request.model.dtype, align=align_config(net, request.align.dense, request.post.conf_threshold,
                                                    request.priors.shared_focal), align_method=request.align.method,
        sparse=request.align.sparse, progress=request.progress, distributed=request.distributed,
        store=store, video=has_video(request.inputs), announce=announce if rank == 0 else None,
        keep_descriptors=want_db, keep_matches=want_db, **priors)
    if request.distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    if res is None:  # not rank 0: its share of the pairs went to rank 0
        return None
    res.timings = {"load": t_load, **res.timings}
    res.aligned = res.scene
    with res.stages.stage("export"):
        res.scene, res.paths = finish(res.scene, request.post, request.export, out, matches=res.matches,
                                      progress=request.progress, device=dev)
    return res


def _rank_and_device(request: Request) -> tuple[int, torch.device]:
    if request.distributed:
        import torch.distributed as dist

        from ..distributed import init_from_env

        dev = init_from_env()
        return dist.get_rank(), dev
    dev = resolve_device(request.model.device)
    if request.model.fast and dev.type != "cuda":
        raise InputError("--fast needs a CUDA device (it compiles the network for the GPU)")
    return 0, dev


def _store(request: Request, net: DUSt3R, images: list[LoadedImage], size: int, dev: torch.device,
           rank: int, announce: Callable[[str], None] | None) -> PredictionStore | StoreTarget | None:
    """The predictions store the policy asks for, or ``None``: a :class:`StoreTarget` (reductions
    or full pairs, opened once the pairs are known); a distributed run's full-pairs store, opened
    here (its identity written by rank 0 only)."""
    policy = request.store
    folder = policy.folder or request.export.output
    if folder is None or policy.mode == "off" or (policy.mode == "auto" and len(images) <= STORE_AUTO_IMAGES
                                                  and not policy.full_pairs
                                                  and not (Path(folder) / STORE_DIRNAME).is_dir()):
        return None
    pre = store_settings(request, net, size, dev)
    if not request.distributed:
        return store_target(folder, net, request.model.weights, images, pre, replace=policy.replace,
                            full_pairs=policy.full_pairs)
    if rank != 0:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has created it
        return open_store(folder, net, request.model.weights, images, pre, rank=rank)
    store = open_store(folder, net, request.model.weights, images, pre, replace=policy.replace)
    if len(store) and announce is not None:
        announce(f"resuming: {len(store)} pair predictions already in {store.path}")
    import torch.distributed as dist

    dist.barrier()
    return store


def store_settings(request: Request, net: DUSt3R, size: int, dev: torch.device) -> dict:
    """The preprocessing settings a predictions store records for ``request`` (size, inference
    dtype, video fps; MASt3R's descriptors when they will be matched: sparse alignment, any
    ``--align`` but dense for a model with descriptors, or a COLMAP database)."""
    pre = {"size": size, "dtype": str(resolve_dtype(request.model.dtype, dev)).replace("torch.", ""),
           "fps": request.inputs.fps if has_video(request.inputs) else None}
    if net.config.desc_dim > 0 and (request.align.method != "dense" or "colmap-db" in request.export.formats):
        pre["descriptors"] = True
    return pre
