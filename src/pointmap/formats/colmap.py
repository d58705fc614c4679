"""COLMAP sparse models (``cameras``, ``images``, ``points3D``), text and binary: reader and writer.

In memory (:class:`ColmapModel`) every value is what the files hold, in COLMAP's conventions:
world-to-camera poses as a unit quaternion ``QW QX QY QZ`` and a translation ``TX TY TZ``; pixel
coordinates with the image's origin at the top-left pixel's outer corner, so the centre of the
first pixel is ``(0.5, 0.5)``. The conversions to pointmap's conventions (camera-to-world poses in
OpenCV axes, pixel centres at integers) are the functions of the "conventions" block below; the
half-pixel shift itself is :func:`pointmap.geometry.camera.intrinsics_to_corner_origin` and its
siblings.

The reader takes every COLMAP camera model (:data:`CAMERA_MODELS`); the writer writes the models
it is given (pointmap writes ``PINHOLE``). Text files carry a ``# units: ...`` comment line when
:attr:`ColmapModel.units_note` is set (the binary format has no place for it). Long because it
holds both directions of both encodings of one format.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import roma
import torch

from ..errors import FormatError
from ..geometry.camera import intrinsics_from_corner_origin, intrinsics_to_corner_origin
from ..io_utils import atomic_write_bytes, atomic_write_text

__all__ = [
    "CAMERA_MODELS",
    "PINHOLE_MODEL_ID",
    "ColmapCamera",
    "ColmapImage",
    "ColmapModel",
    "camera_intrinsics",
    "camera_to_world",
    "pinhole_camera",
    "read_colmap_binary",
    "read_colmap_model",
    "read_colmap_text",
    "world_to_camera",
    "write_colmap_binary",
    "write_colmap_text",
]

#: COLMAP camera models: id -> (name, number of parameters).
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
}
_BY_NAME = {name: (mid, n) for mid, (name, n) in CAMERA_MODELS.items()}
_FISHEYE = {"OPENCV_FISHEYE", "FOV", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE", "THIN_PRISM_FISHEYE"}
PINHOLE_MODEL_ID = 1
_NO_POINT = np.uint64(2**64 - 1)  # "no 3D point" in images.bin (-1 in images.txt)


class ColmapCamera(NamedTuple):
    """One camera: ``width``, ``height`` (pixels), ``params`` ``(P,)`` float64 in COLMAP pixels
    (``fx fy cx cy`` for ``PINHOLE``), and the ``model`` name (:data:`CAMERA_MODELS`)."""

    width: int
    height: int
    params: np.ndarray
    model: str = "PINHOLE"


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
        cameras: ``camera_id -> ColmapCamera``.
        images: registered images.
        point_ids: ``(M,)`` int64 ids; xyz ``(M, 3)`` float64; rgb ``(M, 3)`` uint8; error ``(M,)``
            float64 pixels; tracks: per point ``(T, 2)`` int64 ``(image_id, point2D_idx)``.
        units_note: the line stating the length unit (empty: unknown), a comment in the text files.
    """

    cameras: dict[int, ColmapCamera] = field(default_factory=dict)
    images: list[ColmapImage] = field(default_factory=list)
    point_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))
    error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tracks: list[np.ndarray] = field(default_factory=list)
    units_note: str = ""


# ----------------------------------------------------------------------------- conventions
def pinhole_camera(K: np.ndarray, width: int, height: int) -> ColmapCamera:
    """The ``PINHOLE`` camera of intrinsics ``K`` ``(3, 3)`` (pixels, centres at integers; skew,
    which ``PINHOLE`` cannot hold, is dropped) for an image of ``width x height`` pixels."""
    Kc = intrinsics_to_corner_origin(np.asarray(K, np.float64))
    return ColmapCamera(int(width), int(height), Kc[[0, 1, 0, 1], [0, 1, 2, 2]].copy())


