"""Cameras as a nerfstudio ``transforms.json`` (also readable by instant-ngp style loaders).

Conventions written (nerfstudio "data conventions"):

* ``transform_matrix``: camera-to-world ``4x4`` with OpenGL/Blender camera axes (x right, y up,
  z back, looking along -z): ``cam2world_gl = cam2world_cv @ diag(1, -1, -1, 1)``, i.e. the y and z
  columns of the rotation are negated (:func:`pointmap.geometry.camera.opencv_opengl_flip`). The
  world frame is the scene's own (not re-oriented).
* intrinsics ``fl_x fl_y cx cy w h`` at the original image resolution (:meth:`Scene.to_original`);
  ``file_path`` points to a copy of the original file, or, for an image known only in memory, to a
  PNG of the network colours resampled onto the original pixel grid.
* nerfstudio generates the ray of pixel ``(i, j)`` through ``(i + 0.5, j + 0.5)``: the image spans
  ``[0, w] x [0, h]`` and the centre of the first pixel is at ``0.5`` (as in COLMAP). pointmap puts
  pixel centres at integers, hence ``cx_nerfstudio = cx + 0.5`` and ``cy_nerfstudio = cy + 0.5``
  (:func:`pointmap.geometry.camera.intrinsics_to_corner_origin`).
* ``camera_model: "OPENCV"`` with zero distortion (``k1 k2 p1 p2``). Intrinsics shared by all frames
  are written once at the top level; otherwise every frame carries its own.
* only placed images are written.
* the length unit of ``transform_matrix`` translations, beside nerfstudio's keys (which it ignores):
  ``"units"`` (``"metres"`` for a metric scene, else ``"scene"``: arbitrary), ``"metric"`` and
  ``"units_note"`` (:func:`~pointmap.export.common.units_fields`).

The file's reader and writer are :mod:`pointmap.formats.nerfstudio`; this module gathers a scene's
frames and copies its images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import to_numpy
from ..formats.nerfstudio import TransformsFrame, write_transforms
from ..scene import Scene
from .common import (
    copy_image,
    image_file_names,
    original_colours,
    original_intrinsics,
    original_size,
    source_image_path,
    units_fields,
    warn_dropped_skew,
)

__all__ = ["export_nerfstudio"]


def export_nerfstudio(
    scene: Scene,
    path: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike | None] | None = None,
    images_subdir: str = "images",
    copy_images: bool = True,
    ply_file_path: str | None = None,
) -> Path:
    """Write ``transforms.json`` (and the images it points to) for ``scene``.

    Args:
        scene: the reconstruction.
        path: the output ``transforms.json`` path; images go to ``<its folder>/<images_subdir>``.
        image_paths: original files per image, overriding ``scene.metas[k].path``.
        images_subdir: image folder, relative to the json.
        copy_images: copy the originals (EXIF orientation baked in) / write network images. With
            ``False`` nothing is copied and ``file_path`` still names ``<images_subdir>/<name>``.
        ply_file_path: optional point cloud path relative to the json (nerfstudio's
            ``ply_file_path``, used to initialise splatting), e.g. ``"points.ply"``.

    Returns:
        ``path``.
    """
    path = Path(path)
    root = path.parent
    names = image_file_names(scene, image_paths)
    K_orig = original_intrinsics(scene)
    frames: list[TransformsFrame] = []
    for k in range(len(scene)):
        if not bool(scene.placed[k]):
            continue
        rel = f"{images_subdir}/{names[k]}"
        if copy_images:
            src = source_image_path(scene, k, image_paths)
            copy_image(src, root / rel, fallback=original_colours(scene, k) if src is None else None)
        frames.append(TransformsFrame(rel, to_numpy(scene.poses[k], np.float64), K_orig[k],
                                      original_size(scene, k)))
    warn_dropped_skew(np.stack([fr.K for fr in frames]) if frames else K_orig[:0], "transforms.json")
    extra: dict[str, Any] = {} if ply_file_path is None else {"ply_file_path": ply_file_path}
    write_transforms(path, frames, {**extra, **units_fields(scene)})
    return path
