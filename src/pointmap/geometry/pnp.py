"""Camera pose (and focal) from a pointmap with PnP-RANSAC (OpenCV SQPnP)."""

from __future__ import annotations

import math
import cv2
import numpy as np
import torch

from .camera import pixel_grid

__all__ = ["pnp_ransac", "pnp_ransac_inliers", "pnp_ransac_points", "relative_pose"]


def pnp_ransac_inliers(
    pts: torch.Tensor | np.ndarray,
    uv: torch.Tensor | np.ndarray,
    image_size: tuple[int, int],
    focal: float | None = None,
    pp: tuple[float, float] | None = None,
    iterations: int = 10,
    reproj_error: float = 5.0,
) -> tuple[float, torch.Tensor, int] | None:
    """Pose of a camera seeing world points ``pts (M, 3)`` at pixels ``uv (M, 2)``, and its
    RANSAC inlier count.

    OpenCV re-solves the pose from all the inliers of the best RANSAC hypothesis (SQPnP).

    Args:
        image_size: ``(H, W)``; sets the default principal point ``(W/2, H/2)`` and the focal
            search range.
        focal: known focal (pixels); when ``None`` the 21 focals ``geomspace(S/2, 3S)``
            (``S = max(H, W)``) are tried and the one with most RANSAC inliers is kept.
        iterations, reproj_error: RANSAC iterations and inlier threshold (pixels).

    Returns:
        ``(focal, cam2world (4, 4) float32, n_inliers)``, or ``None`` with fewer than 4 points or
        no solution.
    """
    H, W = image_size
    pts = np.ascontiguousarray(np.asarray(torch.as_tensor(pts).detach().cpu(), dtype=np.float32))
    uv = np.ascontiguousarray(np.asarray(torch.as_tensor(uv).detach().cpu(), dtype=np.float32))
    ok = np.isfinite(pts).all(-1) & np.isfinite(uv).all(-1)
    pts, uv = pts[ok], uv[ok]
    if len(pts) < 4:
        return None
    cx, cy = (W / 2, H / 2) if pp is None else (float(pp[0]), float(pp[1]))
    S = max(H, W)
    candidates = [float(focal)] if focal is not None else list(np.geomspace(S / 2, S * 3, 21))
    best: tuple[int, float, np.ndarray, np.ndarray] | None = None
    for f in candidates:
        K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=np.float64)
        try:
            success, rvec, tvec, inliers = cv2.solvePnPRansac(
                pts, uv, K, None, iterationsCount=iterations, reprojectionError=reproj_error,
                flags=cv2.SOLVEPNP_SQPNP,
            )
        except cv2.error:
            continue
        if not success or inliers is None:
            continue
        if best is None or len(inliers) > best[0]:
            best = (len(inliers), f, rvec, tvec)
    if best is None:
        return None
    n_inliers, f, rvec, tvec = best
    R, _ = cv2.Rodrigues(rvec)
    world2cam = np.eye(4)
    world2cam[:3, :3] = R
    world2cam[:3, 3] = tvec.reshape(3)
    return float(f), torch.from_numpy(np.linalg.inv(world2cam)).float(), int(n_inliers)


def pnp_ransac_points(
    pts: torch.Tensor | np.ndarray,
    uv: torch.Tensor | np.ndarray,
    image_size: tuple[int, int],
    focal: float | None = None,
    pp: tuple[float, float] | None = None,
    iterations: int = 10,
    reproj_error: float = 5.0,
) -> tuple[float, torch.Tensor] | None:
    """:func:`pnp_ransac_inliers` without the inlier count: ``(focal, cam2world (4, 4) float32)``
    or ``None``."""
    res = pnp_ransac_inliers(pts, uv, image_size, focal, pp, iterations, reproj_error)
    return None if res is None else res[:2]


def confident_mask(
    conf: torch.Tensor, threshold: float, min_fraction: float = 0.05, min_pixels: int = 16,
) -> torch.Tensor:
    """Pixels to trust for pose fitting: ``conf > threshold``, or the most confident ones when
    too few pass.

    A threshold tuned on one domain can leave almost nothing on another (photographs unlike the
    training data get low confidences everywhere), and PnP on a handful of pixels fails or is
    noise. When fewer than ``max(min_pixels, min_fraction * numel)`` pixels pass, the mask holds
    that many pixels of highest confidence instead (ties broken by pixel order).

    Args:
        conf: ``(H, W)`` raw confidences.
        threshold: raw-confidence threshold.
        min_fraction: smallest fraction of the pixels to keep.
        min_pixels: smallest number of pixels to keep (capped by the image size).

    Returns:
        ``(H, W)`` bool mask.
    """
    mask = conf > threshold
    need = min(conf.numel(), max(int(min_pixels), math.ceil(min_fraction * conf.numel())))
    if int(mask.sum()) >= need:
        return mask
    top = torch.topk(conf.reshape(-1).float(), need).indices
    out = torch.zeros(conf.numel(), dtype=torch.bool, device=conf.device)
    out[top] = True
    return out.reshape(conf.shape)


def pnp_ransac(
    pts3d: torch.Tensor,
    mask: torch.Tensor | None = None,
    focal: float | None = None,
    pp: tuple[float, float] | None = None,
    iterations: int = 10,
    reproj_error: float = 5.0,
) -> tuple[float, torch.Tensor] | None:
    """Pose of the camera that took a world-frame pointmap ``pts3d (H, W, 3)``.

    Pixel ``(u, v)`` of the map is the projection of ``pts3d[v, u]``; ``mask (H, W)`` selects the
    pixels used. See :func:`pnp_ransac_points` for the other arguments.

    Returns:
        ``(focal, cam2world (4, 4))`` or ``None`` on failure.
    """
    H, W = pts3d.shape[:2]
    uv = pixel_grid(H, W, pts3d.device)
    if mask is None:
        mask = torch.ones(H, W, dtype=torch.bool, device=pts3d.device)
    return pnp_ransac_points(
        pts3d[mask], uv[mask], (H, W), focal=focal, pp=pp, iterations=iterations,
        reproj_error=reproj_error,
    )


def relative_pose(
    pts_j_in_i: torch.Tensor,
    conf_j: torch.Tensor,
    conf_threshold: float = 3.0,
    focal: float | None = None,
    iterations: int = 100,
    reproj_error: float = 5.0,
) -> tuple[float, torch.Tensor] | None:
    """Pose of camera ``j`` in camera ``i``'s frame from image ``j``'s pointmap expressed in
    camera ``i``'s frame (e.g. ``pts3d_2_in_1`` of the pair ``(i, j)``).

    PnP-RANSAC of ``pts_j_in_i (H, W, 3)`` against image ``j``'s pixels, restricted to
    ``conf_j (H, W) > conf_threshold`` (the 5 % most confident pixels when fewer pass, see
    :func:`confident_mask`), with the focal of ``j`` (pixels) when known, else searched.

    Returns:
        ``(focal_j, T_i_from_j (4, 4))`` (translation in the pointmap's scale) or ``None``.
    """
    mask = confident_mask(conf_j, conf_threshold)
    return pnp_ransac(pts_j_in_i.float(), mask, focal=focal, iterations=iterations, reproj_error=reproj_error)
