"""A synthetic scene for the exporter tests: cameras looking at the plane ``z = 4`` (world, OpenCV
axes), colours a function of the world position, so every exported point has a known place and
colour."""

from __future__ import annotations

import math

import numpy as np
import torch

from pointmap.images import ImageMeta
from pointmap.scene import Scene

PLANE_Z = 4.0
H, W = 24, 32
# (original_size, resized_size, crop_box) per image: plain downscale, downscale + crop, other scale
METAS = [
    ((80, 60), (32, 24), (0, 0, 32, 24)),
    ((100, 60), (40, 24), (4, 0, 36, 24)),
    ((64, 48), (32, 24), (0, 0, 32, 24)),
]


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def plane_colour(X: np.ndarray) -> np.ndarray:
    """Colour of the plane at world points ``(..., 3)``: a smooth function of x, y in [0, 1]."""
    r = 0.5 + 0.4 * np.sin(2.0 * X[..., 0])
    g = 0.5 + 0.4 * np.cos(3.0 * X[..., 1])
    b = np.full_like(r, 0.25)
    return np.stack([r, g, b], -1)


def make_scene(
    n: int = 3, metas: bool = True, paths: list[str | None] | None = None, placed=None,
    full_mask: bool = False,
) -> Scene:
    """``n`` cameras (network size 32x24, f = 28, pp at the centre) looking at the plane z = 4."""
    K = torch.tensor([[28.0, 0, W / 2], [0, 26.0, H / 2], [0, 0, 1]], dtype=torch.float64)
    poses, depths, imgs, confs, masks, ms = [], [], [], [], [], []
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    for k in range(n):
        R = _rot_y(0.15 * (k - 1) + 0.05)  # tilted: depth varies in every view
        c = np.array([0.7 * (k - 1), 0.1 * k, 0.2 * k])
        P = np.eye(4); P[:3, :3] = R; P[:3, 3] = c
        ray = np.stack([(u - W / 2) / 28.0, (v - H / 2) / 26.0, np.ones_like(u, float)], -1)
        ray_w = ray @ R.T
        depth = (PLANE_Z - c[2]) / ray_w[..., 2]  # z-depth: ray has unit z in the camera
        X = c + depth[..., None] * ray_w
        conf = 2.0 + 3.0 * (u + v) / (W + H)
        poses.append(P); depths.append(depth); imgs.append(plane_colour(X))
        confs.append(conf); masks.append(np.ones_like(conf, bool) if full_mask else conf > 3.0)
        if metas:
            o, r, cb = METAS[k % len(METAS)]
            ms.append(ImageMeta(path=paths[k] if paths else None, original_size=o,
                                resized_size=r, crop_box=cb))
    t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt)
    return Scene(
        imgs=[t(i) for i in imgs], poses=t(poses), intrinsics=t([K.numpy()] * n),
        depths=[t(d) for d in depths], confidence=[t(c) for c in confs],
        masks=[torch.as_tensor(m) for m in masks], conf_threshold=3.0,
        placed=None if placed is None else torch.as_tensor(placed, dtype=torch.bool),
        metas=ms, names=[f"img{k}" for k in range(n)],
    )
