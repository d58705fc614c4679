"""Coloured point cloud as a binary little-endian PLY file.

Vertex properties, in this order: ``x y z`` (float32, world frame of the scene: OpenCV-axes world,
scene units), optionally ``nx ny nz`` (float32 unit normals, oriented towards the camera that saw
the point), ``red green blue`` (uchar) and ``confidence`` (float32, the network's raw confidence,
``> 1``). Points are the valid (masked) pixels of every placed image, image by image, row-major.

The header's comments say who wrote the file and its length unit
(:func:`~pointmap.export.common.units_note`): ``comment units: metres (...)`` for a metric scene,
``comment units: arbitrary scene units (...)`` otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..arrays import to_numpy
from ..io_utils import atomic_write
from ..scene import Scene
from .common import (
    image_colours,
    image_points,
    map_images,
    point_budget,
    sampled_pixels,
    scene_masks,
    units_note,
)

__all__ = ["export_ply", "grid_normals"]


def grid_normals(pts: np.ndarray, cam_center: np.ndarray) -> np.ndarray:
    """Per-pixel unit normals of a pointmap from central differences on the pixel grid.

    Args:
        pts: ``(H, W, 3)`` world points.
        cam_center: ``(3,)`` camera centre in world coordinates; normals are flipped to face it.

    Returns:
        ``(H, W, 3)`` float64 unit normals (zero where undefined, e.g. images narrower than 2 px).
    """
    H, W = pts.shape[:2]
    if H < 2 or W < 2:
        return np.zeros_like(pts, dtype=np.float64)
    p = pts.astype(np.float64)
    du = np.gradient(p, axis=1)
    dv = np.gradient(p, axis=0)
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)
    facing = np.sum(n * (cam_center - p), axis=-1, keepdims=True) < 0
    return np.where(facing, -n, n)


def _vertex_array(scene: Scene, mask, normals: bool, max_points: int | None = None,
                  workers: int | None = None) -> np.ndarray:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("confidence", "<f4")]
    masks = scene_masks(scene, mask, workers)
    budget = point_budget(masks, max_points)

    def one(k: int) -> np.ndarray | None:
        if budget[k] == 0 or not masks[k].any():
            return None
        idx = sampled_pixels(masks[k], budget[k], k)
        v = np.empty(len(idx), dtype=fields)
        if normals:  # from the whole pixel grid
            pts = image_points(scene, k)
            v["x"], v["y"], v["z"] = pts.reshape(-1, 3)[idx].T
            c = to_numpy(scene.poses[k], np.float64)[:3, 3]
            v["nx"], v["ny"], v["nz"] = grid_normals(pts, c).reshape(-1, 3)[idx].T
        else:
            v["x"], v["y"], v["z"] = image_points(scene, k, idx).T
        v["red"], v["green"], v["blue"] = image_colours(scene, k, idx).T
        v["confidence"] = to_numpy(scene.confidence[k], np.float32).reshape(-1)[idx]
        return v

    chunks = [v for v in map_images(one, len(scene), workers) if v is not None]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=fields)


def _header(vertices: np.ndarray, units: str) -> bytes:
    types = {"<f4": "float", "|u1": "uchar"}
    lines = ["ply", "format binary_little_endian 1.0", "comment written by pointmap", f"comment {units}",
             f"element vertex {len(vertices)}"]
    for name in vertices.dtype.names:
        lines.append(f"property {types[vertices.dtype[name].str]} {name}")
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def _write_body(f: BinaryIO, vertices: np.ndarray) -> None:
    f.write(vertices.tobytes())


def export_ply(
    scene: Scene,
    path: str | os.PathLike,
    normals: bool = False,
    mask: Sequence[torch.Tensor | np.ndarray] | None = None,
    max_points: int | None = None,
    workers: int | None = None,
) -> Path:
    """Write the scene's valid points to a binary little-endian PLY, atomically.

    Args:
        scene: the reconstruction.
        path: output ``.ply`` file.
        normals: also write ``nx ny nz`` from the pixel grid of each image.
        mask: per image ``(H, W)`` bool to use instead of ``scene.masks`` (still and-ed with
            ``scene.placed`` and positive depth).
        max_points: write at most this many points, sampled at random (seeded) from every image
            in proportion to its valid points; ``None`` writes all. Images are processed one at a
            time on each of ``workers`` threads (:func:`~pointmap.export.common.map_images`; the
            file does not depend on it), so memory holds that many images' points plus the output.

    Returns:
        ``path``.
    """
    path = Path(path)
    vertices = _vertex_array(scene, mask, normals, max_points, workers)
    with atomic_write(path) as f:
        f.write(_header(vertices, units_note(scene)))
        _write_body(f, vertices)
    return path