def camera_intrinsics(camera: ColmapCamera, where: str = "COLMAP camera") -> tuple[np.ndarray, bool]:
    """``(K (3, 3), distorted)``: the pinhole part of ``camera`` in pointmap pixels (centres at
    integers) and whether its model has non-zero distortion parameters (which ``K`` leaves out).

    Raises:
        FormatError: a fisheye model (no pinhole part), or a wrong number of parameters.
    """
    name, p = camera.model, [float(x) for x in camera.params]
    if name in _FISHEYE:
        raise FormatError(f"{where}: camera model {name} is a fisheye model; undistort the images "
                          "(colmap image_undistorter) and pass the undistorted model")
    if name not in _BY_NAME or len(p) != _BY_NAME[name][1]:
        raise FormatError(f"{where}: camera model {name} with {len(p)} parameters is not a COLMAP camera")
    if name in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        (fx, cx, cy), rest = p[:3], p[3:]
        fy = fx
    else:  # PINHOLE, OPENCV, FULL_OPENCV
        (fx, fy, cx, cy), rest = p[:4], p[4:]
    K = intrinsics_from_corner_origin(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]))
    return K, any(x != 0.0 for x in rest)


def world_to_camera(cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(qvec (4,), tvec (3,))`` of a camera-to-world pose ``(4, 4)`` (OpenCV axes, as COLMAP's):
    the world-to-camera rotation as a unit quaternion ``(w, x, y, z)`` with ``w >= 0``."""
    R = cam2world[:3, :3].T
    t = -R @ cam2world[:3, 3]
    x, y, z, w = roma.rotmat_to_unitquat(torch.from_numpy(np.ascontiguousarray(R))).tolist()
    q = np.array([w, x, y, z])
    return (q if q[0] >= 0 else -q), t


def camera_to_world(qvec: Sequence[float], tvec: Sequence[float]) -> np.ndarray:
    """The camera-to-world pose ``(4, 4)`` of a COLMAP image's ``qvec`` (normalised here) and
    ``tvec``: the inverse of :func:`world_to_camera`."""
    w, x, y, z = np.asarray(qvec, np.float64) / np.linalg.norm(qvec)
    R = roma.unitquat_to_rotmat(torch.tensor([x, y, z, w], dtype=torch.float64)).numpy()
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ np.asarray(tvec, np.float64)
    return c2w


# ----------------------------------------------------------------------------- writers
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


def _model_id(camera: ColmapCamera, cid: int) -> int:
    if camera.model not in _BY_NAME or len(camera.params) != _BY_NAME[camera.model][1]:
        raise FormatError(f"camera {cid}: model {camera.model} with {len(camera.params)} parameters "
                          "is not a COLMAP camera")
    return _BY_NAME[camera.model][0]


def write_colmap_binary(model: ColmapModel, folder: str | os.PathLike) -> dict[str, Path]:
    """Write ``cameras.bin``, ``images.bin``, ``points3D.bin`` (little-endian) into ``folder``."""
    folder = Path(folder)
    cams = io.BytesIO()
    cams.write(struct.pack("<Q", len(model.cameras)))
    for cid, cam in sorted(model.cameras.items()):
        cams.write(struct.pack("<iiQQ", cid, _model_id(cam, cid), cam.width, cam.height))
        cams.write(np.asarray(cam.params, "<f8").tobytes())
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
    """Write ``cameras.txt``, ``images.txt``, ``points3D.txt`` into ``folder`` (every float as the
    shortest text that reads back as the same float)."""
    folder = Path(folder)
    units = [f"# {model.units_note}"] if model.units_note else []

    def f(x: float) -> str:
        return repr(float(x))

    cams = ["# Camera list with one line of data per camera:",
            "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
            f"# Number of cameras: {len(model.cameras)}"]
    for cid, cam in sorted(model.cameras.items()):
        _model_id(cam, cid)
        cams.append(" ".join([str(cid), cam.model, str(cam.width), str(cam.height), *map(f, cam.params)]))
    n_obs = sum(len(im.xys) for im in model.images)
    imgs = ["# Image list with two lines of data per image:",
            "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
            "#   POINTS2D[] as (X, Y, POINT3D_ID)",
            (f"# Number of images: {len(model.images)}, mean observations per image: "
             f"{n_obs / max(len(model.images), 1)}"), *units]
    for im in model.images:
        if any(c.isspace() for c in im.name):
            raise FormatError(f"image name {im.name!r} contains spaces; COLMAP text cannot hold it")
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


# ----------------------------------------------------------------------------- readers
def _text_lines(path: Path) -> list[str]:
    """The lines of ``path`` that are not comments (blank ones kept: an image may have no points)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read {path}: {exc}") from None
    return [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]


def _text_cameras(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for ln in _text_lines(path):
        tok = ln.split()
        if not tok:
            continue
        try:
            n = _BY_NAME[tok[1]][1]
            if len(tok) != 4 + n:
                raise ValueError
            cams[int(tok[0])] = ColmapCamera(int(tok[2]), int(tok[3]), np.array(tok[4:], np.float64), tok[1])
        except (KeyError, IndexError, ValueError):
            raise FormatError(f"{path}: cannot read camera line {ln!r}") from None
    return cams


def _text_images(path: Path, points: bool) -> list[ColmapImage]:
    rows, images, k = _text_lines(path), [], 0
    while k < len(rows):
        head, k = rows[k], k + 1
        if not head.strip():
            continue
        body, k = (rows[k] if k < len(rows) else ""), k + 1
        tok = head.split()
        try:  # IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, then POINTS2D[] as (X, Y, POINT3D_ID)
            if len(tok) < 10:
                raise ValueError
            vals = np.array(body.split() if points else [], np.float64).reshape(-1, 3)
            images.append(ColmapImage(
                image_id=int(tok[0]), qvec=np.array(tok[1:5], np.float64), tvec=np.array(tok[5:8], np.float64),
                camera_id=int(tok[8]), name=" ".join(tok[9:]), xys=vals[:, :2],
                point3d_ids=vals[:, 2].astype(np.int64)))
        except ValueError:
            raise FormatError(f"{path}: cannot read image {head!r} or its points") from None
    return images


def _text_points(path: Path, model: ColmapModel) -> None:
    ids, xyz, rgb, err, tracks = [], [], [], [], []
    for ln in _text_lines(path):
        tok = ln.split()
        if not tok:
            continue
        try:
            ids.append(int(tok[0])); xyz.append([float(x) for x in tok[1:4]])
            rgb.append([int(c) for c in tok[4:7]]); err.append(float(tok[7]))
            tracks.append(np.array(tok[8:], dtype=np.int64).reshape(-1, 2))
        except (IndexError, ValueError):
            raise FormatError(f"{path}: cannot read point line {ln[:80]!r}") from None
    model.point_ids = np.array(ids, np.int64)
    model.xyz = np.array(xyz, np.float64).reshape(-1, 3)
    model.rgb = np.array(rgb, np.uint8).reshape(-1, 3)
    model.error = np.array(err, np.float64)
    model.tracks = tracks


def read_colmap_text(folder: str | os.PathLike, points: bool = True) -> ColmapModel:
    """Read ``cameras.txt``, ``images.txt`` and (with ``points``) ``points3D.txt`` of ``folder``;
    without ``points`` the images' 2-D points and the 3-D points are left empty."""
    folder = Path(folder)
    model = ColmapModel(cameras=_text_cameras(folder / "cameras.txt"),
                        images=_text_images(folder / "images.txt", points))
    notes = [ln.strip()[2:] for ln in (folder / "images.txt").read_text(encoding="utf-8").splitlines()
             if ln.strip().startswith("# units:")]
    model.units_note = notes[0] if notes else ""
    if points:
        _text_points(folder / "points3D.txt", model)
    return model


def _binary_cameras(buf: bytes) -> dict[int, ColmapCamera]:
    cams, off = {}, 8
    for _ in range(struct.unpack_from("<Q", buf, 0)[0]):
        cid, mid, w, h = struct.unpack_from("<iiQQ", buf, off)
        if mid not in CAMERA_MODELS:
            raise ValueError(f"unknown camera model id {mid}")
        name, n = CAMERA_MODELS[mid]
        cams[cid] = ColmapCamera(w, h, np.frombuffer(buf, "<f8", n, off + 24).astype(np.float64), name)
        off += 24 + 8 * n
    return cams


def _binary_images(buf: bytes, points: bool) -> list[ColmapImage]:
    images, off = [], 8
    rec = np.dtype([("xy", "<f8", 2), ("id", "<i8")])
    for _ in range(struct.unpack_from("<Q", buf, 0)[0]):
        vals = struct.unpack_from("<I7dI", buf, off)
        end = buf.index(b"\x00", off + 64)
        n_pts = struct.unpack_from("<Q", buf, end + 1)[0]
        pts = np.frombuffer(buf, rec, n_pts if points else 0, end + 9)
        images.append(ColmapImage(vals[0], np.array(vals[1:5]), np.array(vals[5:8]), vals[8],
                                  buf[off + 64:end].decode("utf-8"), pts["xy"].astype(np.float64),
                                  pts["id"].astype(np.int64)))
        off = end + 9 + 24 * n_pts
    return images


def _binary_points(buf: bytes, model: ColmapModel) -> None:
    M, off = struct.unpack_from("<Q", buf, 0)[0], 8
    heads, tracks = [], []
    for _ in range(M):
        head = np.frombuffer(buf, _POINT_HEAD, 1, off)[0]
        off += _POINT_HEAD.itemsize
        tracks.append(np.frombuffer(buf, "<u4", 2 * int(head["n"]), off).astype(np.int64).reshape(-1, 2))
        off += 8 * int(head["n"])
        heads.append(head)
    h = np.array(heads, _POINT_HEAD) if heads else np.zeros(0, _POINT_HEAD)
    model.point_ids, model.xyz = h["id"].astype(np.int64), h["xyz"].astype(np.float64).reshape(-1, 3)
    model.rgb, model.error, model.tracks = h["rgb"].reshape(-1, 3), h["error"].astype(np.float64), tracks


def read_colmap_binary(folder: str | os.PathLike, points: bool = True) -> ColmapModel:
    """Read ``cameras.bin``, ``images.bin`` and (with ``points``) ``points3D.bin`` of ``folder``;
    without ``points`` the images' 2-D points and the 3-D points are left empty."""
    folder = Path(folder)
    names = ("cameras", "images", "points3D") if points else ("cameras", "images")
    try:
        data = {name: (folder / f"{name}.bin").read_bytes() for name in names}
    except OSError as exc:
        raise FormatError(f"cannot read the COLMAP model in {folder}: {exc}") from None
    try:
        model = ColmapModel(cameras=_binary_cameras(data["cameras"]),
                            images=_binary_images(data["images"], points))
        if points:
            _binary_points(data["points3D"], model)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"the COLMAP model in {folder} is truncated or corrupt ({exc})") from None
    return model


def read_colmap_model(folder: str | os.PathLike, points: bool = True) -> ColmapModel:
    """Read the COLMAP model in ``folder``: binary when ``cameras.bin`` and ``images.bin`` are
    there, else text (see :func:`read_colmap_binary`, :func:`read_colmap_text`).

    Raises:
        FormatError: no model in ``folder``, an unreadable file, or a malformed line or record.
    """
    folder = Path(folder)
    if (folder / "cameras.bin").is_file() and (folder / "images.bin").is_file():
        return read_colmap_binary(folder, points)
    if (folder / "cameras.txt").is_file() and (folder / "images.txt").is_file():
        return read_colmap_text(folder, points)
    raise FormatError(f"{folder} holds no COLMAP model (cameras.bin + images.bin or "
                      "cameras.txt + images.txt)")
