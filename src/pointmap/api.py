"""The public face of pointmap: from image files to a :class:`~pointmap.scene.Scene` in one call."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from .align import AlignConfig, global_align, pair_scene
from .errors import PointmapError
from .images import LoadedImage, load_images
from .inference import infer_pairs, resolve_device, resolve_dtype
from .known_cameras import alignment_priors
from .model import DUSt3R, load_model
from .pairs import auto_graph, make_pairs, needs_descriptors, validate_pairs
from .predictions import PairPredictions
from .scene import Scene
from .stages import StageLog
from .store import STORE_DIRNAME, PredictionStore, StoreMismatchError, store_identity

__all__ = ["ReconstructionResult", "open_store", "plan_pairs", "reconstruct", "reconstruct_images"]


@dataclass
class ReconstructionResult:
    """A reconstruction and how it was made.

    Attributes:
        scene: the aligned scene (network resolution; ``scene.to_original()`` maps it back).
        images: the preprocessed images.
        predictions: the pairwise network outputs.
        timings: seconds per stage (``load``, ``graph``, ``inference``, ``alignment``).
        pairs: the ordered pairs that were run.
        stages: seconds and peak memory per stage (:class:`~pointmap.stages.StageLog`).
        graph: the scene graph that was used (``auto`` resolved).
    """

    scene: Scene
    images: list[LoadedImage]
    predictions: PairPredictions
    timings: dict[str, float] = field(default_factory=dict)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    stages: StageLog | None = None
    graph: str = ""


def open_store(
    out_dir: str | os.PathLike,
    model: DUSt3R,
    model_name: str,
    images: Sequence[LoadedImage],
    preprocessing: dict,
    rank: int = 0,
    replace: bool = False,
) -> PredictionStore:
    """Create or reopen the predictions store of an output folder (``out_dir/.pointmap-store``).

    The store records the model, the images (each preprocessed image is digested) and the
    ``preprocessing`` settings; reopening it for another model, other images or other settings
    raises :class:`~pointmap.store.StoreMismatchError`. Ranks other than 0 open the store the
    first rank created. With ``replace``, a store of another run is removed (it is pointmap's own:
    it holds ``store.json``) and a new one started instead.
    """
    names = [im.meta.path or f"image_{k:04d}" for k, im in enumerate(images)]
    ident = store_identity(model_name, model, images, names, preprocessing)
    path = Path(out_dir) / STORE_DIRNAME
    try:
        return PredictionStore.open(path, ident, rank=rank, create=rank == 0)
    except StoreMismatchError:
        if not replace or rank != 0:
            raise
        PredictionStore.remove(path)
        return PredictionStore.open(path, ident, rank=rank)


def plan_pairs(
    images: Sequence[LoadedImage],
    model: DUSt3R,
    graph: str = "auto",
    *,
    video: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = False,
) -> tuple[str, list[tuple[int, int]]]:
    """The scene graph's name (``auto`` resolved, :func:`pointmap.pairs.auto_graph`) and its
    symmetrized ordered pairs. Retrieval graphs encode every image once (at the model's
    training size) for :func:`pointmap.retrieval.image_descriptors`."""
    n = len(images)
    if graph == "auto":
        graph = auto_graph(n, video=video)
    desc = None
    if needs_descriptors(graph):
        from .retrieval import image_descriptors

        desc = image_descriptors(model, images, device=device, dtype=dtype, progress=progress)
    return graph, make_pairs(n, graph, symmetrize=True, descriptors=desc)


def _duplicate_single(images: list[LoadedImage]) -> list[LoadedImage]:
    """One image: feed it as both views (the reference demo does the same)."""
    return [images[0], images[0]]


#: ``align_method='auto'`` aligns sparsely from this many ordered pairs on (dense alignment's
#: memory grows with pairs x pixels; at 512x384 about 1000 pairs is where it passes a few GB).
SPARSE_AUTO_PAIRS = 1000


def choose_align_method(method: str, has_descriptors: bool, n_pairs: int) -> str:
    """``'dense'`` or ``'sparse'`` for ``method`` (``'dense'``, ``'sparse'`` or ``'auto'``):
    auto is sparse when the model predicts descriptors (MASt3R) or when there are at least
    :data:`SPARSE_AUTO_PAIRS` ordered pairs, dense otherwise."""
    if method not in ("dense", "sparse", "auto"):
        raise PointmapError(f"align_method={method!r}: use 'dense', 'sparse' or 'auto'")
    if method == "auto":
        return "sparse" if has_descriptors or n_pairs >= SPARSE_AUTO_PAIRS else "dense"
    return method


def reconstruct_images(
    images: Sequence[LoadedImage],
    model: DUSt3R,
    *,
    graph: str = "auto",
    pairs: Sequence[tuple[int, int]] | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    align: AlignConfig | None = None,
    align_method: str = "dense",
    progress: bool = False,
    distributed: bool = False,
    known_poses: Mapping[int, torch.Tensor] | torch.Tensor | None = None,
    known_intrinsics: Mapping[int, torch.Tensor] | torch.Tensor | None = None,
    masks: Sequence[torch.Tensor | None] | None = None,
    store: PredictionStore | None = None,
    video: bool = False,
    announce: Callable[[str], None] | None = None,
    keep_descriptors: bool = False,
) -> ReconstructionResult | None:
    """Run pair inference and global alignment on already loaded images.

    The scene graph (:func:`plan_pairs`): ``graph`` (``auto`` by default: complete up to 20
    images, ``logwin-5`` for ``video`` frames, ``retrieval-10`` for larger photo sets) unless
    ``pairs`` are given; ``announce`` is called with a line naming it and its pair count before
    inference starts.

    One image is reconstructed as a two-view scene of itself (monocular depth and focal);
    two images use the closed-form two-view scene (or :func:`global_align` when cameras or masks
    are given); more use :func:`global_align`.

    ``known_poses`` (camera-to-world ``(4, 4)``, OpenCV axes), ``known_intrinsics`` (``(3, 3)`` in
    **network** pixels) and ``masks`` (``(H, W)`` bool at network resolution; ``False`` pixels are
    excluded from alignment and from ``scene.masks``) are passed to :func:`global_align`, per image
    index; :mod:`pointmap.known_cameras` reads them from files.
    ``align_method``: ``'dense'`` (:func:`global_align`), ``'sparse'``
    (:func:`pointmap.align.sparse.sparse_align` on reciprocal matches of the descriptors, or of the
    3D points for DUSt3R models; three or more images) or ``'auto'`` (:func:`choose_align_method`).
    With ``distributed``, pair inference is split over the ranks of the initialised process
    group (:mod:`pointmap.distributed`); rank 0 aligns and returns the result, other ranks
    return ``None``.

    ``keep_descriptors``: keep a MASt3R model's descriptors in ``predictions`` whatever the
    alignment (sparse alignment keeps them anyway), e.g. to match pixels afterwards. With a
    ``store`` the kept descriptors are written into it beside the points (open the store with
    ``preprocessing["descriptors"]`` saying so, so that a rerun that keeps them does not reuse
    a store made without them).

    With a ``store`` (:func:`open_store`), pair predictions are written to disk batch by batch
    and read back on demand (host memory does not grow with the number of pairs), and pairs
    already in the store are not run again: an interrupted run resumes.
    """
    images = list(images)
    if not images:
        raise PointmapError("no images to reconstruct")
    dev = resolve_device(device)
    single = len(images) == 1
    work = _duplicate_single(images) if single else images
    priors = {"known_poses": _per_work(known_poses, single), "known_intrinsics": _per_work(known_intrinsics, single),
              "masks": None if masks is None else (list(masks) * 2 if single else list(masks))}
    constrained = any(v is not None for v in priors.values())
    log = StageLog(dev)
    with log.stage("graph"):
        if pairs is None:
            graph, pairs = plan_pairs(work, model, graph, video=video, device=dev, dtype=dtype,
                                      progress=progress)
        else:
            graph, pairs = "given pairs", validate_pairs(pairs, len(work))
    method = choose_align_method(align_method, model.config.desc_dim > 0, len(pairs))
    if announce is not None:
        announce(f"scene graph {graph}: {len(pairs)} ordered pairs of {len(images)} images")
    # the dense alignment uses points and confidences only: MASt3R's descriptors (8x the memory
    # or disk of the points) are kept only for matching (sparse alignment, a COLMAP database)
    want_desc = method == "sparse" or keep_descriptors
    with log.stage("inference"):
        if distributed:
            from .distributed import infer_pairs_distributed

            preds = infer_pairs_distributed(model, work, pairs, batch_size=batch_size, device=dev,
                                            dtype=resolve_dtype(dtype, dev), progress=progress,
                                            store=store, descriptors=want_desc)
        else:
            preds = infer_pairs(model, work, pairs, batch_size=batch_size, device=dev,
                                dtype=resolve_dtype(dtype, dev), progress=progress, store=store,
                                descriptors=want_desc)
    if preds is None:
        return None
    with log.stage("alignment"):
        cfg = align or AlignConfig(conf_threshold=model.recommended_conf_threshold)
        rgb = [im.rgb for im in work]
        if method == "sparse" and len(work) > 2:
            from .align.sparse import sparse_align

            scene = sparse_align(preds, None, rgb, config=cfg, **priors)
        elif len(work) == 2 and not constrained and not cfg.shared_focal:
            scene = pair_scene(preds, rgb, conf_threshold=cfg.conf_threshold, pnp_seed=cfg.pnp_seed)
        else:
            scene = global_align(preds, rgb, config=cfg, device=dev, progress=progress, **priors)
        if model.config.metric:  # keep a metric network's metres (alignment fixes its own scale)
            from .align.metric import to_metric

            scene = to_metric(scene, preds)
    timings = {k: v.seconds for k, v in log.stages.items()}
    if single:
        scene = _first_only(scene)
    names = [Path(im.meta.path).name if im.meta.path else f"image_{k:04d}" for k, im in enumerate(images)]
    scene.names = names
    scene.metas = [im.meta for im in images]
    left = [names[k] for k in range(len(names)) if not bool(scene.placed[k])]
    if left and announce is not None:
        announce(f"{len(left)} of {len(names)} images could not be placed (no pair links them to "
                 f"the largest connected group, or alignment failed for them): {', '.join(left)}")
    res = ReconstructionResult(scene, images, preds, timings, list(pairs))
    res.stages = log
    res.graph = graph
    return res


def _per_work(value, single: bool):
    """Known cameras of a single image apply to both copies of it (see :func:`_duplicate_single`)."""
    if value is None or not single:
        return value
    if isinstance(value, Mapping):
        return {i: v for k, v in value.items() if int(k) == 0 for i in (0, 1)}
    return torch.cat([torch.as_tensor(value)[:1]] * 2)


def _first_only(scene: Scene) -> Scene:
    return Scene(
        imgs=scene.imgs[:1], poses=scene.poses[:1], intrinsics=scene.intrinsics[:1],
        depths=scene.depths[:1], confidence=scene.confidence[:1], masks=scene.masks[:1],
        conf_threshold=scene.conf_threshold, placed=scene.placed[:1], units=scene.units,
    )


def reconstruct(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    model: str | os.PathLike | DUSt3R = "default",
    size: int | None = None,
    graph: str = "auto",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    align: AlignConfig | None = None,
    align_method: str = "dense",
    skip_bad: bool = False,
    progress: bool = False,
    cameras: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
) -> ReconstructionResult:
    """Images (files or folders) to a reconstructed scene.

    Args:
        inputs: image files and/or folders.
        model: a loaded network, a checkpoint path / hub id, or ``"default"`` (the bundled model).
        size: preprocessing size (224 or 512); default: the model's training size.
        graph: scene graph (``auto``, ``complete``, ``swin-K``, ``logwin-K``, ``oneref-K``,
            ``retrieval-K``; :mod:`pointmap.pairs`).
        batch_size, device, dtype: see :func:`pointmap.infer_pairs`.
        align: alignment settings (:class:`pointmap.AlignConfig`).
        align_method: ``'dense'`` (default), ``'sparse'`` (from pixel matches, for many images)
            or ``'auto'``: sparse when the model has descriptors (MASt3R) or from
            :data:`SPARSE_AUTO_PAIRS` ordered pairs on (:func:`choose_align_method`).
        skip_bad: skip unreadable images with a warning instead of failing.
        progress: show progress bars.
        cameras: known intrinsics and/or poses of some or all images, matched by file name: a
            pointmap ``cameras.json``, a nerfstudio ``transforms.json`` or a COLMAP model (file or
            folder; see :mod:`pointmap.known_cameras`). ``align.shared_focal`` shares one focal
            among the images without a known one.
        masks: folder of per-image masks (same file name; non-zero = keep); masked-out pixels are
            excluded from alignment and from ``scene.masks`` (so from every export).
    """
    t = time.perf_counter()
    dev = resolve_device(device)
    net = model if isinstance(model, DUSt3R) else load_model(model, device=dev)
    if size is None:
        size = net.config.native_size
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    images: list[LoadedImage] = []
    for p in paths:
        images += load_images(p, size=size, skip_bad=skip_bad)
    priors = alignment_priors(images, cameras, masks)
    load_time = time.perf_counter() - t
    res = reconstruct_images(images, net, graph=graph, batch_size=batch_size, device=dev,
                             dtype=dtype, align=align, align_method=align_method,
                             progress=progress, **priors)
    res.timings = {"load": load_time, **res.timings}
    return res
