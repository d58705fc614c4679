"""Middlebury 2014 stereo: ``calib.txt``, ``im0.png``, ``im1.png``, ``disp0.pfm``, ``disp1.pfm``.

``calib.txt`` lines ``key=value``: ``cam0=[f 0 cx0; 0 f cy; 0 0 1]``, ``cam1=[...]``, ``doffs``
(``cx1 - cx0``), ``baseline`` (**millimetres**), ``width``, ``height``, ``ndisp``, ...
Disparity maps are PFM (``inf`` = unknown). Depth in metres is
``baseline * f / (d + doffs) / 1000`` (0 where the disparity is unknown).
Poses: camera 0 at the origin with identity rotation, camera 1 at ``(baseline, 0, 0)`` metres
(rectified pair, OpenCV axes).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import DatasetError
from .base import Frame, SceneData, image_size, parse_floats, pose_from_Rt, require_dir, require_file

__all__ = ["read_middlebury2014", "read_pfm", "detect"]


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "calib.txt").is_file() and (path / "im0.png").is_file()


def read_pfm(path: Path) -> np.ndarray:
    """Read a PFM file: ``(H, W)`` (``Pf``) or ``(H, W, 3)`` (``PF``) float32, top row first."""
    path = require_file(Path(path), "PFM file")
    with open(path, "rb") as f:
        kind = f.readline().strip()
        if kind not in (b"Pf", b"PF"):
            raise DatasetError(f"{path} is not a PFM file (header {kind[:10]!r})")
        try:
            w, h = (int(x) for x in f.readline().split())
            scale = float(f.readline().strip())
        except ValueError:
            raise DatasetError(f"{path}: malformed PFM header") from None
        c = 3 if kind == b"PF" else 1
        data = np.frombuffer(f.read(), dtype="<f4" if scale < 0 else ">f4")
    if data.size != w * h * c:
        raise DatasetError(f"{path}: expected {w * h * c} values for {w}x{h}x{c}, found {data.size}")
    img = data.reshape(h, w, c) if c == 3 else data.reshape(h, w)
    return np.flipud(img).astype(np.float32)


def _read_calib(path: Path) -> dict[str, np.ndarray | float]:
    out: dict[str, np.ndarray | float] = {}
    for k, ln in enumerate(path.read_text().splitlines(), start=1):
        if "=" not in ln:
            continue
        key, val = (s.strip() for s in ln.split("=", 1))
        where = f"{path} line {k} ({key})"
        if val.startswith("["):
            nums = parse_floats(re.sub(r"[\[\];]", " ", val).split(), where)
            if len(nums) != 9:
                raise DatasetError(f"{where}: expected a 3x3 matrix, found {len(nums)} numbers")
            out[key] = np.array(nums).reshape(3, 3)
        else:
            out[key] = parse_floats([val], where)[0]
    for key in ("cam0", "cam1", "doffs", "baseline"):
        if key not in out:
            raise DatasetError(f"{path} has no '{key}=' entry")
    return out


def _disp_loader(calib: dict, disp: Path):
    def load(frame: Frame) -> np.ndarray:
        d = read_pfm(disp)
        f = float(calib["cam0"][0, 0])
        den = d + float(calib["doffs"])
        ok = np.isfinite(d) & (den > 0)
        depth = np.zeros(d.shape, np.float32)
        depth[ok] = float(calib["baseline"]) * f / den[ok] / 1000.0
        return depth

    return load


def read_middlebury2014(path: str | Path) -> SceneData:
    """Read one Middlebury 2014 stereo scene folder (e.g. ``Adirondack-perfect``)."""
    folder = require_dir(Path(path), "Middlebury 2014 scene folder")
    calib = _read_calib(require_file(folder / "calib.txt", "calib.txt"))
    frames = []
    b = float(calib["baseline"]) / 1000.0
    for k in (0, 1):
        img = require_file(folder / f"im{k}.png", "stereo image")
        w, h = image_size(img)
        disp = folder / f"disp{k}.pfm"
        frames.append(Frame(name=f"im{k}", image_path=img, K=calib[f"cam{k}"], width=w, height=h,
                            cam2world=pose_from_Rt(np.eye(3), [k * b, 0.0, 0.0]),
                            depth_loader=_disp_loader(calib, disp) if disp.is_file() else None,
                            depth_path=disp if disp.is_file() else None))
    extras = {k: v for k, v in calib.items() if isinstance(v, float)}
    extras["units"] = "m"
    return SceneData(name=folder.name, layout="middlebury2014", root=folder, frames=frames, extras=extras)
