"""COLMAP sparse model (``cameras``, ``images``, ``points3D``) in binary or text format.

What is written, at ORIGINAL image resolution (intrinsics as :meth:`Scene.to_original` maps them):

* one ``PINHOLE`` camera per image (``fx fy cx cy``), ``CAMERA_ID = IMAGE_ID = index + 1``; only
  placed images are written (an unplaced image has no meaningful pose);
* images with the world-to-camera rotation as a unit quaternion ``QW QX QY QZ`` (``QW >= 0``) and
  translation ``TX TY TZ``, the image file name (see :func:`~pointmap.export.common.image_file_names`)
  and its ``POINTS2D``;
* ``points3D`` from a random subsample (``max_points``, fixed seed, drawn from every image in
  proportion to its valid pixels) of the valid pixels at network
  resolution, with their colour, a track and an error. The first track element is the pixel the
  point comes from. With ``track_views`` the point is also projected into the other placed images
  (at most ``max_track_views`` of them: those whose camera centres are nearest its source image's,
  so that tracks, and the model's memory, stay bounded with thousands of images);
  where it lands inside, on a valid (network) pixel whose depth agrees within ``depth_tol``
  (relative), the track gets that pixel's centre (in original pixels) and ``ERROR`` is the mean
  distance in original pixels between the projections and the observations over the track.

Units: the headers of ``images.txt`` and ``points3D.txt`` carry a comment line with the length unit
of ``TX TY TZ`` and ``X Y Z`` (:func:`~pointmap.export.common.units_note`): ``# units: metres (...)``
for a metric scene, ``# units: arbitrary scene units (...)`` otherwise (the binary format has no
place for it).

Pixel convention: COLMAP puts the centre of the top-left pixel at ``(0.5, 0.5)``; pointmap puts it at
``(0, 0)``. Hence ``cx_colmap = cx + 0.5``, ``cy_colmap = cy + 0.5`` and every 2-D point is shifted by
``+0.5`` (:func:`pointmap.geometry.camera.pixels_to_corner_origin`).

The format itself (the model in memory, its text and binary reader and writer, the pose and camera
conversions) is :mod:`pointmap.formats.colmap`; this module builds the model of a scene.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ..arrays import to_numpy
from ..errors import PointmapError
from ..formats.colmap import (
    PINHOLE_MODEL_ID,
    ColmapImage,
    ColmapModel,
    pinhole_camera,
    read_colmap_text,
    world_to_camera,
    write_colmap_binary,
    write_colmap_text,
)
from ..geometry.camera import pixels_to_corner_origin
from ..io_utils import atomic_write
from ..scene import Scene
from .common import (
    image_file_names,
    image_points,
    original_intrinsics,
    original_pixels,
    original_size,
    point_budget,
    rgb_uint8,
    sampled_pixels,
    scene_masks,
    units_note,
    warn_dropped_skew,
)

# the format's names stay importable from here, where the exporter's users have found them
__all__ = [
    "PINHOLE_MODEL_ID",
    "ColmapModel",
    "build_colmap_model",
    "export_colmap",
    "read_colmap_text",
    "write_colmap_binary",
    "write_colmap_text",
    "zip_model",
]


def build_colmap_model(
    scene: Scene,
    max_points: int = 100_000,
    track_views: bool = True,
    depth_tol: float = 0.02,
    seed: int = 0,
    image_names: Sequence[str] | None = None,
    max_track_views: int = 16,
) -> ColmapModel:
    """Assemble the sparse model of ``scene`` (see the module docstring).

    Args:
        scene: the reconstruction (network resolution; mapped to original pixels here).
        max_points: most 3-D points to keep (random subsample of the valid pixels, drawn from
            every image in proportion to its valid pixels).
        track_views: extend tracks to the other images where the point is consistently visible.
        depth_tol: relative depth agreement needed for such an extra observation.
        seed: seed of the subsample (image ``k`` uses ``seed + k``).
        image_names: file names for the images (default :func:`image_file_names`).
        max_track_views: a point is looked for in at most this many other images, those whose
            camera centres are nearest to its source image's (every other image when there are
            no more than this).
    """
    names = list(image_names) if image_names is not None else image_file_names(scene)
    placed = [k for k in range(len(scene)) if bool(scene.placed[k])]
    masks = scene_masks(scene)
    model = ColmapModel(units_note=units_note(scene))
    Ks_net = to_numpy(scene.intrinsics, np.float64)
    Ks = original_intrinsics(scene)
    poses = to_numpy(scene.poses, np.float64)
    warn_dropped_skew(Ks[placed], "COLMAP's PINHOLE model")
    for k in placed:
        W0, H0 = original_size(scene, k)
        model.cameras[k + 1] = pinhole_camera(Ks[k], W0, H0)

    # candidate points: valid pixels (network resolution), subsampled per image in proportion to
    # its valid pixels (never every pixel of every image at once)
    budget = point_budget([masks[k] for k in placed], max_points)
    src_img, src_uv = [], []
    for k, keep in zip(placed, budget):
        W = masks[k].shape[1]
        idx = sampled_pixels(masks[k], keep, seed + k)
        src_img.append(np.full(len(idx), k)); src_uv.append(np.stack([idx % W, idx // W], 1))
    src_img = np.concatenate(src_img) if src_img else np.zeros(0, np.int64)
    src_uv = np.concatenate(src_uv) if src_uv else np.zeros((0, 2), np.int64)
    M = len(src_img)
    xyz = np.zeros((M, 3)); rgb = np.zeros((M, 3), np.uint8)
    obs: dict[int, list[np.ndarray]] = {k: [] for k in placed}  # per image rows (x, y, point idx)
    n_obs = dict.fromkeys(placed, 0)
    track_img: list[np.ndarray] = []  # per observation: image index, point index, point2D index
    track_pt: list[np.ndarray] = []
    track_2d: list[np.ndarray] = []

    def observe(k: int, xy: np.ndarray, points: np.ndarray) -> None:
        obs[k].append(np.concatenate([xy, points[:, None]], 1).astype(np.float64))
        track_img.append(np.full(len(points), k)); track_pt.append(points)
        track_2d.append(np.arange(n_obs[k], n_obs[k] + len(points)))
        n_obs[k] += len(points)
    err_sum = np.zeros(M); err_n = np.zeros(M)
    for k in placed:
        sel = np.nonzero(src_img == k)[0]
        u, v = src_uv[sel, 0], src_uv[sel, 1]
        xyz[sel] = image_points(scene, k)[v, u]
        rgb[sel] = rgb_uint8(scene.imgs[k])[v, u]
        observe(k, pixels_to_corner_origin(original_pixels(scene, k, np.stack([u, v], 1))), sel)
        err_n[sel] += 1
    if track_views:
        looked_at = _nearest_views(poses, placed, max_track_views)
        for j in placed:
            cand = np.nonzero(np.isin(src_img, looked_at[j]))[0]  # points whose source looks into j
            w2c = np.linalg.inv(poses[j])
            Xc = xyz[cand] @ w2c[:3, :3].T + w2c[:3, 3]
            z = Xc[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                proj = (Xc @ Ks_net[j].T)[:, :2] / z[:, None]  # network pixels
            H, W = masks[j].shape
            ui, vi = np.round(proj[:, 0]), np.round(proj[:, 1])
            ok = (src_img[cand] != j) & (z > 0) & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
            loc = np.nonzero(ok)[0]
            ui, vi = ui[loc].astype(np.int64), vi[loc].astype(np.int64)
            dj = to_numpy(scene.depths[j], np.float64)[vi, ui]
            good = masks[j][vi, ui] & (np.abs(z[loc] - dj) <= depth_tol * z[loc])
            loc, ui, vi = loc[good], ui[good], vi[good]
            idx = cand[loc]
            seen = original_pixels(scene, j, np.stack([ui, vi], 1))
            observe(j, pixels_to_corner_origin(seen), idx)
            err_sum[idx] += np.linalg.norm(original_pixels(scene, j, proj[loc]) - seen, axis=1)
            err_n[idx] += 1
    # POINTS2D per image, and the track (image_id, point2D_idx) of every point
    for k in placed:
        rows = np.concatenate(obs[k]) if obs[k] else np.zeros((0, 3))
        R_qt = world_to_camera(poses[k])
        model.images.append(ColmapImage(
            image_id=k + 1, qvec=R_qt[0], tvec=R_qt[1], camera_id=k + 1, name=names[k],
            xys=rows[:, :2], point3d_ids=rows[:, 2].astype(np.int64) + 1,
        ))
    ti = np.concatenate(track_img) if track_img else np.zeros(0, np.int64)
    tp = np.concatenate(track_pt) if track_pt else np.zeros(0, np.int64)
    t2 = np.concatenate(track_2d) if track_2d else np.zeros(0, np.int64)
    order = np.argsort(tp, kind="stable")
    starts = np.searchsorted(tp[order], np.arange(M + 1))
    pairs = np.stack([ti[order] + 1, t2[order]], 1).astype(np.int64)
    model.tracks = [pairs[starts[i]:starts[i + 1]] for i in range(M)]
    model.point_ids = np.arange(1, M + 1, dtype=np.int64)
    model.xyz, model.rgb = xyz, rgb
    model.error = err_sum / np.maximum(err_n, 1)
    return model


def _nearest_views(poses: np.ndarray, placed: list[int], k: int) -> dict[int, np.ndarray]:
    """For every placed image ``j``, the source images (indices) whose ``k`` nearest other placed
    cameras (by centre distance) include ``j``; every placed image when there are few."""
    if len(placed) - 1 <= k:
        every = np.asarray(placed)
        return {j: every for j in placed}
    from scipy.spatial import cKDTree

    ids = np.asarray(placed)
    centres = poses[ids, :3, 3]
    _, near = cKDTree(centres).query(centres, k=k + 1)  # itself first (or a coincident camera)
    src = np.repeat(np.arange(len(ids)), k + 1)
    dst = near.ravel()
    keep = src != dst
    src, dst = ids[src[keep]], ids[dst[keep]]
    order = np.argsort(dst, kind="stable")
    src, dst = src[order], dst[order]
    bounds = np.searchsorted(dst, ids, side="left"), np.searchsorted(dst, ids, side="right")
    return {int(j): src[a:b] for j, a, b in zip(ids, *bounds)}


def export_colmap(
    scene: Scene,
    path: str | os.PathLike,
    fmt: Literal["bin", "txt"] = "bin",
    max_points: int = 100_000,
    track_views: bool = True,
    depth_tol: float = 0.02,
    image_names: Sequence[str] | None = None,
    model: ColmapModel | None = None,
) -> dict[str, Path]:
    """Write the COLMAP sparse model of ``scene`` into the folder ``path`` (created if needed).

    Args:
        scene: the reconstruction.
        path: model folder (e.g. ``sparse/0``).
        fmt: ``"bin"`` (``*.bin``) or ``"txt"`` (``*.txt``).
        max_points, track_views, depth_tol: see :func:`build_colmap_model`.
        image_names: file names of the images as COLMAP should find them in its image folder.
        model: an already built model (skips :func:`build_colmap_model`).

    Returns:
        ``{"cameras": Path, "images": Path, "points3D": Path}``.
    """
    if fmt not in ("bin", "txt"):
        raise PointmapError(f"COLMAP format must be 'bin' or 'txt', got {fmt!r}")
    if model is None:
        model = build_colmap_model(scene, max_points, track_views, depth_tol, image_names=image_names)
    Path(path).mkdir(parents=True, exist_ok=True)
    return (write_colmap_binary if fmt == "bin" else write_colmap_text)(model, path)


def zip_model(folder: str | os.PathLike, zip_path: str | os.PathLike) -> Path:
    """Bundle every file under ``folder`` into ``zip_path`` (paths relative to ``folder``), atomically."""
    folder, zip_path = Path(folder), Path(zip_path)
    if not folder.is_dir():
        raise PointmapError(f"cannot zip {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.resolve() != zip_path.resolve())
    with atomic_write(zip_path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, p.relative_to(folder).as_posix())
    return zip_path
