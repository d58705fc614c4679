"""Evaluation metrics: camera poses, depth, visual localization and 3D reconstruction.

All functions take numpy arrays or torch tensors (converted to float64 numpy) and return plain
Python floats / numpy arrays, so results serialise to JSON directly.

Conventions:

* poses are camera-to-world ``(N, 4, 4)`` (or ``(N, 3, 4)``) in OpenCV axes;
* angles are in **degrees**, distances in the units of the inputs (metres for metric GT);
* a metric that has nothing to average over (no pairs, no valid pixels, no points) is ``nan``,
  never an exception: the item is reported as missing rather than silently counted as 0.

Multi-view pose protocol (CO3Dv2 / RealEstate10K, as used by PoseDiffusion and DUSt3R): for every
unordered pair ``i < j`` of cameras, the relative pose ``T_ij = world2cam_j @ cam2world_i`` is
computed for the estimate and for the GT. The *relative rotation error* is the geodesic angle of
``R_ij_est^T R_ij_gt``; the *relative translation error* is the angle between the directions of
``t_ij_est`` and ``t_ij_gt``. Both are invariant to any similarity transform of either world, so
no alignment is needed. The protocol treats a translation direction and its opposite as the same
(``sign_invariant=True``, errors in ``[0, 90]``), like the reference PoseDiffusion code. ``RRA@tau``
/ ``RTA@tau`` are the fractions of pairs with error ``< tau``; ``mAA(30)`` is the mean over the
integer thresholds ``tau = 1..30`` of the fraction of pairs with ``max(rot_err, trans_err) < tau``
(``<= 30`` for the last one; it equals the histogram-cumsum formula of PoseDiffusion).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import roma
import torch
from scipy.spatial import cKDTree

from ..arrays import as_float64
from ..errors import InputError
from ..geometry.registration import rigid_registration

__all__ = [
    "Similarity",
    "rotation_error_deg",
    "direction_error_deg",
    "relative_pose_errors",
    "accuracy_at",
    "mean_average_accuracy",
    "multiview_pose_metrics",
    "two_view_pose_error",
    "two_view_pose_errors",
    "pose_auc",
    "median_scale",
    "abs_rel_map",
    "depth_metrics",
    "DepthMetrics",
    "localization_errors",
    "localization_metrics",
    "LOCALIZATION_THRESHOLDS",
    "SEVEN_SCENES_THRESHOLD",
    "similarity_align_points",
    "similarity_align_poses",
    "reconstruction_metrics",
    "identity_poses",
    "constant_depth",
]

LOCALIZATION_THRESHOLDS: tuple[tuple[float, float], ...] = ((0.1, 1.0), (0.25, 2.0), (0.5, 5.0), (5.0, 10.0))
"""``(metres, degrees)`` thresholds of the outdoor/indoor visual-localization benchmarks."""

SEVEN_SCENES_THRESHOLD: tuple[float, float] = (0.05, 5.0)
"""The 7-Scenes convention: a query is localized when within 5 cm and 5 degrees."""


def _poses(x, name: str) -> np.ndarray:
    p = as_float64(x)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[-2:] not in ((4, 4), (3, 4)):
        raise InputError(f"{name} must be (N, 4, 4) or (N, 3, 4) poses, got shape {p.shape}")
    return p


# ------------------------------------------------------------------------------------------------
# Angular errors
# ------------------------------------------------------------------------------------------------


def rotation_error_deg(R_est, R_gt) -> np.ndarray:
    """Geodesic angle between rotations ``(..., 3, 3)``, in degrees, in ``[0, 180]``.

    Computed from the Frobenius distance (roma), so identical rotations give exactly 0 and
    180-degree flips give 180 without a NaN from ``arccos``.
    """
    a = torch.from_numpy(as_float64(R_est))
    b = torch.from_numpy(as_float64(R_gt))
    return np.degrees(roma.rotmat_geodesic_distance(a, b).numpy())


def direction_error_deg(v_est, v_gt, sign_invariant: bool = False, eps: float = 1e-12) -> np.ndarray:
    """Angle between vectors ``(..., 3)`` in degrees.

    ``[0, 180]``, or ``[0, 90]`` with ``sign_invariant`` (a direction equals its opposite). When
    either vector is shorter than ``eps`` the direction is undefined and the error is 90 degrees
    (the expected angle to a random direction; the value the PoseDiffusion code also yields).
    """
    a = as_float64(v_est)
    b = as_float64(v_gt)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    ok = (na > eps) & (nb > eps)
    cos = np.einsum("...i,...i->...", a, b) / np.where(ok, na * nb, 1.0)
    cos = np.clip(cos, -1.0, 1.0)
    if sign_invariant:
        cos = np.abs(cos)
    # arctan2 of (|a x b|, a.b) is accurate at 0 and 180 degrees, unlike arccos.
    sin = np.linalg.norm(np.cross(a, b), axis=-1) / np.where(ok, na * nb, 1.0)
    err = np.degrees(np.arctan2(sin, cos))
    return np.where(ok, err, 90.0)


# ------------------------------------------------------------------------------------------------
# Multi-view relative pose (CO3Dv2 / RealEstate10K protocol)
# ------------------------------------------------------------------------------------------------


def _relative_poses(c2w: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``(P, 3, 3)`` and translation ``(P, 3)`` of ``world2cam_j @ cam2world_i``."""
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]
    Rj_T = np.transpose(R[j], (0, 2, 1))
    R_ij = Rj_T @ R[i]
    t_ij = np.einsum("pab,pb->pa", Rj_T, t[i] - t[j])
    return R_ij, t_ij


