"""pointmap's own ``cameras.json``: reader and writer.

Layout::

    {"convention": {...}, "units": "metres" | "scene", "metric": bool, "units_note": str,
     "conf_threshold": float,
     "images": [{"name", "file", "index", "placed",
                 "width", "height",                  # original resolution (pixels)
                 "network_width", "network_height",
                 "K", "K_original",                  # 3x3, pixel centres at integers
                 "focal", "focal_original",          # mean of fx, fy (pixels)
                 "cam2world", "world2cam",           # 4x4, OpenCV camera axes
                 "crop_box", "resized_size",         # preprocessing (null without metadata)
                 "points_kept", "points_total"}]}     # pixels kept as points / all pixels

Strict JSON: a value that is not a finite number is written as ``null``. Unplaced images are
listed with ``"placed": false``; their poses are meaningless. The file is already in pointmap's
conventions (OpenCV axes, pixel centres at integers), so nothing is converted at this boundary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from ..io_utils import write_json
from .common import finite_matrix, read_json

__all__ = ["CONVENTION", "CameraEntry", "camera_entry", "read_cameras_json", "write_cameras_json"]

CONVENTION = {
    "camera_axes": "OpenCV: x right, y down, z forward",
    "pixel_centres": "integer coordinates; the top-left pixel centre is (0, 0)",
    "units": "scene units for translations; pixels for intrinsics",
}


@dataclass
class CameraEntry:
    """One image's camera as read back: ``file`` (the name the exports use), ``placed``,
    ``K_original`` ``(3, 3)`` in the original image's pixels and ``size`` ``(width, height)`` of
    it (``None`` when absent), ``cam2world`` ``(4, 4)`` OpenCV axes and ``K`` ``(3, 3)`` at the
    network's resolution (``None`` when absent)."""

    file: str
    placed: bool
    K_original: np.ndarray | None = None
    size: tuple[int, int] | None = None
    cam2world: np.ndarray | None = None
    K: np.ndarray | None = None


def camera_entry(name: str, file: str, index: int, placed: bool, K: np.ndarray, K_original: np.ndarray,
                 cam2world: np.ndarray, size: tuple[int, int], network_size: tuple[int, int],
                 crop_box: Any, resized_size: Any, points: tuple[int, int]) -> dict[str, Any]:
    """One ``images`` entry of the layout above from plain values: intrinsics ``(3, 3)`` at
    network and original resolution (pixels), ``cam2world`` ``(4, 4)``, ``size`` and
    ``network_size`` as ``(width, height)``, ``points`` as ``(kept, total)``."""
    K, K0, c2w = (np.asarray(a, np.float64) for a in (K, K_original, cam2world))
    return {
        "name": name, "file": file, "index": int(index), "placed": bool(placed),
        "width": int(size[0]), "height": int(size[1]),
        "network_width": int(network_size[0]), "network_height": int(network_size[1]),
        "K": K.tolist(), "K_original": K0.tolist(),
        "focal": 0.5 * (K[0, 0] + K[1, 1]), "focal_original": 0.5 * (K0[0, 0] + K0[1, 1]),
        "cam2world": c2w.tolist(), "world2cam": np.linalg.inv(c2w).tolist(),
        "crop_box": list(crop_box) if crop_box is not None else None,
        "resized_size": list(resized_size) if resized_size is not None else None,
        "points_kept": int(points[0]), "points_total": int(points[1]),
    }


def write_cameras_json(path: str | os.PathLike, images: list[dict[str, Any]], header: dict[str, Any]) -> Path:
    """Write ``{**header, "images": images}`` (entries from :func:`camera_entry`) to ``path``,
    atomically; ``header`` holds ``convention``, the units fields and ``conf_threshold``."""
    path = Path(path)
    write_json(path, {**header, "images": images})
    return path


def read_cameras_json(path: str | os.PathLike) -> list[CameraEntry]:
    """The cameras of a pointmap ``cameras.json``, in file order, unplaced images included
    (``placed`` False). :class:`~pointmap.errors.FormatError` naming the file and the entry at
    fault when it is not such a file."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FormatError(f"{path} is not a pointmap cameras.json (no 'images' list)")
    return [_entry(im, f"{path}, image {k}") for k, im in enumerate(data["images"])]


def _entry(im: object, where: str) -> CameraEntry:
    """One ``images`` element read back (see :func:`read_cameras_json`)."""
    if not isinstance(im, dict) or not isinstance(im.get("file", im.get("name")), str):
        raise FormatError(f"{where}: expected an object with a 'file' name")
    entry = CameraEntry(file=im.get("file") or im["name"], placed=im.get("placed") is not False)
    if not entry.placed:
        return entry
    if im.get("K_original") is not None:
        entry.K_original = finite_matrix(im["K_original"], (3, 3), f"{where}, K_original")
        if isinstance(im.get("width"), int) and isinstance(im.get("height"), int):
            entry.size = (im["width"], im["height"])
    if im.get("cam2world") is not None:
        entry.cam2world = finite_matrix(im["cam2world"], (4, 4), f"{where}, cam2world")
    if im.get("K") is not None:
        entry.K = finite_matrix(im["K"], (3, 3), f"{where}, K")
    return entry
