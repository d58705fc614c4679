"""Helpers shared by the evaluation tasks and the ``pointmap eval`` command line.

* resolving the model argument and the network input size;
* reading a dataset and choosing a subset of its frames;
* mapping ground truth from original image pixels to network pixels (the network image is a
  resized + centre-cropped version of the original, see :class:`pointmap.images.ImageMeta`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError, PointmapError
from ..images import ImageMeta, LoadedImage, load_images
from ..inference import resolve_device
from ..model import DUSt3R, load_model
from .readers import Frame, SceneData, read_dataset

__all__ = [
    "ModelArg",
    "check_options",
    "gt_depth_at_network",
    "load_frames",
    "network_size",
    "package_results",
    "read_scene",
    "resolve_model",
    "select_indices",
    "try_plot",
]

ModelArg = str | os.PathLike | DUSt3R


def resolve_model(model: ModelArg, device: str | torch.device | None = None) -> DUSt3R:
    """A loaded network: ``model`` itself, or the checkpoint / bundled name it names
    (``"default"``: the bundled 224 model), in ``eval()`` mode on ``device``."""
    if isinstance(model, DUSt3R):
        return model.to(resolve_device(device)).eval()
    return load_model(model, device=resolve_device(device))


def network_size(model: DUSt3R, size: int | None = None) -> int:
    """The preprocessing size for ``model``: ``size`` when given, else
    :attr:`ModelConfig.native_size <pointmap.model.config.ModelConfig.native_size>`."""
    return int(size) if size is not None else model.config.native_size


def read_scene(dataset_path: str | os.PathLike | None, layout: str | None = None, **options: Any) -> SceneData:
    """Read a dataset scene (layout detected unless given); errors are :class:`DatasetError`."""
    if dataset_path is None:
        raise DatasetError("this task needs a dataset path")
    return read_dataset(Path(dataset_path), layout=layout, **options)


def select_indices(n: int, max_items: int | None = None, stride: int = 1, start: int = 0) -> list[int]:
    """Frame indices ``start, start + stride, ...`` (below ``n``), at most ``max_items`` of them.

    Raises:
        PointmapError: non-positive ``stride`` or ``max_items``, or ``start`` outside ``[0, n)``.
    """
    if stride < 1:
        raise PointmapError(f"stride must be >= 1, got {stride}")
    if max_items is not None and max_items < 1:
        raise PointmapError(f"the number of views/items must be >= 1, got {max_items}")
    if not 0 <= start < max(n, 1):
        raise PointmapError(f"start={start} is outside the {n} frames of the dataset")
    idx = list(range(start, n, stride))
    return idx if max_items is None else idx[:max_items]


def load_frames(frames: Sequence[Frame], size: int, patch_size: int = 16) -> list[LoadedImage]:
    """Load and preprocess the colour images of ``frames`` (reference preprocessing)."""
    return load_images([f.image_path for f in frames], size=size, patch_size=patch_size)


def _network_to_original(meta: ImageMeta) -> np.ndarray:
    """``(H, W, 2)`` original-image coordinates ``(u, v)`` of every network pixel centre."""
    W, H = meta.size
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    uv = torch.from_numpy(np.stack([u, v], -1))
    return meta.to_original_pixels(uv).numpy()


def gt_depth_at_network(depth: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Resample a GT depth map of the original image onto the network pixels (nearest).

    Each network pixel takes the GT value of the original pixel nearest to its centre (through the
    resize and crop recorded in ``meta``). A depth map whose size differs from the image's (e.g. a
    half-resolution sensor) is addressed proportionally.

    Args:
        depth: ``(H0, W0)`` GT depth in metres, 0 where invalid.
        meta: the preprocessing record of the image.

    Returns:
        ``(H, W)`` float32 depth at the network resolution (0 where invalid or outside).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise DatasetError(f"a depth map must be 2-D, got shape {depth.shape}")
    H0, W0 = depth.shape
    orig = _network_to_original(meta)
    sx = W0 / meta.original_size[0]
    sy = H0 / meta.original_size[1]
    u = np.rint((orig[..., 0] + 0.5) * sx - 0.5).astype(np.int64)
    v = np.rint((orig[..., 1] + 0.5) * sy - 0.5).astype(np.int64)
    inside = (u >= 0) & (u < W0) & (v >= 0) & (v < H0)
    out = np.zeros(orig.shape[:2], dtype=np.float32)
    out[inside] = depth[v[inside], u[inside]]
    out[~np.isfinite(out)] = 0.0
    return out


def try_plot(make: Callable[[], Any], plots: dict[str, Any], name: str) -> None:
    """Add ``make()`` to ``plots`` under ``name``; skipped when matplotlib is missing."""
    try:
        plots[name] = make()
    except PointmapError:
        pass


def check_options(task: str, fn: Callable, opts: Mapping[str, Any], shared: Sequence[str] = ()) -> None:
    """Raise :class:`PointmapError` naming any option that is neither a keyword of ``fn`` nor one
    of the ``shared`` option names."""
    import inspect

    params = inspect.signature(fn).parameters
    unknown = sorted(k for k in opts if k not in params and k not in shared)
    if unknown:
        allowed = sorted({k for k, p in params.items() if p.kind == p.KEYWORD_ONLY} | set(shared))
        raise PointmapError(f"unknown option(s) {', '.join(unknown)} for eval task '{task}'; "
                            f"accepted: {', '.join(allowed)}")


def package_results(
    task: str,
    dataset: str,
    ours: dict[str, Any],
    variants: Mapping[str, Mapping[str, Any]],
    baselines: Mapping[str, Mapping[str, Any]],
    info: dict[str, Any],
    per_item: list[dict[str, Any]],
    out_dir: str | os.PathLike | None,
    plots: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``(results, per_item)`` every task returns, and its report when ``out_dir`` is given.

    ``results`` = ``{"task", "dataset", "ours": {metric: value}, "variants": {name: {...}},
    "baselines": {name: {...}}, "info": {...}}``. The report (:func:`write_report`) has one column
    for ours, one per variant (``ours: <name>``) and one per baseline.
    """
    results = {"task": task, "dataset": dataset, "ours": dict(ours), "variants": {k: dict(v) for k, v in variants.items()},
               "baselines": {k: dict(v) for k, v in baselines.items()}, "info": info}
    if out_dir is not None:
        from .report import write_report

        columns = {**{f"ours: {k}": v for k, v in variants.items()}, **baselines}
        write_report(out_dir, f"{task}/{dataset}", {**ours, "info": info}, per_item, columns, plots)
    return results, per_item
