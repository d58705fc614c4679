"""Placing bank models on horizontal surfaces: upright (z up, base on the surface), turned by
right angles (or a little off them), backs against the region's sides or free-standing, at the
size the bank gives them, with non-overlapping footprints."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from .bank import AssetBank
from .meshes import SceneAssembler

__all__ = ["overlaps", "place_on_floor", "yaw_matrix"]


def yaw_matrix(a: float) -> np.ndarray:
    return Rotation.from_euler("z", a).as_matrix()


def overlaps(fp: np.ndarray, placed: list[np.ndarray], margin: float) -> bool:
    for q in placed:
        if np.all(fp[0] < q[1] + margin) and np.all(q[0] < fp[1] + margin):
            return True
    return False


def place_on_floor(sa: SceneAssembler, bank: AssetBank, rng: np.random.Generator, candidates: list[int],
                   region: tuple[float, float, float, float], n: int, placed: list[np.ndarray],
                   against_walls: bool = True, z0: float = 0.0, max_height: float | None = None,
                   tries: int = 25, against_prob: float = 0.6, chosen: list[int] | None = None) -> list[np.ndarray]:
    """Place up to ``n`` models from ``candidates`` on the plane ``z = z0`` inside ``region``
    ``(xmin, ymin, xmax, ymax)`` without footprint overlap (``placed`` holds the footprints
    ``(2, 2)`` taken so far and receives the new ones); with ``against_walls``, a share
    ``against_prob`` stand with their backs to a side of the region. Returns their world boxes
    (and appends the model indices to ``chosen`` when given)."""
    xmin, ymin, xmax, ymax = region
    boxes = []
    for _ in range(n):
        for _ in range(tries):
            mi = candidates[int(rng.integers(len(candidates)))]
            mesh = bank.model(mi)
            lo, hi = mesh.bounds
            if max_height is not None and hi[2] - lo[2] > max_height:
                continue
            k = int(rng.integers(4))
            yaw = k * math.pi / 2 + (rng.normal(0, 0.1) if rng.uniform() < 0.3 else 0.0)
            R = yaw_matrix(yaw)
            corners = np.array([[x, y, 0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]) @ R.T
            half = (corners.max(0) - corners.min(0))[:2] / 2
            if half[0] * 2 > xmax - xmin or half[1] * 2 > ymax - ymin:
                continue
            if against_walls and rng.uniform() < against_prob:
                # back against one side of the region, facing inwards
                side = int(rng.integers(4))
                yaw = [0.0, math.pi / 2, math.pi, -math.pi / 2][side]  # models face -y: back to wall
                R = yaw_matrix(yaw)
                corners = np.array([[x, y, 0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]) @ R.T
                half = (corners.max(0) - corners.min(0))[:2] / 2
                if half[0] * 2 > xmax - xmin or half[1] * 2 > ymax - ymin:
                    continue
                u = rng.uniform(0, 1)
                pos = {0: (xmin + half[0] + u * (xmax - xmin - 2 * half[0]), ymax - half[1] - 0.02),
                       1: (xmin + half[0] + 0.02, ymin + half[1] + u * (ymax - ymin - 2 * half[1])),
                       2: (xmin + half[0] + u * (xmax - xmin - 2 * half[0]), ymin + half[1] + 0.02),
                       3: (xmax - half[0] - 0.02, ymin + half[1] + u * (ymax - ymin - 2 * half[1]))}[side]
            else:
                pos = (rng.uniform(xmin + half[0], xmax - half[0]), rng.uniform(ymin + half[1], ymax - half[1]))
            fp = np.array([[pos[0] - half[0], pos[1] - half[1]], [pos[0] + half[0], pos[1] + half[1]]])
            if overlaps(fp, placed, 0.05):
                continue
            placed.append(fp)
            boxes.append(sa.add(mesh, R, [pos[0], pos[1], z0]))
            if chosen is not None:
                chosen.append(mi)
            break
    return boxes
