"""Similarity registration (weighted Umeyama) and pose-set alignment."""

from __future__ import annotations

import roma
import torch

__all__ = [
    "rigid_registration",
    "similarity_matrix",
    "apply_similarity",
    "align_multiple_poses",
    "gauge_to_known_poses",
    "inverse_pose",
]


def rigid_registration(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor | None = None,
    with_scale: bool = True,
    symmetric_scale: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted similarity minimising ``sum_k w_k ||s R x_k + t - y_k||^2`` (Umeyama).

    Batched over leading dimensions; weights are normalised to sum to one (all-zero weights fall
    back to uniform). Reflections are excluded (``det R = +1``).

    Umeyama's scale is the least-squares one, which errors in ``x`` bias low (about 8 % with
    predicted pointmaps: a chain of registrations shrinks by that factor per link);
    ``symmetric_scale`` takes instead the ratio of the weighted RMS spreads about the centroids
    (Horn's symmetric scale: registering ``y`` onto ``x`` gives exactly its inverse), the
    rotation unchanged and ``t`` to match the centroids.

    Args:
        x: ``(..., N, 3)`` source points.
        y: ``(..., N, 3)`` target points.
        weights: ``(..., N)`` non-negative weights, or ``None`` for uniform.
        with_scale: estimate ``s``; otherwise ``s = 1``.
        symmetric_scale: with ``with_scale``, the symmetric scale instead of Umeyama's.

    Returns:
        ``(s (...), R (..., 3, 3), t (..., 3))``.
    """
    if weights is not None:
        weights = weights.to(x.dtype).clamp(min=0)
        empty = weights.sum(-1, keepdim=True) <= 0
        weights = torch.where(empty, torch.ones_like(weights), weights)
    umeyama = with_scale and not symmetric_scale
    out = roma.rigid_points_registration(x, y, weights=weights, compute_scaling=umeyama)
    (R, t, s) = out if umeyama else (*out, None)
    if with_scale and symmetric_scale:
        w = torch.ones_like(x[..., 0]) if weights is None else weights
        w = w / w.sum(-1, keepdim=True)
        xm, ym = (w[..., None] * x).sum(-2), (w[..., None] * y).sum(-2)
        vx = (w * (x - xm[..., None, :]).square().sum(-1)).sum(-1)
        vy = (w * (y - ym[..., None, :]).square().sum(-1)).sum(-1)
        s = (vy / vx.clamp(min=torch.finfo(vx.dtype).tiny)).sqrt()
        t = ym - s[..., None] * (R @ xm[..., None])[..., 0]
    if s is None:
        s = torch.ones(x.shape[:-2], dtype=x.dtype, device=x.device)
    return s, R, t


def similarity_matrix(s: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(..., 4, 4)`` homogeneous matrix ``[s R | t]`` from ``s (...)``, ``R (..., 3, 3)``,
    ``t (..., 3)``."""
    M = torch.zeros(R.shape[:-2] + (4, 4), dtype=R.dtype, device=R.device)
    M[..., :3, :3] = s[..., None, None] * R
    M[..., :3, 3] = t
    M[..., 3, 3] = 1
    return M


def apply_similarity(
    s: torch.Tensor, R: torch.Tensor, t: torch.Tensor, pts: torch.Tensor
) -> torch.Tensor:
    """``s R p + t`` for points ``(..., M, 3)`` (or ``(..., H, W, 3)`` with unbatched ``s, R, t``)."""
    if pts.ndim == R.ndim + 1 and R.ndim == 2:  # (H, W, 3) image with a single transform
        return s * (pts @ R.transpose(-1, -2)) + t
    return s[..., None, None] * (pts @ R.transpose(-1, -2)) + t[..., None, :]


def inverse_pose(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid ``(..., 4, 4)`` poses."""
    R = T[..., :3, :3]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3] = -(R.transpose(-1, -2) @ T[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1
    return out


def align_multiple_poses(
    src: torch.Tensor, dst: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarity ``(s, R, t)`` mapping a set of camera-to-world poses ``src (N, 4, 4)`` onto
    ``dst (N, 4, 4)``.

    Each pose contributes its centre and its centre plus ``eps`` times its optical axis, with
    ``eps`` = that set's median pairwise centre distance / 100 (1e-3 when all centres coincide);
    unweighted Umeyama.
    """

    def points(P: torch.Tensor) -> torch.Tensor:
        c = P[:, :3, 3]
        d = torch.cdist(c, c)
        off = d[~torch.eye(len(c), dtype=torch.bool, device=d.device)]
        eps = off.median() / 100 if off.numel() else d.new_tensor(0.0)
        if not torch.isfinite(eps) or eps <= 0:
            eps = d.new_tensor(1e-3)
        return torch.cat([c, c + eps * P[:, :3, 2]], dim=0)

    s, R, t = rigid_registration(points(src), points(dst), with_scale=True)
    return s, R, t


def gauge_to_known_poses(
    poses: torch.Tensor, known: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarity ``(s, R, t)`` moving estimated camera-to-world ``poses (N, 4, 4)`` onto the
    ``known (N, 4, 4)`` ones where ``mask (N,)`` is set (at least one): with two or more known
    poses, :func:`align_multiple_poses` (frame and scale); with one, the rigid motion putting
    that camera exactly on its known pose (``s = 1``: one pose fixes no scale)."""
    idx = torch.nonzero(mask.to(poses.device)).flatten()
    src, dst = poses[idx], known[idx].to(poses)
    if len(idx) >= 2:
        return align_multiple_poses(src, dst)
    R = dst[0, :3, :3] @ src[0, :3, :3].T
    return torch.ones((), dtype=poses.dtype, device=poses.device), R, dst[0, :3, 3] - R @ src[0, :3, 3]
