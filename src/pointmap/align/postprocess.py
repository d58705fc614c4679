"""Post-processing of aligned scenes: a sky heuristic (the occlusion clean-up: :mod:`.clean`)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import torch

from ..scene import Scene

__all__ = ["mask_sky", "sky_mask"]


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
