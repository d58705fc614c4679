"""Post-processing of aligned scenes: occlusion-based clean-up and a sky heuristic."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import torch

from ..geometry.registration import inverse_pose
from ..scene import Scene

__all__ = ["clean_pointcloud", "mask_sky", "sky_mask"]


def clean_pointcloud(scene: Scene, tol: float = 0.001, bad_conf: float = 0.0) -> Scene:
    """Lower the confidence of points seen *in front of* another camera's surface.

    For every ordered pair of placed images ``(i, j != i)`` (``j`` inner loop), image ``i``'s
    points are projected into camera ``j`` (pixel = rounded projection); where one lands inside
    image ``j`` with positive depth ``z < (1 - tol) depth_j(pixel)`` and ``conf_i < conf_j(pixel)``,
    ``conf_i`` becomes ``min(conf_i, bad_conf)``. Updates are sequential, as in the reference.

    Returns:
        A new scene with updated ``confidence`` and ``masks = masks & (confidence > threshold)``.
    """
    confs = [c.clone() for c in scene.confidence]
    pts = scene.pts3d
    w2c = inverse_pose(scene.poses.float())
    placed = scene.placed.tolist()
    n = len(scene)
    for i in range(n):
        if not placed[i]:
            continue
        for j in range(n):
            if j == i or not placed[j]:
                continue
            Hj, Wj = scene.depths[j].shape
            cam = pts[i] @ w2c[j, :3, :3].T + w2c[j, :3, 3]
            z = cam[..., 2]
            proj = cam @ scene.intrinsics[j].float().T
            uv = torch.round(proj[..., :2] / proj[..., 2:3])
            u, v = uv[..., 0], uv[..., 1]
            ok = (z > 0) & (u >= 0) & (u < Wj) & (v >= 0) & (v < Hj)
            ok &= torch.isfinite(u) & torch.isfinite(v)
            uu = u.clamp(0, Wj - 1).nan_to_num(0).long()
            vv = v.clamp(0, Hj - 1).nan_to_num(0).long()
            dj, cj = scene.depths[j][vv, uu], confs[j][vv, uu]
            bad = ok & (z < (1 - tol) * dj) & (confs[i] < cj)
            confs[i] = torch.where(bad, confs[i].clamp(max=bad_conf), confs[i])
    masks = [m & (c > scene.conf_threshold) for m, c in zip(scene.masks, confs)]
    return replace(scene, confidence=confs, masks=masks)


def sky_mask(img: torch.Tensor) -> torch.Tensor:
    """Heuristic sky mask ``(H, W)`` bool of an ``(H, W, 3)`` RGB image in ``[0, 1]``.

    The reference converts the RGB array with OpenCV's BGR->HSV (so blue lands in hue 0-30) and
    keeps ``H in [0, 30], V >= 100`` or low-saturation bright pixels; then a 5x5 opening and the
    8-connected components larger than half the largest one.
    """
    rgb = (img.detach().cpu().float().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_BGR2HSV)
    s, v = hsv[..., 1], hsv[..., 2]
    m = cv2.inRange(hsv, (0, 0, 100), (30, 255, 255)) > 0
    m |= (s < 10) & (v > 150)
    m |= (s < 30) & (v > 180)
    m |= (s < 50) & (v > 220)
    m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return torch.zeros(m.shape, dtype=torch.bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.nonzero(areas > areas.max() / 2)[0] + 1
    return torch.from_numpy(np.isin(labels, keep))


def mask_sky(scene: Scene) -> Scene:
    """A new scene whose sky pixels (see :func:`sky_mask`) have confidence 0 and are masked out."""
    confs, masks = [], []
    for img, c, m in zip(scene.imgs, scene.confidence, scene.masks):
        sky = sky_mask(img)
        confs.append(torch.where(sky, torch.zeros_like(c), c))
        masks.append(m & ~sky)
    return replace(scene, confidence=confs, masks=masks)
