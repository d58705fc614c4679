"""The generic scene folder: a ``scene.json`` describing images, intrinsics, poses and depth.

Schema (JSON object; paths are relative to the folder holding ``scene.json``)::

    {
      "name": "my_scene",              # optional, default: the folder name
      "depth_scale": 1000.0,           # optional default for frames: raw depth value per metre
      "frames": [                      # required, at least one
        {
          "image": "images/0000.jpg",  # required, colour image
          "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   # required; or [fx, fy, cx, cy]
          "cam2world": [[...], [...], [...], [0, 0, 0, 1]],  # optional 4x4 (or 3x4), OpenCV axes
          "depth": "depth/0000.png",   # optional: 16-bit PNG or .npy
          "depth_scale": 1000.0,       # optional: depth_m = raw / depth_scale (default 1)
          "name": "0000",              # optional, default: image file stem
          "timestamp": 0.0             # optional, seconds
        }
      ]
    }

``K`` is in pixels of the image file with pixel centres at integer coordinates. Depth is z-depth;
0 (and non-finite values in ``.npy``) mark invalid pixels. :func:`write_scene_json` writes this
file from a list of :class:`Frame`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ...errors import DatasetError
from ...io_utils import write_json
from .base import Frame, SceneData, check_rotation, image_size, load_depth_png, parse_floats, require_file

__all__ = ["read_generic", "write_scene_json", "detect", "SCENE_JSON"]

SCENE_JSON = "scene.json"


def detect(path: Path) -> bool:
    return (path.is_dir() and (path / SCENE_JSON).is_file()) or (path.is_file() and path.name.endswith(".json") and path.name != "test_annotations.json")


def _npy_loader(frame: Frame) -> np.ndarray:
    try:
        d = np.load(require_file(frame.depth_path, "depth map")).astype(np.float64)
    except ValueError as exc:
        raise DatasetError(f"could not read depth map {frame.depth_path}: {exc}") from exc
    if d.ndim != 2:
        raise DatasetError(f"depth map {frame.depth_path} has shape {d.shape}; expected (H, W)")
    d = d / frame.depth_scale
    d[~np.isfinite(d) | (d < 0)] = 0.0
    return d.astype(np.float32)


def _png_loader(frame: Frame) -> np.ndarray:
    return load_depth_png(frame.depth_path, frame.depth_scale)


def _matrix(value, shapes: tuple[tuple[int, int], ...], where: str) -> np.ndarray:
    flat = parse_floats([str(v) for v in np.ravel(np.asarray(value, dtype=object))], where)
    for r, c in shapes:
        if len(flat) == r * c:
            return np.array(flat).reshape(r, c)
    raise DatasetError(f"{where}: expected {' or '.join(f'{r}x{c}' for r, c in shapes)} numbers, found {len(flat)}")


def read_generic(path: str | Path) -> SceneData:
    """Read a folder with ``scene.json`` (or the JSON file itself); see the module docstring."""
    path = Path(path)
    spec_file = path / SCENE_JSON if path.is_dir() else path
    require_file(spec_file, "scene description")
    folder = spec_file.parent
    try:
        spec = json.loads(spec_file.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{spec_file} is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("frames"), list) or not spec["frames"]:
        raise DatasetError(f"{spec_file} needs a non-empty 'frames' list")
    default_scale = float(spec.get("depth_scale", 1.0))
    frames = []
    for k, e in enumerate(spec["frames"]):
        where = f"{spec_file} frames[{k}]"
        if not isinstance(e, dict):
            raise DatasetError(f"{where} must be an object")
        for key in ("image", "K"):
            if key not in e:
                raise DatasetError(f"{where} has no '{key}'")
        img = folder / e["image"]
        w, h = image_size(img)
        K = _matrix(e["K"], ((3, 3), (1, 4)), f"{where}.K")
        if K.shape == (1, 4):
            fx, fy, cx, cy = K[0]
            K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        c2w = None
        if e.get("cam2world") is not None:
            M = _matrix(e["cam2world"], ((4, 4), (3, 4)), f"{where}.cam2world")
            c2w = np.eye(4)
            c2w[: M.shape[0]] = M
            check_rotation(c2w[:3, :3], f"{where}.cam2world")
        dpath = folder / e["depth"] if e.get("depth") else None
        if dpath is not None and not dpath.is_file():
            raise DatasetError(f"{where}: missing depth map {dpath}")
        loader = None if dpath is None else (_npy_loader if dpath.suffix == ".npy" else _png_loader)
        frames.append(Frame(name=str(e.get("name", img.stem)), image_path=img, K=K, width=w, height=h,
                            cam2world=c2w, depth_path=dpath, depth_scale=float(e.get("depth_scale", default_scale)),
                            depth_loader=loader, timestamp=e.get("timestamp")))
    return SceneData(name=str(spec.get("name", folder.name)), layout="generic", root=folder, frames=frames)


def write_scene_json(folder: str | Path, frames: list[Frame], name: str | None = None) -> Path:
    """Write ``scene.json`` in ``folder`` for ``frames`` (paths stored relative to ``folder``)."""
    folder = Path(folder)

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p, folder)).as_posix()

    out = []
    for f in frames:
        e = {"name": f.name, "image": rel(f.image_path), "K": f.K.tolist()}
        if f.cam2world is not None:
            e["cam2world"] = f.cam2world.tolist()
        if f.depth_path is not None:
            e["depth"], e["depth_scale"] = rel(f.depth_path), f.depth_scale
        if f.timestamp is not None:
            e["timestamp"] = f.timestamp
        out.append(e)
    path = folder / SCENE_JSON
    write_json(path, {"name": name or folder.name, "frames": out}, indent=1)
    return path
