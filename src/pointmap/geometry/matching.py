"""Reciprocal nearest-neighbour matching of two pointmaps in 3D."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

__all__ = ["reciprocal_matches"]


def reciprocal_matches(
    pts_a: torch.Tensor,
    pts_b: torch.Tensor,
    mask_a: torch.Tensor | None = None,
    mask_b: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel correspondences between two pointmaps expressed in the same frame.

    Pixel ``p`` of ``a`` and ``q`` of ``b`` match when ``q`` is the 3D nearest neighbour of ``p``
    among ``b``'s (masked) points and ``p`` is the nearest neighbour of ``q`` among ``a``'s.

    Args:
        pts_a: ``(H_a, W_a, 3)`` points of image a.
        pts_b: ``(H_b, W_b, 3)`` points of image b.
        mask_a, mask_b: ``(H, W)`` bool masks of the usable pixels (default all finite points).

    Returns:
        ``(uv_a (M, 2), uv_b (M, 2))`` int64 pixel coordinates ``(u, v)`` of the matches, ordered
        by the raster index of ``a``.
    """

    def flat(pts: torch.Tensor, mask: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        p = pts.detach().reshape(-1, 3).float().cpu().numpy()
        m = np.isfinite(p).all(-1)
        if mask is not None:
            m &= mask.detach().reshape(-1).cpu().numpy().astype(bool)
        idx = np.nonzero(m)[0]
        return p[idx], idx

    pa, ia = flat(pts_a, mask_a)
    pb, ib = flat(pts_b, mask_b)
    empty = torch.zeros(0, 2, dtype=torch.int64)
    if len(pa) == 0 or len(pb) == 0:
        return empty, empty.clone()
    _, nn_ab = cKDTree(pb).query(pa, k=1)  # for each a: index into pb
    _, nn_ba = cKDTree(pa).query(pb, k=1)  # for each b: index into pa
    recip = nn_ba[nn_ab] == np.arange(len(pa))
    sel_a = ia[recip]
    sel_b = ib[nn_ab[recip]]
    Wa, Wb = pts_a.shape[1], pts_b.shape[1]
    uv_a = np.stack([sel_a % Wa, sel_a // Wa], -1)
    uv_b = np.stack([sel_b % Wb, sel_b // Wb], -1)
    return torch.from_numpy(uv_a).long(), torch.from_numpy(uv_b).long()
