"""The public face of pointmap: from image files to a :class:`~pointmap.scene.Scene` in one call."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .align import AlignConfig, global_align, pair_scene
from .errors import PointmapError
from .images import LoadedImage, load_images
from .inference import infer_pairs, resolve_device, resolve_dtype
from .known_cameras import alignment_priors
from .model import DUSt3R, load_model
from .pairs import make_pairs, validate_pairs
from .predictions import PairPredictions
from .scene import Scene

__all__ = ["ReconstructionResult", "reconstruct", "reconstruct_images"]


@dataclass
class ReconstructionResult:
    """A reconstruction and how it was made.

    Attributes:
        scene: the aligned scene (network resolution; ``scene.to_original()`` maps it back).
        images: the preprocessed images.
        predictions: the pairwise network outputs.
        timings: seconds per stage (``load``, ``inference``, ``alignment``).
        pairs: the ordered pairs that were run.
    """

    scene: Scene
    images: list[LoadedImage]
    predictions: PairPredictions
    timings: dict[str, float] = field(default_factory=dict)
    pairs: list[tuple[int, int]] = field(default_factory=list)


def _duplicate_single(images: list[LoadedImage]) -> list[LoadedImage]:
    """One image: feed it as both views (the reference demo does the same)."""
    return [images[0], images[0]]


def reconstruct_images(
    images: Sequence[LoadedImage],
    model: DUSt3R,
    *,
    graph: str = "complete",
    pairs: Sequence[tuple[int, int]] | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    align: AlignConfig | None = None,
    progress: bool = False,
    distributed: bool = False,
    known_poses: Mapping[int, torch.Tensor] | torch.Tensor | None = None,
    known_intrinsics: Mapping[int, torch.Tensor] | torch.Tensor | None = None,
    masks: Sequence[torch.Tensor | None] | None = None,
) -> ReconstructionResult | None:
    """Run pair inference and global alignment on already loaded images.

    One image is reconstructed as a two-view scene of itself (monocular depth and focal);
    two images use the closed-form two-view scene (or :func:`global_align` when cameras or masks
    are given); more use :func:`global_align`.

    ``known_poses`` (camera-to-world ``(4, 4)``, OpenCV axes), ``known_intrinsics`` (``(3, 3)`` in
    **network** pixels) and ``masks`` (``(H, W)`` bool at network resolution; ``False`` pixels are
    excluded from alignment and from ``scene.masks``) are passed to :func:`global_align`, per image
    index; :mod:`pointmap.known_cameras` reads them from files.
    With ``distributed``, pair inference is split over the ranks of the initialised process
    group (:mod:`pointmap.distributed`); rank 0 aligns and returns the result, other ranks
    return ``None``.
    """
    images = list(images)
    if not images:
        raise PointmapError("no images to reconstruct")
    timings: dict[str, float] = {}
    dev = resolve_device(device)
    single = len(images) == 1
    work = _duplicate_single(images) if single else images
    priors = {"known_poses": _per_work(known_poses, single), "known_intrinsics": _per_work(known_intrinsics, single),
              "masks": None if masks is None else (list(masks) * 2 if single else list(masks))}
    constrained = any(v is not None for v in priors.values())
    if pairs is None:
        pairs = make_pairs(len(work), graph, symmetrize=True)
    else:
        pairs = validate_pairs(pairs, len(work))
    t = time.perf_counter()
    if distributed:
        from .distributed import infer_pairs_distributed

        preds = infer_pairs_distributed(model, work, pairs, batch_size=batch_size, device=dev,
                                        dtype=resolve_dtype(dtype, dev), progress=progress)
        if preds is None:
            return None
    else:
        # the dense alignment uses points and confidences only: MASt3R's descriptors (8x the
        # memory of the points) are not kept
        preds = infer_pairs(model, work, pairs, batch_size=batch_size, device=dev,
                            dtype=resolve_dtype(dtype, dev), progress=progress, descriptors=False)
    timings["inference"] = time.perf_counter() - t
    t = time.perf_counter()
    cfg = align or AlignConfig(conf_threshold=model.recommended_conf_threshold)
    rgb = [im.rgb for im in work]
    if len(work) == 2 and not constrained and not cfg.shared_focal:
        scene = pair_scene(preds, rgb, conf_threshold=cfg.conf_threshold, pnp_seed=cfg.pnp_seed)
    else:
        scene = global_align(preds, rgb, config=cfg, device=dev, progress=progress, **priors)
    if model.config.metric:  # keep a metric network's metres (alignment fixes its own scale)
        from .align.metric import to_metric

        scene = to_metric(scene, preds)
    timings["alignment"] = time.perf_counter() - t
    if single:
        scene = _first_only(scene)
    names = [Path(im.meta.path).name if im.meta.path else f"image_{k:04d}" for k, im in enumerate(images)]
    scene.names = names
    scene.metas = [im.meta for im in images]
    return ReconstructionResult(scene, images, preds, timings, list(pairs))


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
    graph: str = "complete",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    align: AlignConfig | None = None,
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
        graph: scene graph (``complete``, ``swin-K``, ``logwin-K``, ``oneref-K``).
        batch_size, device, dtype: see :func:`pointmap.infer_pairs`.
        align: alignment settings (:class:`pointmap.AlignConfig`).
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
                             dtype=dtype, align=align, progress=progress, **priors)
    res.timings = {"load": load_time, **res.timings}
    return res
