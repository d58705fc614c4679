"""Training and test criteria of DUSt3R: 3D regression in view 1's frame with confidence weighting.

All criteria take the two ground-truth views and the two network predictions of a batch of pairs::

    loss, details = criterion(gt1, gt2, pred1, pred2)

* ``gt1`` / ``gt2``: view dicts with ``pts3d`` ``(B, H, W, 3)`` world points (scene units),
  ``valid_mask`` ``(B, H, W)`` bool and ``camera_pose`` ``(B, 4, 4)`` camera-to-world.
* ``pred1``: ``{"pts3d": (B, H, W, 3), "conf": (B, H, W)}``, points in view 1's camera frame.
* ``pred2``: ``{"pts3d_in_other_view": (B, H, W, 3), "conf": (B, H, W)}``, view 2's points also in
  view 1's camera frame.

``loss`` is a scalar tensor; ``details`` maps names to Python floats (for logging).

Normalisation modes (``norm_mode = "<stat>_<warp>"``): a per-pair scale factor is computed jointly
over the valid points of both views from the distances ``d = ||p||`` to view 1's camera centre,
optionally warped (``"dis"``: ``d``; ``"log1p"``: ``log(1 + d)``; ``"warp-log1p"``: the points
themselves are first warped to distance ``log(1 + d)`` and that is the distance used), then
summarised by ``"avg"`` (mean), ``"median"`` (median, no gradient) or ``"sqrt"`` (squared mean of
square roots); the points are divided by that factor (clipped to >= 1e-8). The short forms the
reference uses are accepted: ``"avg_dis"`` (default), ``"avg_log1p"``, ``"avg_warp-log1p"``,
``"median_dis"``, ``"sqrt_dis"`` …
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = [
    "L21",
    "Regr3D",
    "ConfLoss",
    "Regr3DShiftInv",
    "Regr3DScaleInv",
    "Regr3DScaleShiftInv",
    "normalize_pointcloud",
    "transform_points",
    "joint_median_depth",
    "joint_center_and_scale",
    "build_criterion",
    "CRITERION_TYPES",
]

CRITERION_TYPES = ("conf", "regr3d", "scale_shift_inv")
"""The criterion types :func:`build_criterion` knows."""

_STATS = ("avg", "median", "sqrt")
_WARPS = ("dis", "log1p", "warp-log1p")


class L21(nn.Module):
    """Per-point Euclidean distance ``||a - b||_2`` over the last axis.

    Args:
        reduction: ``"none"`` (per point, the form :class:`ConfLoss` needs), ``"mean"`` or ``"sum"``.
    """

    def __init__(self, reduction: str = "none") -> None:
        super().__init__()
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction must be 'none', 'mean' or 'sum', not {reduction!r}")
        self.reduction = reduction

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a``, ``b``: ``(..., D)`` -> ``(...)`` distances (or their mean/sum)."""
        if a.shape != b.shape:
            raise ValueError(f"L21 needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
        d = torch.linalg.vector_norm(a - b, dim=-1)
        if self.reduction == "mean":
            return d.mean() if d.numel() else d.sum()
        if self.reduction == "sum":
            return d.sum()
        return d


def transform_points(T: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply rigid/affine transforms ``T`` ``(B, 4, 4)`` to points ``(B, ..., 3)``."""
    B = pts.shape[0]
    flat = pts.reshape(B, -1, 3)
    out = flat @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    return out.reshape(pts.shape)


def _split_norm_mode(norm_mode: str) -> tuple[str, str]:
    stat, _, warp = norm_mode.partition("_")
    if stat not in _STATS or warp not in _WARPS:
        raise ValueError(
            f"unknown norm_mode {norm_mode!r}: expected '<stat>_<warp>' with stat in {_STATS} "
            f"and warp in {_WARPS}"
        )
    return stat, warp


def normalize_pointcloud(
    pts1: torch.Tensor,
    pts2: torch.Tensor,
    valid1: torch.Tensor,
    valid2: torch.Tensor,
    norm_mode: str = "avg_dis",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise a pair of pointmaps jointly by a distance statistic over their valid points.

    Args:
        pts1, pts2: ``(B, H1, W1, 3)`` and ``(B, H2, W2, 3)`` points in one frame.
        valid1, valid2: ``(B, H1, W1)`` / ``(B, H2, W2)`` bool masks of points entering the statistic.
        norm_mode: ``"<stat>_<warp>"``, see the module docstring.

    Returns:
        ``(pts1 / f, pts2 / f, f)`` with ``f`` ``(B,)`` the normalisation factor (>= 1e-8); with the
        ``warp-log1p`` warp the points are warped before being divided.
    """
    stat, warp = _split_norm_mode(norm_mode)
    B = pts1.shape[0]
    all_pts = torch.cat([pts1.reshape(B, -1, 3), pts2.reshape(B, -1, 3)], dim=1)
    valid = torch.cat([valid1.reshape(B, -1), valid2.reshape(B, -1)], dim=1)
    dis = torch.linalg.vector_norm(all_pts, dim=-1)  # (B, N)
    if warp == "log1p":
        dis = torch.log1p(dis)
    elif warp == "warp-log1p":
        log_dis = torch.log1p(dis)
        warp_factor = log_dis / dis.clip(min=1e-8)
        n1 = pts1[0].numel() // 3
        pts1 = pts1 * warp_factor[:, :n1].reshape(pts1.shape[:-1])[..., None]
        pts2 = pts2 * warp_factor[:, n1:].reshape(pts2.shape[:-1])[..., None]
        dis = log_dis
    nvalid = valid.sum(dim=1)
    if stat == "avg":
        factor = (dis * valid).sum(dim=1) / (nvalid + 1e-8)
    elif stat == "median":
        factor = torch.where(valid, dis, torch.nan).nanmedian(dim=1).values.detach()
        factor = torch.nan_to_num(factor, nan=0.0)
    else:  # sqrt
        factor = ((dis.sqrt() * valid).sum(dim=1) / (nvalid + 1e-8)) ** 2
    factor = factor.clip(min=1e-8)
    shape = (B,) + (1,) * (pts1.ndim - 1)
    return pts1 / factor.reshape(shape), pts2 / factor.reshape(shape), factor


def joint_median_depth(
    pts1: torch.Tensor, pts2: torch.Tensor, valid1: torch.Tensor, valid2: torch.Tensor
) -> torch.Tensor:
    """Median ``z`` ``(B,)`` over the valid points of both pointmaps ``(B, H, W, 3)`` (lower median)."""
    B = pts1.shape[0]
    z = torch.cat([pts1[..., 2].reshape(B, -1), pts2[..., 2].reshape(B, -1)], dim=1)
    valid = torch.cat([valid1.reshape(B, -1), valid2.reshape(B, -1)], dim=1)
    return torch.where(valid, z, torch.nan).nanmedian(dim=1).values


def joint_center_and_scale(
    pts1: torch.Tensor, pts2: torch.Tensor, valid1: torch.Tensor, valid2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis median centre ``(B, 3)`` of the valid points of both pointmaps and the median
    distance ``(B,)`` of those points to that centre (lower medians, as ``torch.nanmedian``)."""
    B = pts1.shape[0]
    p = torch.cat([pts1.reshape(B, -1, 3), pts2.reshape(B, -1, 3)], dim=1)
    valid = torch.cat([valid1.reshape(B, -1), valid2.reshape(B, -1)], dim=1)
    p_nan = torch.where(valid[..., None], p, torch.nan)
    center = p_nan.nanmedian(dim=1).values  # (B, 3)
    dist = torch.linalg.vector_norm(p_nan - center[:, None], dim=-1)
    scale = dist.nanmedian(dim=1).values
    return center, scale


class Regr3D(nn.Module):
    """3D regression of both pointmaps in view 1's camera frame.

    The GT world points of both views are mapped by ``inverse(gt1["camera_pose"])``. Predictions are
    always normalised with ``norm_mode``; the GT too unless ``gt_scale`` (then the prediction is
    compared with metric GT).

    Called directly it returns ``(loss, details)`` with ``loss`` the sum over views of the mean pixel
    loss; :class:`ConfLoss` uses :meth:`per_pixel` instead.
    """

    def __init__(
        self, pixel_loss: nn.Module | None = None, norm_mode: str = "avg_dis", gt_scale: bool = False
    ) -> None:
        super().__init__()
        _split_norm_mode(norm_mode)
        self.pixel_loss = pixel_loss if pixel_loss is not None else L21("none")
        self.norm_mode = norm_mode
        self.gt_scale = gt_scale

    def get_all_pts3d(
        self, gt1: dict, gt2: dict, pred1: dict, pred2: dict
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(gt_pts1, gt_pts2, pr_pts1, pr_pts2, valid1, valid2)`` in view 1's (normalised) frame;
        points ``(B, H, W, 3)``, masks ``(B, H, W)`` bool."""
        in_cam1 = torch.linalg.inv(gt1["camera_pose"].to(torch.float64)).to(gt1["pts3d"].dtype)
        gt_pts1 = transform_points(in_cam1, gt1["pts3d"])
        gt_pts2 = transform_points(in_cam1, gt2["pts3d"])
        valid1 = gt1["valid_mask"].bool().clone()
        valid2 = gt2["valid_mask"].bool().clone()
        pr_pts1 = pred1["pts3d"].float()
        pr_pts2 = pred2["pts3d_in_other_view"].float()
        pr_pts1, pr_pts2, _ = normalize_pointcloud(pr_pts1, pr_pts2, valid1, valid2, self.norm_mode)
        if not self.gt_scale:
            gt_pts1, gt_pts2, _ = normalize_pointcloud(gt_pts1, gt_pts2, valid1, valid2, self.norm_mode)
        return gt_pts1, gt_pts2, pr_pts1, pr_pts2, valid1, valid2

    def per_pixel(
        self, gt1: dict, gt2: dict, pred1: dict, pred2: dict
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], dict[str, float]]:
        """Per-pixel losses of the valid pixels: ``((l1 (N1,), mask1 (B,H,W)), (l2 (N2,), mask2),
        details)``."""
        gt_pts1, gt_pts2, pr_pts1, pr_pts2, m1, m2 = self.get_all_pts3d(gt1, gt2, pred1, pred2)
        l1 = self.pixel_loss(pr_pts1[m1], gt_pts1[m1])
        l2 = self.pixel_loss(pr_pts2[m2], gt_pts2[m2])
        name = type(self).__name__
        details = {f"{name}_pts3d_1": _mean_float(l1), f"{name}_pts3d_2": _mean_float(l2)}
        return (l1, m1), (l2, m2), details

    def forward(self, gt1: dict, gt2: dict, pred1: dict, pred2: dict) -> tuple[torch.Tensor, dict]:
        (l1, _), (l2, _), details = self.per_pixel(gt1, gt2, pred1, pred2)
        loss = _safe_mean(l1) + _safe_mean(l2)
        return loss, details


class Regr3DShiftInv(Regr3D):
    """:class:`Regr3D` made invariant to a shift along z: the joint median depth of the valid points
    is subtracted from GT and prediction separately."""

    def get_all_pts3d(self, gt1, gt2, pred1, pred2):  # noqa: D102 - same contract as the parent
        gt_pts1, gt_pts2, pr_pts1, pr_pts2, m1, m2 = super().get_all_pts3d(gt1, gt2, pred1, pred2)
        gt_z = joint_median_depth(gt_pts1, gt_pts2, m1, m2)
        pr_z = joint_median_depth(pr_pts1, pr_pts2, m1, m2)
        shift_gt = torch.zeros_like(gt_pts1[:, 0, 0])
        shift_gt[:, 2] = gt_z
        shift_pr = torch.zeros_like(pr_pts1[:, 0, 0])
        shift_pr[:, 2] = pr_z
        return (gt_pts1 - shift_gt[:, None, None], gt_pts2 - shift_gt[:, None, None],
                pr_pts1 - shift_pr[:, None, None], pr_pts2 - shift_pr[:, None, None], m1, m2)


class Regr3DScaleInv(Regr3D):
    """:class:`Regr3D` made scale invariant: scale = median distance to the joint per-axis median
    centre. With ``gt_scale`` the prediction is rescaled by ``gt_scale / pred_scale`` (pred scale
    clipped to [1e-3, 1e3]); otherwise both are divided by their own scale."""

    def get_all_pts3d(self, gt1, gt2, pred1, pred2):  # noqa: D102 - same contract as the parent
        gt_pts1, gt_pts2, pr_pts1, pr_pts2, m1, m2 = super().get_all_pts3d(gt1, gt2, pred1, pred2)
        _, gt_s = joint_center_and_scale(gt_pts1, gt_pts2, m1, m2)
        _, pr_s = joint_center_and_scale(pr_pts1, pr_pts2, m1, m2)
        pr_s = pr_s.clip(min=1e-3, max=1e3)
        if self.gt_scale:
            r = (gt_s / pr_s)[:, None, None, None]
            pr_pts1, pr_pts2 = pr_pts1 * r, pr_pts2 * r
        else:
            g, p = gt_s[:, None, None, None], pr_s[:, None, None, None]
            gt_pts1, gt_pts2, pr_pts1, pr_pts2 = gt_pts1 / g, gt_pts2 / g, pr_pts1 / p, pr_pts2 / p
        return gt_pts1, gt_pts2, pr_pts1, pr_pts2, m1, m2


class Regr3DScaleShiftInv(Regr3DScaleInv, Regr3DShiftInv):
    """The reference test criterion: z-shift invariance first, then scale invariance.

    Use ``Regr3DScaleShiftInv(L21(), gt_scale=True)``.
    """


class ConfLoss(nn.Module):
    """Confidence-weighted regression: per view, the mean over valid pixels of
    ``C * l - alpha * log(C)`` with ``C`` the predicted confidence (> 0); summed over both views.

    Args:
        pixel_loss: a :class:`Regr3D` (or subclass) giving per-pixel losses.
        alpha: weight of the ``-log C`` regulariser (the reference trains with 0.2).
    """

    def __init__(self, pixel_loss: Regr3D, alpha: float = 1.0) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"ConfLoss alpha must be > 0, not {alpha}")
        self.pixel_loss = pixel_loss
        self.alpha = alpha

    def forward(self, gt1: dict, gt2: dict, pred1: dict, pred2: dict) -> tuple[torch.Tensor, dict]:
        (l1, m1), (l2, m2), details = self.pixel_loss.per_pixel(gt1, gt2, pred1, pred2)
        c1 = pred1["conf"].float()[m1]
        c2 = pred2["conf"].float()[m2]
        cl1 = _safe_mean(l1 * c1 - self.alpha * torch.log(c1))
        cl2 = _safe_mean(l2 * c2 - self.alpha * torch.log(c2))
        details = dict(details, conf_loss_1=float(cl1.detach()), conf_loss_2=float(cl2.detach()))
        return cl1 + cl2, details


def _safe_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x``, or a zero that keeps the graph when ``x`` is empty."""
    return x.mean() if x.numel() else x.sum()


def _mean_float(x: torch.Tensor) -> float:
    return float(x.detach().mean()) if x.numel() else 0.0


def build_criterion(spec: dict[str, Any] | None = None) -> nn.Module:
    """Build a criterion from a small typed dict (no string evaluation).

    ``{"type": "conf", "alpha": 0.2, "norm_mode": "avg_dis"}`` -> ``ConfLoss(Regr3D(L21(), norm_mode), alpha)``;
    ``{"type": "regr3d", "norm_mode": ..., "gt_scale": False}``;
    ``{"type": "scale_shift_inv", "gt_scale": True}`` (the test criterion).
    """
    spec = dict(spec or {"type": "conf", "alpha": 0.2})
    kind = spec.pop("type", "conf")
    norm_mode = spec.pop("norm_mode", "avg_dis")
    gt_scale = spec.pop("gt_scale", kind == "scale_shift_inv")
    alpha = spec.pop("alpha", 0.2)
    if spec:
        raise ValueError(f"unknown criterion options: {sorted(spec)}")
    if kind == "conf":
        return ConfLoss(Regr3D(L21(), norm_mode=norm_mode, gt_scale=gt_scale), alpha=alpha)
    if kind == "regr3d":
        return Regr3D(L21(), norm_mode=norm_mode, gt_scale=gt_scale)
    if kind == "scale_shift_inv":
        return Regr3DScaleShiftInv(L21(), norm_mode=norm_mode, gt_scale=gt_scale)
    raise ValueError(f"unknown criterion type {kind!r}: use one of {CRITERION_TYPES}")
