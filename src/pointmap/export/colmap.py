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
``+0.5``.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import roma
import torch

from ..arrays import to_numpy
from ..errors import PointmapError
from ..io_utils import atomic_write, atomic_write_bytes, atomic_write_text
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
)

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

PINHOLE_MODEL_ID = 1
_NO_POINT = np.uint64(2**64 - 1)  # "no 3D point" in images.bin (-1 in images.txt)


@dataclass
class ColmapImage:
    """One registered image: world-to-camera ``qvec`` ``(4,)`` (w, x, y, z) and ``tvec`` ``(3,)``,
    2-D points ``xys`` ``(P, 2)`` in COLMAP pixels and their ``point3d_ids`` ``(P,)`` (-1: none)."""

    image_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray
    point3d_ids: np.ndarray


@dataclass
class ColmapModel:
    """A sparse model in memory.

    Attributes:
        cameras: ``camera_id -> (width, height, params (4,) fx fy cx cy)``, PINHOLE, COLMAP pixels.
        images: registered images.
        point_ids: ``(M,)`` int64 ids; xyz ``(M, 3)`` float64; rgb ``(M, 3)`` uint8; error ``(M,)``
            float64 pixels; tracks: per point ``(T, 2)`` int64 ``(image_id, point2D_idx)``.
        units_note: the line stating the length unit (:func:`~pointmap.export.common.units_note`;
            empty: unknown), written as a comment in the text format.
    """

    cameras: dict[int, tuple[int, int, np.ndarray]] = field(default_factory=dict)
    images: list[ColmapImage] = field(default_factory=list)
    point_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))
    error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tracks: list[np.ndarray] = field(default_factory=list)
    units_note: str = ""


def _world2cam_qt(cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = cam2world[:3, :3].T
    t = -R @ cam2world[:3, 3]
    xyzw = roma.rotmat_to_unitquat(torch.from_numpy(R)).numpy()
    q = np.array([xyzw[3], xyzw[0], xyzw[1], xyzw[2]])
    return (q if q[0] >= 0 else -q), t


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
    for k in placed:
        W0, H0 = original_size(scene, k)
        K = Ks[k]
        model.cameras[k + 1] = (int(W0), int(H0), np.array([K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5]))

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
        observe(k, original_pixels(scene, k, np.stack([u, v], 1)) + 0.5, sel)
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
            observe(j, seen + 0.5, idx)
            err_sum[idx] += np.linalg.norm(original_pixels(scene, j, proj[loc]) - seen, axis=1)
            err_n[idx] += 1
    # POINTS2D per image, and the track (image_id, point2D_idx) of every point
    for k in placed:
        rows = np.concatenate(obs[k]) if obs[k] else np.zeros((0, 3))
        R_qt = _world2cam_qt(poses[k])
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


_POINT_HEAD = np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("n", "<u8")])
"""One ``points3D.bin`` record before its track (51 bytes, no padding)."""


def _points3d_records(model: ColmapModel) -> bytes:
    """The ``points3D.bin`` records of every point (without the leading count), built at once:
    per point its fixed-size head then its track ``(T, 2)`` as little-endian uint32."""
    M = len(model.point_ids)
    if M == 0:
        return b""
    lens = np.array([len(t) for t in model.tracks], np.int64)
    head = np.empty(M, _POINT_HEAD)
    head["id"], head["xyz"], head["rgb"] = model.point_ids, model.xyz, model.rgb
    head["error"], head["n"] = model.error, lens
    tracks = np.concatenate([np.asarray(t).reshape(-1, 2) for t in model.tracks]).astype("<u4")
    # which byte of the output is a head byte: segments alternate head (51 bytes) and track
    seg = np.stack([np.full(M, _POINT_HEAD.itemsize), 8 * lens], 1).ravel()
    is_head = np.repeat(np.tile(np.array([True, False]), M), seg)
    out = np.empty(len(is_head), np.uint8)
    out[is_head] = head.view(np.uint8)
    out[~is_head] = tracks.view(np.uint8).ravel()
    return out.tobytes()


def write_colmap_binary(model: ColmapModel, folder: str | os.PathLike) -> dict[str, Path]:
    """Write ``cameras.bin``, ``images.bin``, ``points3D.bin`` (little-endian) into ``folder``."""
    folder = Path(folder)
    cams = io.BytesIO()
    cams.write(struct.pack("<Q", len(model.cameras)))
    for cid, (w, h, params) in sorted(model.cameras.items()):
        cams.write(struct.pack("<iiQQ", cid, PINHOLE_MODEL_ID, w, h))
        cams.write(np.asarray(params, "<f8").tobytes())
    imgs = io.BytesIO()
    imgs.write(struct.pack("<Q", len(model.images)))
    for im in model.images:
        imgs.write(struct.pack("<I", im.image_id))
        imgs.write(np.concatenate([im.qvec, im.tvec]).astype("<f8").tobytes())
        imgs.write(struct.pack("<I", im.camera_id))
        imgs.write(im.name.encode("utf-8") + b"\x00")
        imgs.write(struct.pack("<Q", len(im.xys)))
        rec = np.empty(len(im.xys), dtype=[("xy", "<f8", 2), ("id", "<u8")])
        rec["xy"] = im.xys
        rec["id"] = np.where(im.point3d_ids < 0, _NO_POINT, im.point3d_ids.astype(np.uint64))
        imgs.write(rec.tobytes())
    pts = io.BytesIO()
    pts.write(struct.pack("<Q", len(model.point_ids)))
    pts.write(_points3d_records(model))
    out = {}
    for name, buf in (("cameras", cams), ("images", imgs), ("points3D", pts)):
        out[name] = folder / f"{name}.bin"
        atomic_write_bytes(out[name], buf.getvalue())
    return out


