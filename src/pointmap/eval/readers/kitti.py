"""KITTI depth: semi-dense GT depth PNGs (``depth_m = value / 256``, 0 invalid).

Two layouts:

* a folder with ``test_annotations.json`` (Metric3D demo: ``rgb/``, ``depth/``,
  ``cam_in = [fx, fy, cx, cy]``);
* a KITTI raw drive folder ``image_02/data/*.png`` with the depth benchmark's
  ``proj_depth/groundtruth/image_02/*.png`` and ``calib_cam_to_cam.txt`` in the folder or its
  parent (``K`` = the left 3x3 of ``P_rect_02``). Frames without a GT depth map have none.

:func:`velodyne_to_depth` projects a raw Velodyne scan (``.bin``, float32 x y z reflectance) into
the rectified camera image with ``calib_velo_to_cam.txt`` and ``calib_cam_to_cam.txt``.
No poses (KITTI raw poses are GPS/IMU and not provided here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import DatasetError
from ._annotations import ANNOTATIONS, read_annotations
from .base import Frame, SceneData, image_size, parse_floats, require_dir, require_file

__all__ = ["read_kitti", "read_kitti_calib", "velodyne_to_depth", "detect"]


def detect(path: Path) -> bool:
    ann = path / ANNOTATIONS
    if ann.is_file():
        try:
            return float(json.loads(ann.read_text())["files"][0].get("depth_scale", 0)) == 256.0
        except (ValueError, KeyError, IndexError, TypeError):
            return False
    return (path / "image_02" / "data").is_dir()


def read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    """Parse a KITTI calibration text file (``key: numbers`` per line) to float64 arrays."""
    path = require_file(Path(path), "KITTI calibration file")
    out = {}
    for k, ln in enumerate(path.read_text().splitlines(), start=1):
        if ":" not in ln:
            continue
        key, val = ln.split(":", 1)
        if key.strip() == "calib_time":
            continue
        out[key.strip()] = np.array(parse_floats(val.split(), f"{path} line {k}"))
    return out


def _calib_file(folder: Path, name: str) -> Path:
    for cand in (folder / name, folder.parent / name, folder.parent.parent / name):
        if cand.is_file():
            return cand
    raise DatasetError(f"missing {name} in {folder} or its parent folders")


def velodyne_to_depth(
    bin_path: str | Path, calib_dir: str | Path, width: int, height: int, cam: int = 2
) -> np.ndarray:
    """Project a Velodyne scan to a sparse depth map ``(height, width)`` float32 metres (0 = no
    point; the nearest point wins where several land on a pixel).

    ``X_cam = P_rect_0c @ R_rect_00 @ T_velo_to_cam @ X_velo``; points behind the camera or outside
    the image are dropped.
    """
    pts = np.fromfile(require_file(Path(bin_path), "Velodyne scan"), dtype=np.float32)
    if pts.size % 4:
        raise DatasetError(f"{bin_path}: size is not a multiple of 4 float32 values")
    pts = pts.reshape(-1, 4)[:, :3].astype(np.float64)
    c2c = read_kitti_calib(_calib_file(Path(calib_dir), "calib_cam_to_cam.txt"))
    v2c = read_kitti_calib(_calib_file(Path(calib_dir), "calib_velo_to_cam.txt"))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = v2c["R"].reshape(3, 3), v2c["T"]
    R_rect = np.eye(4)
    R_rect[:3, :3] = c2c["R_rect_00"].reshape(3, 3)
    P = c2c[f"P_rect_0{cam}"].reshape(3, 4) @ R_rect @ T
    x = np.c_[pts, np.ones(len(pts))] @ P.T
    z = x[:, 2]
    keep = z > 0
    u = np.round(x[keep, 0] / z[keep]).astype(int)
    v = np.round(x[keep, 1] / z[keep]).astype(int)
    z = z[keep]
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, z = u[inside], v[inside], z[inside]
    depth = np.full((height, width), np.inf)
    np.minimum.at(depth, (v, u), z)
    depth[~np.isfinite(depth)] = 0.0
    return depth.astype(np.float32)


def read_kitti(path: str | Path) -> SceneData:
    """Read a KITTI depth folder (see module docstring)."""
    folder = require_dir(Path(path), "KITTI folder")
    if (folder / ANNOTATIONS).is_file():
        return read_annotations(folder, "kitti", 256.0)
    img_dir = require_dir(folder / "image_02" / "data", "KITTI image_02/data folder")
    P = read_kitti_calib(_calib_file(folder, "calib_cam_to_cam.txt")).get("P_rect_02")
    if P is None or P.size != 12:
        raise DatasetError(f"no P_rect_02 (12 numbers) in calib_cam_to_cam.txt for {folder}")
    K = P.reshape(3, 4)[:, :3]
    depth_dir = folder / "proj_depth" / "groundtruth" / "image_02"
    frames = []
    for img in sorted(img_dir.glob("*.png")):
        d = depth_dir / img.name
        w, h = image_size(img)
        frames.append(Frame(name=img.stem, image_path=img, K=K, width=w, height=h,
                            depth_path=d if d.is_file() else None, depth_scale=256.0))
    if not frames:
        raise DatasetError(f"no images in {img_dir}")
    return SceneData(name=folder.name, layout="kitti", root=folder, frames=frames, extras={"units": "m"})
