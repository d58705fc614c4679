"""nerfstudio / instant-ngp ``transforms.json``: reader and writer of its cameras.

The file's conventions (nerfstudio "data conventions"), converted here at the file boundary so that
in memory a :class:`TransformsFrame` holds pointmap's (camera-to-world in OpenCV axes, pixel
centres at integers):

* ``transform_matrix``: camera-to-world ``4x4`` in OpenGL/Blender camera axes (x right, y up,
  z back): :func:`pointmap.geometry.camera.opencv_opengl_flip`.
* ``fl_x fl_y cx cy w h`` in pixels with the centre of the first pixel at ``0.5`` (nerfstudio
  generates the ray of pixel ``(i, j)`` through ``(i + 0.5, j + 0.5)``), per frame or at the top
  level: :func:`pointmap.geometry.camera.intrinsics_to_corner_origin`. A reader also accepts
  ``camera_angle_x`` (horizontal field of view) instead, and a missing ``cx``/``cy`` means the
  image centre.
* the writer writes ``camera_model: "OPENCV"`` with zero distortion (``k1 k2 p1 p2``), and writes
  intrinsics shared by every frame once, at the top level.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from ..geometry.camera import (
    intrinsics_from_corner_origin,
    intrinsics_to_corner_origin,
    opencv_opengl_flip,
)
from ..io_utils import write_json
from .common import finite_matrix, read_json

__all__ = ["INTRINSIC_KEYS", "TransformsFrame", "read_transforms", "write_transforms"]

INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


@dataclass
class TransformsFrame:
    """One frame of a ``transforms.json`` in pointmap's conventions.

    Attributes:
        file_path: the image path as written in the file (relative to it).
        cam2world: ``(4, 4)`` camera-to-world pose in OpenCV axes (x right, y down, z forward), or
            ``None``.
        K: ``(3, 3)`` intrinsics (pixels, pixel centres at integers), or ``None``.
        size: ``(w, h)`` of the image ``K`` refers to (pixels), when known.
        fov_x: horizontal field of view (radians) when the file gives it instead of ``K``.
    """

    file_path: str
    cam2world: np.ndarray | None = None
    K: np.ndarray | None = None
    size: tuple[int, int] | None = None
    fov_x: float | None = None


def _frame_intrinsics(get, frame: TransformsFrame, where: str) -> None:
    """Fill ``frame.K``/``fov_x``/``size`` from ``get(key)`` (the frame's value, else the top level)."""
    w, h = get("w"), get("h")
    try:
        if get("fl_x") is not None:
            fx = float(get("fl_x"))
            fy = float(get("fl_y") if get("fl_y") is not None else fx)
            cx = float(get("cx") if get("cx") is not None else float(w) / 2)
            cy = float(get("cy") if get("cy") is not None else float(h) / 2)
            frame.K = intrinsics_from_corner_origin(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]))
        elif get("camera_angle_x") is not None:
            frame.fov_x = float(get("camera_angle_x"))
        else:
            return
        if w is not None and h is not None:
            frame.size = (int(w), int(h))
    except (TypeError, ValueError):
        raise FormatError(f"{where}: fl_x, fl_y, cx, cy, w, h, camera_angle_x must be numbers") from None


def read_transforms(path: str | os.PathLike) -> tuple[list[TransformsFrame], bool]:
    """The frames of the ``transforms.json`` at ``path`` (module docstring), and whether any of its
    distortion coefficients is non-zero (they are not modelled: the caller may warn).

    Raises:
        FormatError: the file is unreadable, has no ``frames`` list, or holds a malformed frame.
    """
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise FormatError(f"{path} is not a transforms.json (no 'frames' list)")
    frames, distorted = [], False
    for k, fr in enumerate(data["frames"]):
        where = f"{path}, frame {k}"
        if not isinstance(fr, dict) or not isinstance(fr.get("file_path"), str):
            raise FormatError(f"{where}: expected an object with a 'file_path'")
        get = lambda key: fr.get(key, data.get(key))  # noqa: E731  (per frame, else shared)
        frame = TransformsFrame(fr["file_path"])
        if fr.get("transform_matrix") is not None:
            gl = finite_matrix(fr["transform_matrix"], (4, 4), f"{where}, transform_matrix")
            frame.cam2world = opencv_opengl_flip(gl)
        _frame_intrinsics(get, frame, where)
        try:
            distorted |= any(float(get(key) or 0.0) != 0.0 for key in _DISTORTION_KEYS)
        except (TypeError, ValueError):
            raise FormatError(f"{where}: distortion coefficients must be numbers") from None
        frames.append(frame)
    return frames, distorted


def _frame_json(frame: TransformsFrame) -> dict[str, Any]:
    if frame.cam2world is None or frame.K is None or frame.size is None:
        raise FormatError(f"frame {frame.file_path}: a pose, intrinsics and a size are needed to write it")
    K = intrinsics_to_corner_origin(np.asarray(frame.K, np.float64))
    return {
        "file_path": frame.file_path,
        "transform_matrix": opencv_opengl_flip(np.asarray(frame.cam2world, np.float64)).tolist(),
        "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
        "w": int(frame.size[0]), "h": int(frame.size[1]),
    }


def write_transforms(
    path: str | os.PathLike, frames: Sequence[TransformsFrame], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``frames`` (each with ``cam2world``, ``K`` and ``size``; ``K``'s skew, which the file
    cannot hold, is dropped) as the ``transforms.json`` at ``path``, atomically.

    ``extra``: more top-level keys, written after the camera model and before ``frames`` (e.g.
    ``ply_file_path``, the length unit). Returns ``path``.
    """
    rows = [_frame_json(fr) for fr in frames]
    out: dict[str, Any] = {"camera_model": "OPENCV"}
    if rows and all(all(r[key] == rows[0][key] for key in INTRINSIC_KEYS) for r in rows):
        out.update({key: rows[0][key] for key in INTRINSIC_KEYS})
        for r in rows:
            for key in INTRINSIC_KEYS:
                del r[key]
    out.update({"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0})
    out.update(extra or {})
    out["frames"] = rows
    return write_json(path, out)
