"""Dense pixel matching between two images of a pair: reciprocal nearest neighbours of MASt3R
descriptors, or of DUSt3R's 3D points (both pointmaps of a pair are in the first camera's frame).

The algorithm (:func:`pointmap.geometry.matching.reciprocal_matches`) lives with the geometry;
this module is its public face, picks the features of a pair from :class:`PairPredictions` and
draws matches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .geometry.matching import grid_seeds, reciprocal_matches, reciprocal_matches_batched
from .predictions import PairPredictions

__all__ = ["reciprocal_matches", "reciprocal_matches_batched", "grid_seeds", "match_pair",
           "draw_matches"]


def match_pair(
    preds: PairPredictions,
    k: int,
    subsample: int = 8,
    use: str = "auto",
    conf_threshold: float | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matches between the two images of pair ``k = (i, j)`` of ``preds``.

    Args:
        preds: pair predictions.
        k: index of the pair in ``preds``.
        subsample: seed grid step in pixels.
        use: ``"desc"`` (MASt3R descriptors), ``"pts3d"`` (``pts3d_1`` against ``pts3d_2_in_1``,
            DUSt3R's recipe), or ``"auto"``: descriptors when present.
        conf_threshold: only pixels whose confidence (``desc_conf`` for descriptors, ``conf``
            for points) is above it may match (default: all).
        device: where to search (default: where the predictions are).

    Returns:
        ``(xy1 (M, 2), xy2 (M, 2))`` int64 pixel coordinates ``(x, y)`` in images ``i`` and ``j``.
    """
    if use == "auto":
        use = "desc" if preds.has_descriptors else "pts3d"
    if use == "desc":
        if not preds.has_descriptors:
            raise ValueError("these predictions have no descriptors (a DUSt3R model, or "
                             "descriptors=False); match with use='pts3d'")
        f1, f2, c1, c2 = preds.desc_1[k], preds.desc_2[k], preds.desc_conf_1[k], preds.desc_conf_2[k]
    elif use == "pts3d":
        f1, f2, c1, c2 = preds.pts3d_1[k], preds.pts3d_2_in_1[k], preds.conf_1[k], preds.conf_2[k]
    else:
        raise ValueError(f"use must be 'desc', 'pts3d' or 'auto', not {use!r}")
    m1 = m2 = None
    if conf_threshold is not None:
        m1, m2 = c1 > conf_threshold, c2 > conf_threshold
    return reciprocal_matches(f1.float(), f2.float(), subsample, m1, m2, device=device)


def draw_matches(
    img1: np.ndarray,
    img2: np.ndarray,
    xy1: torch.Tensor | np.ndarray,
    xy2: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    max_lines: int = 300,
) -> Path:
    """Write a picture of the matches: the images side by side (``(H, W, 3)`` uint8 each) with a
    line per match (an even subset of at most ``max_lines``), as PNG or JPEG by suffix."""
    import cv2

    from .io_utils import atomic_write_bytes

    h1, w1 = img1.shape[:2]
    h2, w2 = img2.shape[:2]
    canvas = np.zeros((max(h1, h2), w1 + w2, 3), dtype=np.uint8)
    canvas[:h1, :w1] = img1
    canvas[:h2, w1:] = img2
    a, b = np.asarray(xy1), np.asarray(xy2)
    sel = np.linspace(0, len(a) - 1, min(len(a), max_lines)).round().astype(int) if len(a) else []
    bgr = np.ascontiguousarray(canvas[..., ::-1])
    for n, q in enumerate(sel):
        hue = int(180 * n / max(1, len(sel)))
        color = cv2.cvtColor(np.uint8([[[hue, 255, 255]]]), cv2.COLOR_HSV2BGR)[0, 0].tolist()
        p1 = (int(a[q, 0]), int(a[q, 1]))
        p2 = (int(b[q, 0]) + w1, int(b[q, 1]))
        cv2.line(bgr, p1, p2, color, 1, cv2.LINE_AA)
        cv2.circle(bgr, p1, 2, color, -1)
        cv2.circle(bgr, p2, 2, color, -1)
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", bgr)
    if not ok:
        raise ValueError(f"cannot encode a picture as {path.suffix!r}; use .png or .jpg")
    atomic_write_bytes(path, buf.tobytes())
    return path
