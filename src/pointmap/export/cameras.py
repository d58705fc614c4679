"""Cameras as JSON: intrinsics at network and original resolution and both pose directions, in
the layout of :mod:`pointmap.formats.cameras_json` (its reader sits beside its writer there)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import to_numpy
from ..formats.cameras_json import CONVENTION, camera_entry, write_cameras_json
from ..scene import Scene
from .common import image_file_names, is_metric, original_intrinsics, original_size, units_fields

__all__ = ["cameras_dict", "export_cameras"]


def _entries(scene: Scene, names: Sequence[str]) -> list[dict[str, Any]]:
    """The ``images`` entries of ``scene``'s cameras (one per image, in order)."""
    K_orig, kept = original_intrinsics(scene), scene.kept_counts()
    out = []
    for k in range(len(scene)):
        H, W = scene.depths[k].shape
        meta = scene.metas[k]
        out.append(camera_entry(
            scene.names[k], names[k], k, bool(scene.placed[k]), to_numpy(scene.intrinsics[k], np.float64),
            K_orig[k], to_numpy(scene.poses[k], np.float64), original_size(scene, k), (int(W), int(H)),
            meta.crop_box if meta is not None else None, meta.resized_size if meta is not None else None,
            (kept[k], int(H * W))))
    return out


def _header(scene: Scene) -> dict[str, Any]:
    """The file's fields besides ``images``: convention, units and the confidence threshold."""
    convention = dict(CONVENTION)
    if is_metric(scene):
        convention["units"] = "metres for translations (a metric network's scale); pixels for intrinsics"
    return {"convention": convention, **units_fields(scene), "conf_threshold": float(scene.conf_threshold)}


def cameras_dict(scene: Scene, image_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON-ready description of the cameras of ``scene`` (layout:
    :mod:`pointmap.formats.cameras_json`)."""
    names = list(image_names) if image_names is not None else image_file_names(scene)
    return {**_header(scene), "images": _entries(scene, names)}


def export_cameras(
    scene: Scene, path: str | os.PathLike, image_names: Sequence[str] | None = None
) -> Path:
    """Write :func:`cameras_dict` of ``scene`` to the JSON file ``path``, atomically; returns it."""
    data = cameras_dict(scene, image_names)
    return write_cameras_json(path, data.pop("images"), data)
