"""Visual localization metrics: translation / rotation errors of camera poses and accuracies at
(metres, degrees) thresholds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import InputError
from .poses import as_poses, rotation_error_deg

__all__ = ["LOCALIZATION_THRESHOLDS", "SEVEN_SCENES_THRESHOLD", "localization_errors", "localization_metrics"]


LOCALIZATION_THRESHOLDS: tuple[tuple[float, float], ...] = ((0.1, 1.0), (0.25, 2.0), (0.5, 5.0), (5.0, 10.0))
"""``(metres, degrees)`` thresholds of the outdoor/indoor visual-localization benchmarks."""

SEVEN_SCENES_THRESHOLD: tuple[float, float] = (0.05, 5.0)
"""The 7-Scenes convention: a query is localized when within 5 cm and 5 degrees."""


def localization_errors(est_c2w, gt_c2w) -> tuple[np.ndarray, np.ndarray]:
    """Per-query camera-centre distance ``(N,)`` (input units, metres for metric GT) and rotation
    error ``(N,)`` in degrees. A query whose estimate contains a NaN (failed localization) gets
    ``inf`` for both."""
    est, gt = as_poses(est_c2w, "est_c2w"), as_poses(gt_c2w, "gt_c2w")
    if len(est) != len(gt):
        raise InputError(f"{len(est)} estimated poses for {len(gt)} GT poses")
    failed = ~np.isfinite(est[:, :3, :4]).all(axis=(1, 2))
    est = np.where(failed[:, None, None], gt, est)
    t = np.linalg.norm(est[:, :3, 3] - gt[:, :3, 3], axis=-1)
    r = rotation_error_deg(est[:, :3, :3], gt[:, :3, :3])
    t[failed] = np.inf
    r[failed] = np.inf
    return t, r


def localization_metrics(
    est_c2w,
    gt_c2w,
    thresholds: Sequence[tuple[float, float]] = LOCALIZATION_THRESHOLDS + (SEVEN_SCENES_THRESHOLD,),
) -> dict[str, float]:
    """Median errors and accuracies of localized queries.

    Keys: ``median_t_cm`` (centimetres), ``median_r_deg``, ``acc@<m>m_<deg>deg`` (fraction of
    queries with translation error ``< m`` metres **and** rotation error ``< deg``), ``n_queries``.
    GT must be metric. Failed queries (NaN poses) count as wrong; no query gives ``nan``.
    """
    t, r = localization_errors(est_c2w, gt_c2w)
    out: dict[str, float] = {
        "median_t_cm": float(np.median(t) * 100.0) if t.size else float("nan"),
        "median_r_deg": float(np.median(r)) if r.size else float("nan"),
    }
    for tm, rd in thresholds:
        out[f"acc@{tm:g}m_{rd:g}deg"] = float(np.mean((t < tm) & (r < rd))) if t.size else float("nan")
    out["n_queries"] = int(t.size)
    return out