def relative_pose_errors(
    est_c2w, gt_c2w, sign_invariant: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative rotation and translation-direction errors over all camera pairs ``i < j``.

    Args:
        est_c2w: ``(N, 4, 4)`` estimated camera-to-world poses (any world frame and scale).
        gt_c2w: ``(N, 4, 4)`` ground-truth camera-to-world poses.
        sign_invariant: treat ``t`` and ``-t`` as the same direction (CO3Dv2 protocol).

    Returns:
        ``(rot_err_deg, trans_err_deg, pairs)``: ``(P,)``, ``(P,)`` errors in degrees and ``(P, 2)``
        int pair indices, ``P = N (N - 1) / 2``. With fewer than two cameras, ``P = 0``.
    """
    est, gt = _poses(est_c2w, "est_c2w"), _poses(gt_c2w, "gt_c2w")
    if len(est) != len(gt):
        raise InputError(f"{len(est)} estimated poses for {len(gt)} GT poses")
    i, j = np.triu_indices(len(est), k=1)
    pairs = np.stack([i, j], axis=1).astype(np.int64)
    if len(pairs) == 0:
        return np.zeros(0), np.zeros(0), pairs.reshape(0, 2)
    R_e, t_e = _relative_poses(est, i, j)
    R_g, t_g = _relative_poses(gt, i, j)
    return rotation_error_deg(R_e, R_g), direction_error_deg(t_e, t_g, sign_invariant), pairs


def accuracy_at(errors, tau: float) -> float:
    """Fraction of ``errors`` strictly below ``tau`` (``nan`` for an empty array)."""
    e = as_float64(errors).ravel()
    return float(np.mean(e < tau)) if e.size else float("nan")


def mean_average_accuracy(rot_err, trans_err, max_threshold: int = 30) -> float:
    """mAA: mean over ``tau = 1..max_threshold`` degrees of the fraction of pairs with
    ``max(rot_err, trans_err) < tau`` (the last bin includes ``max_threshold`` itself).

    Returns ``nan`` when there are no pairs.
    """
    err = np.maximum(as_float64(rot_err).ravel(), as_float64(trans_err).ravel())
    if err.size == 0:
        return float("nan")
    hist, _ = np.histogram(err, bins=np.arange(max_threshold + 1))
    return float(np.mean(np.cumsum(hist) / err.size))


def multiview_pose_metrics(
    est_c2w,
    gt_c2w,
    taus: Sequence[float] = (5.0, 15.0, 30.0),
    max_threshold: int = 30,
    sign_invariant: bool = True,
) -> dict[str, float]:
    """RRA@tau, RTA@tau (fractions in ``[0, 1]``), ``mAA`` and mean errors for one sequence.

    Keys: ``RRA@<tau>``, ``RTA@<tau>``, ``mAA@<max_threshold>``, ``rot_err_mean_deg``,
    ``trans_err_mean_deg``, ``n_pairs``. With fewer than two cameras every rate is ``nan`` and
    ``n_pairs`` is 0. Average the per-sequence values to get a dataset score.
    """
    r, t, pairs = relative_pose_errors(est_c2w, gt_c2w, sign_invariant=sign_invariant)
    out: dict[str, float] = {}
    for tau in taus:
        out[f"RRA@{tau:g}"] = accuracy_at(r, tau)
        out[f"RTA@{tau:g}"] = accuracy_at(t, tau)
    out[f"mAA@{max_threshold}"] = mean_average_accuracy(r, t, max_threshold)
    out["rot_err_mean_deg"] = float(r.mean()) if r.size else float("nan")
    out["trans_err_mean_deg"] = float(t.mean()) if t.size else float("nan")
    out["n_pairs"] = int(len(pairs))
    return out


# ------------------------------------------------------------------------------------------------
# Two-view relative pose (SuperGlue / LoFTR protocol)
# ------------------------------------------------------------------------------------------------


def two_view_pose_errors(T_0to1_est, T_0to1_gt, sign_invariant: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Errors of relative poses ``T_0to1`` ``(..., 4, 4)`` (camera-0 to camera-1 coordinates), in
    degrees, each ``(...)``: ``(max(rotation, translation direction), rotation, translation
    direction)``. An estimate with a non-finite entry (a failed solver) has infinite errors.

    The translation angle is sign invariant by default (the essential-matrix ambiguity of the
    SuperGlue protocol).
    """
    a, b = as_float64(T_0to1_est), as_float64(T_0to1_gt)
    failed = ~np.isfinite(a).all(axis=(-1, -2))
    a = np.where(failed[..., None, None], np.eye(4), a)
    r = np.where(failed, np.inf, rotation_error_deg(a[..., :3, :3], b[..., :3, :3]))
    t = np.where(failed, np.inf, direction_error_deg(a[..., :3, 3], b[..., :3, 3], sign_invariant=sign_invariant))
    return np.maximum(r, t), r, t


def two_view_pose_error(T_0to1_est, T_0to1_gt, sign_invariant: bool = True) -> np.ndarray:
    """``max(rotation error, translation-direction error)`` in degrees, ``(...)``: the first of
    :func:`two_view_pose_errors`."""
    return two_view_pose_errors(T_0to1_est, T_0to1_gt, sign_invariant)[0]


def pose_auc(errors, thresholds: Sequence[float] = (5.0, 10.0, 20.0)) -> dict[str, float]:
    """Area under the cumulative recall curve of ``errors`` (degrees), up to each threshold,
    divided by the threshold (SuperGlue ``pose_auc``); values in ``[0, 1]``.

    The recall curve is piecewise linear through ``(0, 0)`` and ``(e_k, k / n)`` for the sorted
    errors ``e_k``, held flat up to the threshold. Failed estimates should be passed as ``inf``
    (they count in ``n``). Returns ``{"AUC@5": ..}``; ``nan`` for no errors.
    """
    e = np.sort(as_float64(errors).ravel())
    out: dict[str, float] = {}
    n = e.size
    for t in thresholds:
        key = f"AUC@{t:g}"
        if n == 0:
            out[key] = float("nan")
            continue
        xs = np.concatenate([[0.0], e])
        ys = np.arange(n + 1) / n
        k = int(np.searchsorted(xs, t))  # points with x < t
        x = np.concatenate([xs[:k], [t]])
        y = np.concatenate([ys[:k], [ys[k - 1]]])
        out[key] = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / t)
    return out


