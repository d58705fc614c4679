"""Loaded images and a network to an aligned scene: scene graph, pair inference, matching, alignment.

The one implementation behind :func:`pointmap.reconstruct_images` and
:func:`pointmap.pipeline.run_request`.

With a predictions store given as a :class:`StoreTarget` (what ``pointmap reconstruct`` passes when
its store is on), dense alignment runs from the *streamed reductions* (:mod:`pointmap.align.reduced`):
each batch of pair predictions is reduced on the device as it leaves the network, the store keeps
only the reductions, and the full pairs are never held. The full pairs are kept instead (the store
holds them, as with a :class:`~pointmap.store.PredictionStore`) when the target asks for them
(``full_pairs``) or the run needs them (:func:`full_pairs_reason`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from ..align import AlignConfig, SparseConfig, global_align, pair_scene
from ..align.reduced import StreamedReductions
from ..errors import PointmapError
from ..images import LoadedImage
from ..inference import infer_pairs, resolve_device, resolve_dtype
from ..model import DUSt3R
from ..model.network import Encoded
from ..pairs import auto_graph, make_pairs, needs_descriptors, validate_pairs
from ..predictions import PairPredictions
from ..scene import Scene
from ..stages import StageLog
from ..retrieval import describe_and_encode, image_descriptors
from ..store import PredictionStore, read_image_descriptors
from .targets import StoreTarget, announce_store, descriptor_target, full_pairs_reason, open_target

__all__ = ["SPARSE_AUTO_PAIRS", "ReconstructionResult", "choose_align_method", "plan_pairs", "reconstruct_images"]

#: per unordered pair ``(i, j)``: matched pixels ``(xy_i (M, 2), xy_j (M, 2))`` at network resolution
Matches = dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ReconstructionResult:
    """A reconstruction and how it was made.

    Attributes:
        scene: the aligned scene (network resolution; ``scene.to_original()`` maps it back).
        images: the preprocessed images.
        predictions: the pairwise network outputs; ``None`` when the run aligned from the streamed
            reductions (``method`` ``"reduced"``: the full pairs were never kept).
        timings: seconds per stage (``load``, ``graph``, ``inference``, ``alignment``).
        pairs: the ordered pairs that were run.
        stages: seconds and peak memory per stage (:class:`~pointmap.stages.StageLog`).
        graph: the scene graph that was used (``auto`` resolved).
        method: the aligner that ran: ``"dense"``, ``"reduced"`` (dense alignment from the
            streamed reductions), ``"sparse"`` or ``"two-view"`` (closed form).
        matches: the pixel matches of every pair when they were computed (sparse alignment, a
            COLMAP database), else ``None``; later steps reuse them instead of matching again.
        aligned: the scene as aligned, before clean-up and sky masking (``scene`` is after them;
            set by :func:`~pointmap.pipeline.run_request`).
        paths: what the run exported (``{format: path}``; empty when nothing was written).
        conf_threshold: the raw-confidence threshold the run used (the model's recommendation
            when none was given).
    """

    scene: Scene
    images: list[LoadedImage]
    predictions: PairPredictions | None
    timings: dict[str, float] = field(default_factory=dict)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    stages: StageLog | None = None
    graph: str = ""
    method: str = ""
    matches: Matches | None = None
    aligned: Scene | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    conf_threshold: float = 3.0


def plan_pairs(
    images: Sequence[LoadedImage],
    model: DUSt3R,
    graph: str = "auto",
    *,
    video: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = False,
    descriptors: torch.Tensor | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The scene graph's name (``auto`` resolved, :func:`pointmap.pairs.auto_graph`) and its
    symmetrized ordered pairs. Retrieval graphs encode every image once (at the model's
    training size) for :func:`pointmap.retrieval.image_descriptors`, unless their raw
    ``descriptors`` ``(N, D)`` (``centre=False``) are given."""
    n = len(images)
    if graph == "auto":
        graph = auto_graph(n, video=video)
    desc = None
    if needs_descriptors(graph):
        from ..retrieval import centre_descriptors, image_descriptors

        desc = (image_descriptors(model, images, device=device, dtype=dtype, progress=progress)
                if descriptors is None else centre_descriptors(descriptors))
    return graph, make_pairs(n, graph, symmetrize=True, descriptors=desc)


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


