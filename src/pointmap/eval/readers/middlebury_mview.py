"""Middlebury multi-view stereo (Seitz et al. 2006): ``<name>_par.txt`` + images.

``*_par.txt``: first line the number of views N, then per view
``imgname k11 k12 k13 k21 k22 k23 k31 k32 k33 r11 r12 r13 r21 r22 r23 r31 r32 r33 t1 t2 t3``
with projection ``P = K [R | t]`` (world to camera, OpenCV axes, image origin top left).
World units are metres. The README's tight bounding box, when present, goes to
``extras["bbox"]`` as ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import DatasetError
from .base import Frame, SceneData, check_rotation, image_size, invert_pose, parse_floats, pose_from_Rt, require_dir

__all__ = ["read_middlebury_mview", "detect"]


def detect(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*_par.txt"))


def _bbox(folder: Path) -> list[list[float]] | None:
    readme = folder / "README.txt"
    if not readme.is_file():
        return None
    rows = re.findall(r"\(\s*([-\d.eE+]+)\s+([-\d.eE+]+)\s+([-\d.eE+]+)\s*\)", readme.read_text(errors="replace"))
    return [[float(v) for v in r] for r in rows[:2]] if len(rows) >= 2 else None


def read_middlebury_mview(path: str | Path, par_file: str | None = None) -> SceneData:
    """Read a Middlebury multi-view folder (e.g. ``templeSparseRing``).

    Args:
        path: folder with the images and one ``*_par.txt`` (or pass ``par_file``).
    """
    folder = require_dir(Path(path), "Middlebury multi-view folder")
    if par_file is None:
        pars = sorted(folder.glob("*_par.txt"))
        if not pars:
            raise DatasetError(f"no *_par.txt camera file in {folder}")
        par = pars[0]
    else:
        par = folder / par_file
        if not par.is_file():
            raise DatasetError(f"missing camera file {par}")
    lines = [ln.split() for ln in par.read_text().splitlines() if ln.strip()]
    if not lines or len(lines[0]) != 1:
        raise DatasetError(f"{par}: the first line must hold the number of views")
    n = int(parse_floats(lines[0], f"{par} line 1")[0])
    if len(lines) - 1 != n:
        raise DatasetError(f"{par}: header says {n} views but {len(lines) - 1} lines follow")
    frames = []
    for k, tok in enumerate(lines[1:], start=2):
        where = f"{par} line {k}"
        if len(tok) != 22:
            raise DatasetError(f"{where}: expected 22 columns (name, K 9, R 9, t 3), found {len(tok)}")
        v = np.array(parse_floats(tok[1:], where))
        K, R, t = v[:9].reshape(3, 3), check_rotation(v[9:18].reshape(3, 3), where), v[18:]
        img = folder / tok[0]
        w, h = image_size(img)
        frames.append(Frame(name=Path(tok[0]).stem, image_path=img, K=K, width=w, height=h,
                            cam2world=invert_pose(pose_from_Rt(R, t))))
    extras = {"units": "m"}
    bbox = _bbox(folder)
    if bbox is not None:
        extras["bbox"] = bbox
    return SceneData(name=folder.name, layout="middlebury_mview", root=folder, frames=frames, extras=extras)
