"""Cameras as JSON: intrinsics at network and original resolution and both pose directions.

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

Strict JSON: a value that is not a finite number is written as ``null``.

Unplaced images are listed with ``"placed": false``; their poses are meaningless.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import to_numpy
from ..io_utils import write_json
from ..scene import Scene
from .common import image_file_names, is_metric, original_intrinsics, original_size, units_fields

__all__ = ["cameras_dict", "export_cameras"]

CONVENTION = {
    "camera_axes": "OpenCV: x right, y down, z forward",
    "pixel_centres": "integer coordinates; the top-left pixel centre is (0, 0)",
    "units": "scene units for translations; pixels for intrinsics",
}


def cameras_dict(scene: Scene, image_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON-ready description of the cameras of ``scene`` (see the module docstring)."""
    names = list(image_names) if image_names is not None else image_file_names(scene)
    K_orig = original_intrinsics(scene)
    images = []
    kept = scene.kept_counts()
    for k in range(len(scene)):
        K = to_numpy(scene.intrinsics[k], np.float64)
        K0 = K_orig[k]
        c2w = to_numpy(scene.poses[k], np.float64)
        H, W = scene.depths[k].shape
        W0, H0 = original_size(scene, k)
        meta = scene.metas[k]
        images.append({
            "name": scene.names[k], "file": names[k], "index": k, "placed": bool(scene.placed[k]),
            "width": W0, "height": H0, "network_width": int(W), "network_height": int(H),
            "K": K.tolist(), "K_original": K0.tolist(),
            "focal": 0.5 * (K[0, 0] + K[1, 1]), "focal_original": 0.5 * (K0[0, 0] + K0[1, 1]),
            "cam2world": c2w.tolist(), "world2cam": np.linalg.inv(c2w).tolist(),
            "crop_box": list(meta.crop_box) if meta is not None else None,
            "resized_size": list(meta.resized_size) if meta is not None else None,
            "points_kept": kept[k], "points_total": int(H * W),
        })
    convention = dict(CONVENTION)
    if is_metric(scene):
        convention["units"] = "metres for translations (a metric network's scale); pixels for intrinsics"
    return {"convention": convention, **units_fields(scene),
            "conf_threshold": float(scene.conf_threshold), "images": images}


def export_cameras(
    scene: Scene, path: str | os.PathLike, image_names: Sequence[str] | None = None
) -> Path:
    """Write :func:`cameras_dict` of ``scene`` to the JSON file ``path``, atomically; returns it."""
    path = Path(path)
    write_json(path, cameras_dict(scene, image_names))
    return path
