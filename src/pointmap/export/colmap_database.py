"""Pixel matches as a COLMAP database (keypoints, matches, verified two-view geometries), so that
COLMAP's or GLOMAP's mappers and bundle adjustment can run on them (needs ``pycolmap``).

What is written, per image ``k`` (``CAMERA_ID = IMAGE_ID = k + 1``, the ids of
:mod:`pointmap.export.colmap`'s models, so a model written from the same scene serves as an
initial model): one camera (``PINHOLE`` from the given intrinsics, else ``SIMPLE_RADIAL`` with a
focal guess), a trivial rig and frame, the keypoints (every distinct matched pixel of the image),
then per unordered image pair the matches (keypoint index pairs) and the two-view geometry that
COLMAP's RANSAC (``pycolmap.estimate_two_view_geometry``) verifies among them.

Pixel convention: pointmap puts the centre of the top-left pixel at ``(0, 0)``, COLMAP at
``(0.5, 0.5)``: keypoints and principal points are shifted by ``+0.5``
(:func:`pointmap.geometry.camera.pixels_to_corner_origin`,
:func:`pointmap.formats.colmap.pinhole_camera`).

:func:`export_colmap_database` writes, from a :class:`~pointmap.scene.Scene` and the pixel matches of
its pairs (network pixels, mapped here to the original images' pixels), into one folder:

* ``database.db``: the database above, one camera per image with the scene's intrinsics at original
  resolution (``PINHOLE``), image names as :func:`~pointmap.export.common.image_file_names`;
* ``init/`` (``cameras.txt``, ``images.txt``, ``points3D.txt``): the aligned cameras as an initial
  COLMAP model, written by :func:`pointmap.formats.colmap.write_colmap_text`: the placed images with
  their poses and intrinsics, the same camera and image ids as the database, and as ``POINTS2D``
  each image's keypoints of the database (in the same order, no 3-D point yet); ``points3D.txt``
  is empty. COLMAP's ``point_triangulator --input_path init`` triangulates the matches with these
  poses kept fixed; ``mapper --input_path init`` continues from them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import OutputExistsError, PointmapError, install_hint
from ..formats.colmap import pinhole_camera, write_colmap_text
from ..geometry.camera import pixels_to_corner_origin
from ..scene import Scene
from .colmap import build_colmap_model
from .common import image_file_names, original_intrinsics, original_pixels, original_size

__all__ = ["DatabaseSummary", "export_colmap_database", "require_pycolmap", "write_colmap_database"]

#: What to install for the COLMAP database (the ``colmap`` extra of pyproject.toml).


@dataclass
class DatabaseSummary:
    """What :func:`write_colmap_database` wrote.

    Attributes:
        path: the database file.
        keypoints: per image, the number of keypoints.
        keypoint_xy: per image ``(K, 2)`` float64 keypoint coordinates ``(x, y)`` in the order of
            the database, pointmap pixels (centres at integers; the database holds them ``+0.5``).
        matches: per unordered pair ``(i, j)``, ``i < j``, the number of matches.
        inliers: per unordered pair, the number of matches the two-view geometry verified (0: none).
    """

    path: Path
    keypoints: list[int] = field(default_factory=list)
    keypoint_xy: list[np.ndarray] = field(default_factory=list)
    matches: dict[tuple[int, int], int] = field(default_factory=dict)
    inliers: dict[tuple[int, int], int] = field(default_factory=dict)


def require_pycolmap(what: str = "writing a COLMAP database"):
    """The ``pycolmap`` module; :class:`~pointmap.errors.PointmapError` naming what to install
    when it is absent (``what`` names what needs it, for the message)."""
    try:
        import pycolmap
    except ImportError:
        raise PointmapError(f"{what} needs pycolmap: {install_hint('colmap')} (or pip install pycolmap)") from None
    return pycolmap


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def write_colmap_database(
    path: str | os.PathLike,
    names: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    matches: Mapping[tuple[int, int], tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]],
    intrinsics: torch.Tensor | np.ndarray | None = None,
    verify: bool = True,
    overwrite: bool = False,
) -> DatabaseSummary:
    """Write pixel matches into a new COLMAP database.

    Args:
        path: the database file (``.db``); an existing file is refused unless ``overwrite``.
        names: ``N`` image file names (as COLMAP will look them up in its image folder).
        sizes: per image ``(W, H)`` in pixels.
        matches: per ordered or unordered pair ``(i, j)``: ``(xy_i (M, 2), xy_j (M, 2))`` pixel
            coordinates ``(x, y)`` (integer or float, pixel centres at integers) in the images'
            pixels; ``(i, j)`` and ``(j, i)`` are merged.
        intrinsics: ``(N, 3, 3)`` pinhole intrinsics in the same pixels (pixel centres at
            integers), or ``None`` (COLMAP estimates the cameras).
        verify: estimate and write the two-view geometries (RANSAC); without, only matches.
        overwrite: replace an existing database file.

    Returns:
        :class:`DatabaseSummary` with the counts written.
    """
    pycolmap = require_pycolmap()
    path = Path(path)
    n = len(names)
    if len(sizes) != n:
        raise ValueError(f"{len(sizes)} sizes for {n} images")
    if path.exists():
        if not overwrite:
            raise OutputExistsError(f"COLMAP database {path} exists; pass overwrite=True to replace it")
        path.unlink()
    # keypoints: the distinct matched pixels of each image
    per_pair: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    pix: list[list[np.ndarray]] = [[] for _ in range(n)]
    for (i, j), (a, b) in matches.items():
        a, b = _np(a).astype(np.float64).reshape(-1, 2), _np(b).astype(np.float64).reshape(-1, 2)
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"pair {(i, j)} is not two distinct images in [0, {n})")
        if len(a) != len(b):
            raise ValueError(f"pair {(i, j)}: {len(a)} and {len(b)} matched pixels")
        if i > j:
            i, j, a, b = j, i, b, a
        per_pair.setdefault((i, j), []).append((a, b))
        pix[i].append(a)
        pix[j].append(b)
    kps, inverse = [], []
    for k in range(n):
        allp = np.concatenate(pix[k]) if pix[k] else np.zeros((0, 2))
        uniq, inv = np.unique(allp, axis=0, return_inverse=True)
        kps.append(uniq)
        inverse.append(inv.reshape(-1))
    offsets = [0] * n  # walk the per-image inverse indices in the order they were appended
    pair_idx: dict[tuple[int, int], np.ndarray] = {}
    for (i, j), lst in _in_append_order(matches):
        m = len(lst[0])
        ia = inverse[i][offsets[i]:offsets[i] + m]
        ib = inverse[j][offsets[j]:offsets[j] + m]
        offsets[i] += m
        offsets[j] += m
        idx = np.stack([ia, ib], -1)
        pair_idx[(i, j)] = idx if (i, j) not in pair_idx else np.concatenate([pair_idx[(i, j)], idx])
    summary = DatabaseSummary(path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = pycolmap.Database.open(str(path))
    try:
        cams = []
        for k in range(n):
            W, H = (int(v) for v in sizes[k])
            if intrinsics is not None:
                params = pinhole_camera(_np(intrinsics[k]).astype(np.float64), W, H).params
                cam = pycolmap.Camera(model="PINHOLE", width=W, height=H, camera_id=k + 1, params=params)
                cam.has_prior_focal_length = True
            else:
                cam = pycolmap.Camera(model="SIMPLE_RADIAL", width=W, height=H, camera_id=k + 1,
                                      params=[1.2 * max(W, H), W / 2, H / 2, 0.0])
            db.write_camera(cam, use_camera_id=True)
            rig = pycolmap.Rig(rig_id=k + 1)
            rig.add_ref_sensor(cam.sensor_id)
            db.write_rig(rig, use_rig_id=True)
            image = pycolmap.Image(name=str(names[k]), camera_id=k + 1, image_id=k + 1)
            db.write_image(image, use_image_id=True)
            frame = pycolmap.Frame(frame_id=k + 1, rig_id=k + 1)
            frame.add_data_id(image.data_id)
            db.write_frame(frame, use_frame_id=True)
            db.write_keypoints(k + 1, pixels_to_corner_origin(kps[k]).astype(np.float32))
            summary.keypoints.append(len(kps[k]))
            summary.keypoint_xy.append(kps[k])
            cams.append(cam)
        for (i, j), idx in sorted(pair_idx.items()):
            idx = np.unique(idx, axis=0).astype(np.uint32)
            db.write_matches(i + 1, j + 1, idx)
            summary.matches[(i, j)] = len(idx)
            if verify:
                tvg = pycolmap.estimate_two_view_geometry(
                    cams[i], pixels_to_corner_origin(kps[i]), cams[j], pixels_to_corner_origin(kps[j]), idx)
                db.write_two_view_geometry(i + 1, j + 1, tvg)
                summary.inliers[(i, j)] = len(tvg.inlier_matches)
    finally:
        db.close()
    return summary


def _in_append_order(matches: Mapping) -> list[tuple[tuple[int, int], tuple[np.ndarray, np.ndarray]]]:
    """The pairs of ``matches`` as (sorted pair, (xy_low, xy_high)) in the order they were read."""
    out = []
    for (i, j), (a, b) in matches.items():
        out.append(((i, j), (a, b)) if i < j else ((j, i), (b, a)))
    return out


def export_colmap_database(
    scene: Scene,
    folder: str | os.PathLike,
    matches: Mapping[tuple[int, int], tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]],
    image_names: Sequence[str] | None = None,
    verify: bool = True,
) -> dict[str, Path]:
    """Write ``database.db`` and the initial model ``init/`` of ``scene`` into ``folder`` (see the
    module docstring).

    Args:
        scene: the reconstruction (its poses and intrinsics; ``metas`` map pixels to the originals).
        folder: output folder (created if needed); an existing ``database.db`` is refused.
        matches: per pair of image indices ``(i, j)``: ``(xy_i (M, 2), xy_j (M, 2))`` pixel
            coordinates ``(x, y)`` at **network** resolution (e.g.
            :func:`pointmap.align.sparse.pair_matches`); ``(i, j)`` and ``(j, i)`` are merged.
        image_names: file names of the images as COLMAP finds them in its image folder (default
            :func:`~pointmap.export.common.image_file_names`).
        verify: estimate the two-view geometries (RANSAC).

    Returns:
        ``{"database": folder/database.db, "init": folder/init}``.
    """
    folder = Path(folder)
    n = len(scene)
    names = list(image_names) if image_names is not None else image_file_names(scene)
    orig = {}
    for (i, j), (a, b) in matches.items():
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"pair {(i, j)} is not two images of a scene of {n}")
        orig[(i, j)] = (original_pixels(scene, i, _np(a).reshape(-1, 2)),
                        original_pixels(scene, j, _np(b).reshape(-1, 2)))
    summary = write_colmap_database(folder / "database.db", names, [original_size(scene, k) for k in range(n)],
                                    orig, intrinsics=original_intrinsics(scene), verify=verify)
    model = build_colmap_model(scene, max_points=0, track_views=False, image_names=names)
    for im in model.images:
        kp = summary.keypoint_xy[im.image_id - 1]
        im.xys = pixels_to_corner_origin(kp)
        im.point3d_ids = np.full(len(kp), -1, np.int64)
    (folder / "init").mkdir(parents=True, exist_ok=True)
    write_colmap_text(model, folder / "init")
    return {"database": summary.path, "init": folder / "init"}
