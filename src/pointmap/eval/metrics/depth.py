"""Monocular depth metrics: AbsRel and delta < 1.25 after median scaling (NaN when nothing is valid)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...arrays import as_float64
from ...errors import InputError

__all__ = ["DepthMetrics", "abs_rel_map", "depth_metrics", "median_scale"]


@dataclass
class DepthMetrics:
    """Depth metrics of one image.

    Attributes:
        abs_rel: mean of ``|d_pred - d_gt| / d_gt`` over valid pixels (``nan`` if none).
        delta1: fraction of valid pixels with ``max(d_pred / d_gt, d_gt / d_pred) < 1.25``.
        n_valid: number of valid pixels.
        scale: the factor applied to the prediction (median ratio, or 1 without scaling).
    """

    abs_rel: float
    delta1: float
    n_valid: int
    scale: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _depth_valid(gt: np.ndarray, pred: np.ndarray, max_depth: float | None, min_depth: float) -> np.ndarray:
    if gt.shape != pred.shape:
        raise InputError(f"predicted depth {pred.shape} and GT depth {gt.shape} differ in shape")
    valid = np.isfinite(gt) & (gt > min_depth) & np.isfinite(pred)
    if max_depth is not None:
        valid &= gt <= max_depth
    return valid


def median_scale(pred, gt, valid) -> float:
    """``median(gt[valid]) / median(pred[valid])``; ``nan`` when undefined (no valid pixels or a
    non-positive predicted median)."""
    p, g = as_float64(pred)[valid], as_float64(gt)[valid]
    if p.size == 0:
        return float("nan")
    mp = float(np.median(p))
    return float(np.median(g)) / mp if mp > 0 else float("nan")


def abs_rel_map(
    pred, gt, median_scaling: bool = True, max_depth: float | None = None, min_depth: float = 0.0
) -> np.ndarray:
    """Per-pixel ``|s d_pred - d_gt| / d_gt`` ``(H, W)``, ``nan`` at invalid pixels.

    Valid pixels: ``gt > min_depth``, finite, ``gt <= max_depth`` when given, and finite
    prediction. ``s`` is the median ratio over valid pixels (or 1 without ``median_scaling``).
    """
    p, g = as_float64(pred), as_float64(gt)
    valid = _depth_valid(g, p, max_depth, min_depth)
    s = median_scale(p, g, valid) if median_scaling else 1.0
    out = np.full(g.shape, np.nan)
    out[valid] = np.abs(s * p[valid] - g[valid]) / g[valid]
    return out


def depth_metrics(
    pred,
    gt,
    median_scaling: bool = True,
    max_depth: float | None = None,
    min_depth: float = 0.0,
) -> DepthMetrics:
    """AbsRel and delta<1.25 of one predicted depth map ``(H, W)`` against GT ``(H, W)``.

    Valid pixels are those with finite GT ``> min_depth`` (0 marks missing GT), at most
    ``max_depth`` when given, and a finite prediction. With ``median_scaling`` the prediction is
    multiplied by ``median(gt) / median(pred)`` over valid pixels (the protocol for scale-free
    predictors). A predicted depth that is non-positive after scaling counts as a failure for
    ``delta1``. No valid pixel (or a non-positive predicted median) gives ``nan`` metrics and
    ``n_valid`` as counted; it does not raise.
    """
    p, g = as_float64(pred), as_float64(gt)
    valid = _depth_valid(g, p, max_depth, min_depth)
    n = int(valid.sum())
    s = median_scale(p, g, valid) if median_scaling else 1.0
    if n == 0 or not np.isfinite(s):
        return DepthMetrics(float("nan"), float("nan"), n, s)
    pv, gv = s * p[valid], g[valid]
    abs_rel = float(np.mean(np.abs(pv - gv) / gv))
    pos = pv > 0
    ratio = np.where(pos, np.maximum(pv / gv, gv / np.where(pos, pv, 1.0)), np.inf)
    return DepthMetrics(abs_rel, float(np.mean(ratio < 1.25)), n, float(s))