def align_config(model: DUSt3R, align: AlignConfig | None = None, conf_threshold: float | None = None,
                 shared_focal: bool = False) -> AlignConfig:
    """``align`` (default settings when ``None``) with the run's raw-confidence threshold:
    ``conf_threshold``, else ``align``'s, else the model's recommendation (the one place the
    default is resolved); ``shared_focal`` turns the shared focal on."""
    if conf_threshold is None:
        conf_threshold = align.conf_threshold if align is not None else model.recommended_conf_threshold
    cfg = align or AlignConfig()
    return dataclasses.replace(cfg, conf_threshold=conf_threshold, shared_focal=cfg.shared_focal or shared_focal)


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
    sparse: SparseConfig | None = None,
    progress: bool = False,
    distributed: bool = False,
    known_poses: Mapping[int, torch.Tensor] | torch.Tensor | None = None,
    known_intrinsics: Mapping[int, torch.Tensor] | torch.Tensor | None = None,
    masks: Sequence[torch.Tensor | None] | None = None,
    store: PredictionStore | StoreTarget | StreamedReductions | None = None,
    video: bool = False,
    announce: Callable[[str], None] | None = None,
    keep_descriptors: bool = False,
    keep_matches: bool = False,
    encoded: Mapping[int, Encoded] | None = None,
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
    excluded from alignment and from ``scene.masks``, at every threshold) are passed to the
    aligner, per image index; :mod:`pointmap.known_cameras` reads them from files.
    ``align_method``: ``'dense'`` (:func:`global_align`), ``'sparse'``
    (:func:`pointmap.align.sparse.sparse_align` with ``sparse`` settings, on reciprocal matches
    of the descriptors, or of the 3D points for DUSt3R models; three or more images) or
    ``'auto'`` (:func:`choose_align_method`).
    With ``distributed``, pair inference is split over the ranks of the initialised process
    group (:mod:`pointmap.distributed`); rank 0 aligns and returns the result, other ranks
    return ``None``.

    ``keep_descriptors``: keep a MASt3R model's descriptors in ``predictions`` whatever the
    alignment (sparse alignment keeps them anyway), e.g. to match pixels afterwards. With a
    ``store`` the kept descriptors are written into it beside the points (open the store with
    ``preprocessing["descriptors"]`` saying so, so that a rerun that keeps them does not reuse
    a store made without them). ``keep_matches``: compute the pixel matches of every pair (once:
    sparse alignment uses the same) and return them in ``matches``. ``encoded``: encoder outputs
    already at hand, by image index (:func:`pointmap.retrieval.describe_and_encode`); inference
    does not encode those images again.

    With a ``store`` (:func:`open_store`), pair predictions are written to disk batch by batch
    and read back on demand (host memory does not grow with the number of pairs), and pairs
    already in the store are not run again: an interrupted run resumes. With a
    :class:`StoreTarget` (:func:`store_target`), dense alignment runs from the streamed
    reductions, which the store keeps instead of the pairs (``method`` ``"reduced"``, no
    ``predictions``), unless the target asks for the full pairs or :func:`full_pairs_reason`
    names why the run needs them (``announce`` is told). An open
    :class:`~pointmap.align.reduced.StreamedReductions` (``pointmap extend`` of a folder whose
    store keeps reductions) is used as it is: its pairs are not run again.
    """
    images = list(images)
    if not images:
        raise PointmapError("no images to reconstruct")
    dev = resolve_device(device)
    single = len(images) == 1
    work = [images[0], images[0]] if single else images  # one image: both views of a pair
    priors = {"known_poses": _per_work(known_poses, single), "known_intrinsics": _per_work(known_intrinsics, single),
              "masks": None if masks is None else (list(masks) * 2 if single else list(masks))}
    log = StageLog(dev)
    keep = None if single else descriptor_target(store, pairs)
    for_graph = pairs is None and not single and needs_descriptors(
        auto_graph(len(work), video=video) if graph == "auto" else graph)
    raw, fresh, enc = _descriptors(model, work, keep, for_graph, log, dtype, progress, distributed)
    encoded = None if distributed or single else {**(encoded or {}), **(enc or {})}
    with log.stage("graph"):
        if pairs is None:
            graph, pairs = plan_pairs(work, model, graph, video=video, device=dev, dtype=dtype,
                                      progress=progress, descriptors=raw)
        else:
            graph, pairs = "given pairs", validate_pairs(pairs, len(work))
    method = choose_align_method(align_method, model.config.desc_dim > 0, len(pairs))
    if announce is not None:
        announce(f"scene graph {graph}: {len(pairs)} ordered pairs of {len(images)} images")
    cfg = align_config(model, align)
    reduced = None
    if isinstance(store, StreamedReductions):
        store, reduced = None, store
    elif isinstance(store, StoreTarget):
        why = "asked for" if store.full_pairs else full_pairs_reason(
            method, len(work), pairs, priors, model, keep_descriptors or keep_matches, distributed)
        store, reduced = open_target(store, why, work, pairs, graph, cfg, dev)
        announce_store(announce, store, reduced, why, pairs)
    if fresh is not None and keep is not None:
        (store if store is not None else reduced.store).write_image_descriptors(
            [r["digest"] for r in keep[1]["images"]], fresh)
    if reduced is not None:
        return _reconstruct_reduced(reduced, model, images, work, pairs, graph, cfg, log, batch_size,
                                    dtype, progress, priors["masks"], announce, encoded)
    # the dense alignment uses points and confidences only: MASt3R's descriptors (8x the memory
    # or disk of the points) are kept only for matching (sparse alignment, a COLMAP database)
    with log.stage("inference"):
        preds = _infer(model, work, pairs, batch_size, dev, dtype, progress, store, distributed,
                       descriptors=method == "sparse" or keep_descriptors, encoded=encoded)
    del encoded
    if preds is None:
        return None
    sp = sparse or SparseConfig()
    matches = None
    if keep_matches or (method == "sparse" and len(work) > 2):
        from ..align import sparse as sparse_module

        with log.stage("matching"):  # descriptors (MASt3R) or 3D points; once per run
            matches = sparse_module.pair_matches(preds, sp.subsample, device=dev)
    with log.stage("alignment"):
        scene, ran = _align(preds, work, method, cfg, sp, matches, dev, progress, priors)
        if model.config.metric:  # keep a metric network's metres (alignment fixes its own scale)
            from ..align.metric import to_metric

            scene = to_metric(scene, preds)
    scene = _label(scene.first(1) if single else scene, images, priors["masks"])
    return _result(scene, images, preds, pairs, log, graph, ran, matches, cfg, announce)


def _result(scene: Scene, images: list[LoadedImage], preds: PairPredictions | None, pairs, log: StageLog,
            graph: str, ran: str, matches: Matches | None, cfg: AlignConfig,
            announce: Callable[[str], None] | None) -> ReconstructionResult:
    """The result, once the images left unplaced are announced."""
    left = [scene.names[k] for k in range(len(scene)) if not bool(scene.placed[k])]
    listed = ", ".join(left[:20]) + (f" and {len(left) - 20} more" if len(left) > 20 else "")
    if left and len(left) == len(scene):  # nothing to export: say so before any file is written
        raise PointmapError(f"alignment placed none of the {len(scene)} images (their predictions give "
                            f"no usable geometry: {listed}); nothing was exported")
    if left and announce is not None:
        announce(f"{len(left)} of {len(scene)} images could not be placed (no pair links them to "
                 f"the largest connected group, or alignment failed for them): {listed}")
    timings = {k: v.seconds for k, v in log.stages.items()}
    return ReconstructionResult(scene, images, preds, timings, list(pairs), stages=log, graph=graph,
                                method=ran, matches=matches, conf_threshold=cfg.conf_threshold)


def _reconstruct_reduced(reduced, model: DUSt3R, images: list[LoadedImage], work: list[LoadedImage], pairs,
                         graph: str, cfg: AlignConfig, log: StageLog, batch_size: int, dtype, progress: bool,
                         masks, announce, encoded=None) -> ReconstructionResult:
    """Infer the pairs the reductions store lacks, reducing each batch on the device as it
    leaves the network (nothing else is kept), then align from the reductions."""
    dev = log.device
    todo = reduced.todo(pairs)
    with log.stage("inference"):
        if todo:
            infer_pairs(model, work, todo, batch_size=batch_size, device=dev, dtype=resolve_dtype(dtype, dev),
                        progress=progress, descriptors=False, reduce=reduced.write, keep=False, encoded=encoded)
    del encoded
    with log.stage("reduction"):  # the per-image state, durable (a rerun resumes from here)
        reduced.save()
    with log.stage("alignment"):
        res = reduced.align(pairs, cfg, dev, imgs=[im.rgb for im in work], masks=masks, progress=progress)
    scene = _label(res.scene, images, masks)
    return _result(scene, images, None, pairs, log, graph, "reduced", None, cfg, announce)


def _infer(model, work, pairs, batch_size, dev, dtype, progress, store, distributed, descriptors, encoded=None):
    kwargs = dict(batch_size=batch_size, device=dev, dtype=resolve_dtype(dtype, dev), progress=progress,
                  store=store, descriptors=descriptors)
    if distributed:
        from ..distributed import infer_pairs_distributed

        return infer_pairs_distributed(model, work, pairs, **kwargs)
    return infer_pairs(model, work, pairs, encoded=encoded, **kwargs)


def _descriptors(model: DUSt3R, work: list[LoadedImage], keep, for_graph: bool, log: StageLog, dtype,
                 progress: bool, distributed: bool):
    """``(raw, fresh, encoded)``: the images' raw retrieval descriptors when the store keeps them
    (``keep``: for a later extend) or the scene graph needs them (``for_graph``), else ``None``;
    those computed now and to be written into the store (``fresh``); and the encoder outputs
    of the images encoded for them at the shape inference runs them at, which inference then
    takes instead of encoding those images again (not with ``distributed`` inference)."""
    if keep is None and not for_graph:
        return None, None, None
    with log.stage("descriptors"):
        raw = None if keep is None else read_image_descriptors(keep[0], [r["digest"] for r in keep[1]["images"]],
                                                               keep[1])
        if raw is not None:
            return raw, None, None
        kw = dict(device=log.device, dtype=dtype, progress=progress)
        raw, encoded = ((image_descriptors(model, work, centre=False, **kw), None) if distributed
                        else describe_and_encode(model, work, **kw))
    return raw, None if keep is None else raw, encoded


def _align(preds: PairPredictions, work: list[LoadedImage], method: str, cfg: AlignConfig, sp: SparseConfig,
           matches: Matches | None, dev: torch.device, progress: bool, priors: dict) -> tuple[Scene, str]:
    """The aligned scene and the name of the aligner that made it."""
    rgb = [im.rgb for im in work]
    constrained = any(v is not None for v in priors.values())
    if method == "sparse" and len(work) > 2:
        from ..align.sparse import sparse_align

        return sparse_align(preds, matches, rgb, config=cfg, sparse=sp, **priors), "sparse"
    if len(work) == 2 and not constrained and not cfg.shared_focal:
        return pair_scene(preds, rgb, conf_threshold=cfg.conf_threshold, pnp_seed=cfg.pnp_seed), "two-view"
    return global_align(preds, rgb, config=cfg, device=dev, progress=progress, **priors), "dense"


def _label(scene: Scene, images: list[LoadedImage], masks: list | None) -> Scene:
    """``scene`` with the images' names and metas, and the user masks it keeps at every threshold."""
    scene.names = [Path(im.meta.path).name if im.meta.path else f"image_{k:04d}" for k, im in enumerate(images)]
    scene.metas = [im.meta for im in images]
    if masks is not None:
        scene.user_masks = [None if m is None else m.bool() for m in masks[:len(images)]]
    return scene


def _per_work(value, single: bool):
    """Known cameras of a single image apply to both copies of it."""
    if value is None or not single:
        return value
    if isinstance(value, Mapping):
        return {i: v for k, v in value.items() if int(k) == 0 for i in (0, 1)}
    return torch.cat([torch.as_tensor(value)[:1]] * 2)
