"""Keeping a metric network's scale: the factor that brings an aligned scene back to metres."""

from __future__ import annotations

import torch

from ..predictions import PairPredictions
from ..scene import Scene

__all__ = ["metric_scale_factor", "to_metric"]


def metric_scale_factor(scene: Scene, preds: PairPredictions, conf_threshold: float | None = None) -> float:
    """The factor ``s`` such that ``s * scene`` has the scale of the network's predictions.

    For every pair ``(i, j)`` and image ``i`` placed in ``scene``: the median, over pixels
    confident in both (``conf_1 > conf_threshold`` and ``scene.masks[i]``, or all pixels when
    none is), of the predicted z-depth ``pts3d_1[..., 2]`` (metres for a metric network) divided
    by the scene's depth ``scene.depths[i]``; ``s`` is the median over pairs. 1.0 when no pair
    gives a ratio.
    """
    thr = scene.conf_threshold if conf_threshold is None else conf_threshold
    ratios = []
    for k, (i, _) in enumerate(preds.pairs):
        if not bool(scene.placed[i]):
            continue
        z = preds.pts3d_1[k][..., 2].float()
        d = scene.depths[i].float()
        if z.shape != d.shape:
            continue
        ok = (preds.conf_1[k] > thr) & scene.masks[i] & (d > 0) & (z > 0) & torch.isfinite(z)
        if not bool(ok.any()):
            ok = (d > 0) & (z > 0) & torch.isfinite(z)
        if bool(ok.any()):
            ratios.append(float((z[ok] / d[ok]).median()))
    return float(torch.tensor(ratios).median()) if ratios else 1.0


def to_metric(scene: Scene, preds: PairPredictions) -> Scene:
    """``scene`` rescaled to the predictions' scale, its ``units`` set to ``"metres"``."""
    return scene.rescaled(metric_scale_factor(scene, preds), units="metres")