# ------------------------------------------------------------------------------------------------
# Monocular depth
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# Visual localization
# ------------------------------------------------------------------------------------------------


def localization_errors(est_c2w, gt_c2w) -> tuple[np.ndarray, np.ndarray]:
    """Per-query camera-centre distance ``(N,)`` (input units, metres for metric GT) and rotation
    error ``(N,)`` in degrees. A query whose estimate contains a NaN (failed localization) gets
    ``inf`` for both."""
    est, gt = _poses(est_c2w, "est_c2w"), _poses(gt_c2w, "gt_c2w")
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


# ------------------------------------------------------------------------------------------------
# Similarity alignment and 3D reconstruction
# ------------------------------------------------------------------------------------------------


@dataclass
class Similarity:
    """``x -> s R x + t``: rotation ``R`` ``(3, 3)``, translation ``t`` ``(3,)``, scale ``s``."""

    R: np.ndarray
    t: np.ndarray
    s: float

    @classmethod
    def identity(cls) -> "Similarity":
        return cls(np.eye(3), np.zeros(3), 1.0)

    def apply_points(self, pts) -> np.ndarray:
        """Transform points ``(..., 3)``."""
        return self.s * as_float64(pts) @ self.R.T + self.t

    def apply_poses(self, c2w) -> np.ndarray:
        """Transform camera-to-world poses ``(N, 4, 4)``: rotations rotate, centres move, and the
        result stays rigid (scale only affects the centres)."""
        p = _poses(c2w, "c2w")
        out = np.tile(np.eye(4), (len(p), 1, 1))
        out[:, :3, :3] = self.R @ p[:, :3, :3]
        out[:, :3, 3] = self.apply_points(p[:, :3, 3])
        return out