def _points3d_lines(model: ColmapModel) -> list[str]:
    """One ``points3D.txt`` line per point (``repr`` of every float, as :func:`write_colmap_text`):
    the points of one track length share a format string, so each line is one ``%`` operation."""
    M = len(model.point_ids)
    lens = np.array([len(t) for t in model.tracks], np.int64)
    flat = (np.concatenate([np.asarray(t, np.int64).reshape(-1) for t in model.tracks])
            if M else np.zeros(0, np.int64))
    starts = np.concatenate([[0], np.cumsum(2 * lens)[:-1]]) if M else np.zeros(0, np.int64)
    xyz, rgb = np.asarray(model.xyz, np.float64), np.asarray(model.rgb).astype(np.int64)
    err = np.asarray(model.error, np.float64)
    lines: list[str] = [""] * M
    for L in np.unique(lens).tolist():
        sel = np.nonzero(lens == L)[0]
        track = flat[starts[sel][:, None] + np.arange(2 * L)]
        cols = [model.point_ids[sel], xyz[sel, 0], xyz[sel, 1], xyz[sel, 2], rgb[sel, 0], rgb[sel, 1],
                rgb[sel, 2], err[sel], *track.T]
        fmt = "%d %r %r %r %d %d %d %r" + " %d" * (2 * L)  # %r of a Python float is its repr
        for i, text in zip(sel.tolist(), map(fmt.__mod__, zip(*(c.tolist() for c in cols)))):
            lines[i] = text
    return lines


def write_colmap_text(model: ColmapModel, folder: str | os.PathLike) -> dict[str, Path]:
    """Write ``cameras.txt``, ``images.txt``, ``points3D.txt`` into ``folder``."""
    folder = Path(folder)
    units = [f"# {model.units_note}"] if model.units_note else []

    def f(x: float) -> str:  # shortest text that reads back as the same float
        return repr(float(x))

    cams = ["# Camera list with one line of data per camera:",
            "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
            f"# Number of cameras: {len(model.cameras)}"]
    for cid, (w, h, params) in sorted(model.cameras.items()):
        cams.append(" ".join([str(cid), "PINHOLE", str(w), str(h), *map(f, params)]))
    n_obs = sum(len(im.xys) for im in model.images)
    imgs = ["# Image list with two lines of data per image:",
            "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
            "#   POINTS2D[] as (X, Y, POINT3D_ID)",
            (f"# Number of images: {len(model.images)}, mean observations per image: "
             f"{n_obs / max(len(model.images), 1)}"), *units]
    for im in model.images:
        if any(c.isspace() for c in im.name):
            raise PointmapError(f"image name {im.name!r} contains spaces; COLMAP text cannot hold it")
        imgs.append(" ".join([str(im.image_id), *map(f, im.qvec), *map(f, im.tvec),
                              str(im.camera_id), im.name]))
        xys = np.asarray(im.xys, np.float64).reshape(-1, 2)
        rows = zip(xys[:, 0].tolist(), xys[:, 1].tolist(), np.asarray(im.point3d_ids).tolist())
        imgs.append(" ".join(map("%r %r %d".__mod__, rows)))  # %r of a float: repr, as f()
    mean_track = np.mean([len(t) for t in model.tracks]) if model.tracks else 0.0
    pts = ["# 3D point list with one line of data per point:",
           "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
           f"# Number of points: {len(model.point_ids)}, mean track length: {mean_track}", *units]
    pts += _points3d_lines(model)
    out = {}
    for name, lines in (("cameras", cams), ("images", imgs), ("points3D", pts)):
        out[name] = folder / f"{name}.txt"
        atomic_write_text(out[name], "\n".join(lines) + "\n")
    return out


def read_colmap_text(folder: str | os.PathLike) -> ColmapModel:
    """Read a text model written by :func:`write_colmap_text` (PINHOLE cameras only)."""
    folder = Path(folder)
    data = lambda name: [
        ln for ln in (folder / f"{name}.txt").read_text().splitlines() if not ln.startswith("#")
    ]
    model = ColmapModel()
    notes = [ln[2:] for ln in (folder / "images.txt").read_text().splitlines() if ln.startswith("# units:")]
    model.units_note = notes[0] if notes else ""
    for ln in data("cameras"):
        tok = ln.split()
        if tok[1] != "PINHOLE":
            raise PointmapError(f"{folder / 'cameras.txt'}: camera model {tok[1]} is not PINHOLE")
        model.cameras[int(tok[0])] = (int(tok[2]), int(tok[3]), np.array(tok[4:8], dtype=np.float64))
    lines = data("images")
    for head, body in zip(lines[0::2], lines[1::2]):
        tok = head.split()
        vals = np.array(body.split(), dtype=np.float64).reshape(-1, 3)
        model.images.append(ColmapImage(
            image_id=int(tok[0]), qvec=np.array(tok[1:5], np.float64), tvec=np.array(tok[5:8], np.float64),
            camera_id=int(tok[8]), name=tok[9], xys=vals[:, :2], point3d_ids=vals[:, 2].astype(np.int64),
        ))
    ids, xyz, rgb, err, tracks = [], [], [], [], []
    for ln in data("points3D"):
        tok = ln.split()
        ids.append(int(tok[0])); xyz.append([float(x) for x in tok[1:4]])
        rgb.append([int(c) for c in tok[4:7]]); err.append(float(tok[7]))
        tracks.append(np.array(tok[8:], dtype=np.int64).reshape(-1, 2))
    model.point_ids = np.array(ids, np.int64)
    model.xyz = np.array(xyz, np.float64).reshape(-1, 3)
    model.rgb = np.array(rgb, np.uint8).reshape(-1, 3)
    model.error = np.array(err, np.float64)
    model.tracks = tracks
    return model


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
