"""3D reconstruction metrics: similarity alignment (points or camera poses) and accuracy /
completeness / Chamfer of point clouds; the trivial baselines of the tasks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import roma
import torch
from scipy.spatial import cKDTree

from ...arrays import as_float64
from ...errors import InputError
from ...geometry.registration import rigid_registration
from .poses import as_poses

__all__ = ["Similarity", "constant_depth", "identity_poses", "reconstruction_metrics", "similarity_align_points", "similarity_align_poses"]


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
        p = as_poses(c2w, "c2w")
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
    est, gt = as_poses(est_c2w, "est_c2w"), as_poses(gt_c2w, "gt_c2w")
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


def identity_poses(n: int) -> np.ndarray:
    """Trivial pose baseline: ``n`` identity camera-to-world poses ``(n, 4, 4)`` (identity
    rotation, zero translation). Every relative rotation is the identity and every relative
    translation direction is undefined (scored 90 degrees)."""
    return np.tile(np.eye(4), (n, 1, 1))


def constant_depth(shape: tuple[int, int], value: float = 1.0) -> np.ndarray:
    """Trivial depth baseline: a constant map ``(H, W)``. With median scaling it becomes the GT
    median, which makes it the natural floor for scale-free depth predictors."""
    return np.full(shape, float(value))