def similarity_align_points(src, dst, weights=None) -> Similarity:
    """Umeyama similarity ``(s, R, t)`` minimising ``sum w |s R src + t - dst|^2``
    (:func:`pointmap.geometry.rigid_registration`, in float64).

    Args:
        src: ``(N, 3)`` points to move (e.g. predicted), ``dst``: ``(N, 3)`` corresponding targets.
        weights: optional ``(N,)`` non-negative weights.

    Needs ``N >= 3`` non-collinear points for a unique answer; raises ``ValueError`` for ``N < 3``.
    """
    a, b = as_float64(src).reshape(-1, 3), as_float64(dst).reshape(-1, 3)
    if len(a) != len(b):
        raise InputError(f"{len(a)} source points for {len(b)} target points")
    if len(a) < 3:
        raise InputError(f"similarity alignment needs at least 3 point pairs, got {len(a)}")
    w = None if weights is None else torch.from_numpy(as_float64(weights).ravel())
    s, R, t = rigid_registration(torch.from_numpy(a), torch.from_numpy(b), w)
    return Similarity(R.numpy(), t.numpy(), float(s))


def similarity_align_poses(est_c2w, gt_c2w) -> Similarity:
    """Similarity that maps the estimated world onto the GT world, from camera poses.

    With 3 or more cameras whose centres are not (nearly) collinear, Umeyama on the camera
    centres. Otherwise (1 or 2 cameras, or a straight-line trajectory) the rotation is the
    chordal mean of ``R_gt_i R_est_i^T`` (roma special Procrustes), the scale is the ratio of the
    centres' spreads about their means (1 for a single camera), and the translation maps the
    estimated centroid onto the GT centroid.

    Args:
        est_c2w, gt_c2w: ``(N, 4, 4)`` camera-to-world poses.
    """
    est, gt = _poses(est_c2w, "est_c2w"), _poses(gt_c2w, "gt_c2w")
    if len(est) != len(gt) or len(est) == 0:
        raise InputError(f"need the same non-zero number of poses, got {len(est)} and {len(gt)}")
    ce, cg = est[:, :3, 3], gt[:, :3, 3]
    if len(est) >= 3:
        sv = np.linalg.svd(ce - ce.mean(0), compute_uv=False)
        if sv[0] > 0 and sv[1] > 1e-6 * sv[0]:
            return similarity_align_points(ce, cg)
    M = np.einsum("nab,ncb->ac", gt[:, :3, :3], est[:, :3, :3])
    R = roma.special_procrustes(torch.from_numpy(M)).numpy()
    spread_e = np.sqrt(((ce - ce.mean(0)) ** 2).sum(-1).mean())
    spread_g = np.sqrt(((cg - cg.mean(0)) ** 2).sum(-1).mean())
    s = float(spread_g / spread_e) if spread_e > 0 and spread_g > 0 else 1.0
    t = cg.mean(0) - s * R @ ce.mean(0)
    return Similarity(R, t, s)


