"""Camera pose metrics: angular errors, the multi-view protocol (RRA / RTA / mAA) and the two-view
protocol (AUC of the pose error).

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

from typing import Sequence

import numpy as np
import roma
import torch

from ...arrays import as_float64
from ...errors import InputError

__all__ = ["accuracy_at", "as_poses", "direction_error_deg", "mean_average_accuracy", "multiview_pose_metrics", "pose_auc", "relative_pose_errors", "rotation_error_deg", "two_view_pose_error", "two_view_pose_errors"]


def as_poses(x, name: str) -> np.ndarray:
    """Poses ``(N, 4, 4)`` or ``(N, 3, 4)`` (a single pose gets a leading axis) as float64."""
    p = as_float64(x)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[-2:] not in ((4, 4), (3, 4)):
        raise InputError(f"{name} must be (N, 4, 4) or (N, 3, 4) poses, got shape {p.shape}")
    return p


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
    est, gt = as_poses(est_c2w, "est_c2w"), as_poses(gt_c2w, "gt_c2w")
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
