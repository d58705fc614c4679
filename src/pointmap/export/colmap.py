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
    image_colours,
    image_file_names,
    image_points,
    map_images,
    original_intrinsics,
    original_pixels,
    original_size,
    point_budget,
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
    workers: int | None = None,
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
        workers: threads for the per-image work (:func:`~pointmap.export.common.map_images`; the
            model does not depend on it).
    """
    names = list(image_names) if image_names is not None else image_file_names(scene)
    placed = [k for k in range(len(scene)) if bool(scene.placed[k])]
    masks = scene_masks(scene, workers=workers)
    model = ColmapModel(units_note=units_note(scene))
    Ks = original_intrinsics(scene)
    poses = to_numpy(scene.poses, np.float64)
    warn_dropped_skew(Ks[placed], "COLMAP's PINHOLE model")
    for k in placed:
        W0, H0 = original_size(scene, k)
        model.cameras[k + 1] = pinhole_camera(Ks[k], W0, H0)

    # candidate points: valid pixels (network resolution), subsampled per image in proportion to
    # its valid pixels (never every pixel of every image at once)
    budget = point_budget([masks[k] for k in placed], max_points)
    sources = map_images(lambda i: _source_points(scene, placed[i], masks[placed[i]], budget[i], seed + placed[i]),
                         len(placed), workers)
    src_img = np.concatenate([np.full(len(s[0]), k) for k, s in zip(placed, sources)]) if placed \
        else np.zeros(0, np.int64)
    xyz = np.concatenate([s[0] for s in sources]) if placed else np.zeros((0, 3))
    rgb = np.concatenate([s[1] for s in sources]) if placed else np.zeros((0, 3), np.uint8)
    M = len(src_img)
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
    start = 0
    for k, (pts, _, xy) in zip(placed, sources):
        sel = np.arange(start, start + len(pts))
        start += len(pts)
        observe(k, xy, sel)
        err_n[sel] += 1
    if track_views:
        looked_at = _nearest_views(poses, placed, max_track_views)
        seen_in = map_images(lambda i: _track_observations(scene, placed[i], masks[placed[i]], xyz, src_img,
                                                           looked_at[placed[i]], depth_tol),
                             len(placed), workers)
        for j, (idx, xy, err) in zip(placed, seen_in):  # in image order: the same sums as one loop
            observe(j, xy, idx)
            err_sum[idx] += err
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


def _source_points(
    scene: Scene, k: int, mask: np.ndarray, keep: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 3-D points drawn from image ``k`` (``keep`` of its valid pixels, :func:`sampled_pixels`
    with ``seed``): world points ``(P, 3)`` float64, colours ``(P, 3)`` uint8 and their pixels
    ``(P, 2)`` in COLMAP's original-resolution pixels."""
    idx = sampled_pixels(mask, keep, seed)
    W = mask.shape[1]
    uv = np.stack([idx % W, idx // W], 1)
    return (image_points(scene, k, idx), image_colours(scene, k, idx),
            pixels_to_corner_origin(original_pixels(scene, k, uv)))


def _track_observations(
    scene: Scene, j: int, mask: np.ndarray, xyz: np.ndarray, src_img: np.ndarray, sources: np.ndarray,
    depth_tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the points ``xyz`` ``(M, 3)`` drawn from the images ``sources`` (``src_img`` ``(M,)``:
    each point's image) are seen in image ``j``: inside it, in front, on a valid pixel whose depth
    agrees within ``depth_tol`` (relative). Returns the points' indices ``(P,)`` (ascending), their
    pixels ``(P, 2)`` there (the pixel centres, COLMAP's original-resolution pixels) and the
    distances ``(P,)`` in original pixels between the projections and those centres."""
    cand = np.nonzero(np.isin(src_img, sources))[0]  # points whose source looks into j
    w2c = np.linalg.inv(to_numpy(scene.poses[j], np.float64))
    Xc = xyz[cand] @ w2c[:3, :3].T + w2c[:3, 3]
    z = Xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = (Xc @ to_numpy(scene.intrinsics[j], np.float64).T)[:, :2] / z[:, None]  # network pixels
    H, W = mask.shape
    ui, vi = np.round(proj[:, 0]), np.round(proj[:, 1])
    ok = (src_img[cand] != j) & (z > 0) & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    loc = np.nonzero(ok)[0]
    ui, vi = ui[loc].astype(np.int64), vi[loc].astype(np.int64)
    dj = to_numpy(scene.depths[j])[vi, ui].astype(np.float64)
    good = mask[vi, ui] & (np.abs(z[loc] - dj) <= depth_tol * z[loc])
    loc, ui, vi = loc[good], ui[good], vi[good]
    seen = original_pixels(scene, j, np.stack([ui, vi], 1))
    err = np.linalg.norm(original_pixels(scene, j, proj[loc]) - seen, axis=1)
    return cand[loc], pixels_to_corner_origin(seen), err


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