def reconstruction_metrics(
    pred_points,
    gt_points,
    align: Similarity | None = None,
    threshold: float | None = None,
    max_points: int | None = 200_000,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy, completeness and overall (Chamfer) distance of a point cloud (DTU-style means).

    Args:
        pred_points: ``(N, 3)`` predicted points (non-finite rows are dropped).
        gt_points: ``(M, 3)`` GT points, in GT units.
        align: similarity applied to ``pred_points`` first (see :func:`similarity_align_points`
            and :func:`similarity_align_poses`); ``None`` means already aligned.
        threshold: optional distance for precision / recall / F-score.
        max_points: random subsample cap per cloud (seeded) to bound the cost; ``None`` for all.

    Returns:
        ``accuracy`` (mean distance pred -> nearest GT), ``completeness`` (mean GT -> nearest
        pred), ``overall`` (their mean), their medians, ``n_pred``, ``n_gt`` and, with
        ``threshold``, ``precision``, ``recall``, ``fscore``. Empty clouds give ``nan``.
    """
    p = as_float64(pred_points).reshape(-1, 3)
    g = as_float64(gt_points).reshape(-1, 3)
    p, g = p[np.isfinite(p).all(1)], g[np.isfinite(g).all(1)]
    if align is not None:
        p = align.apply_points(p)
    rng = np.random.default_rng(seed)
    if max_points is not None:
        if len(p) > max_points:
            p = p[rng.choice(len(p), max_points, replace=False)]
        if len(g) > max_points:
            g = g[rng.choice(len(g), max_points, replace=False)]
    keys = ["accuracy", "completeness", "overall", "accuracy_median", "completeness_median"]
    if threshold is not None:
        keys += ["precision", "recall", "fscore"]
    if len(p) == 0 or len(g) == 0:
        out = {k: float("nan") for k in keys}
        out.update(n_pred=int(len(p)), n_gt=int(len(g)))
        return out
    d_pg = cKDTree(g).query(p, k=1)[0]
    d_gp = cKDTree(p).query(g, k=1)[0]
    out = {
        "accuracy": float(d_pg.mean()),
        "completeness": float(d_gp.mean()),
        "overall": float((d_pg.mean() + d_gp.mean()) / 2),
        "accuracy_median": float(np.median(d_pg)),
        "completeness_median": float(np.median(d_gp)),
    }
    if threshold is not None:
        prec, rec = float(np.mean(d_pg < threshold)), float(np.mean(d_gp < threshold))
        out.update(precision=prec, recall=rec, fscore=2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0)
    out.update(n_pred=int(len(p)), n_gt=int(len(g)))
    return out


# ------------------------------------------------------------------------------------------------
# Trivial baselines
# ------------------------------------------------------------------------------------------------


def identity_poses(n: int) -> np.ndarray:
    """Trivial pose baseline: ``n`` identity camera-to-world poses ``(n, 4, 4)`` (identity
    rotation, zero translation). Every relative rotation is the identity and every relative
    translation direction is undefined (scored 90 degrees)."""
    return np.tile(np.eye(4), (n, 1, 1))


def constant_depth(shape: tuple[int, int], value: float = 1.0) -> np.ndarray:
    """Trivial depth baseline: a constant map ``(H, W)``. With median scaling it becomes the GT
    median, which makes it the natural floor for scale-free depth predictors."""
    return np.full(shape, float(value))
