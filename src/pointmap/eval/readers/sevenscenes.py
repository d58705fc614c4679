"""Microsoft 7-Scenes: ``frame-XXXXXX.color.png``, ``.depth.png``, ``.pose.txt`` per frame.

* colour: 640x480 (``.color.png`` in the official release; ``.color.jpg`` also accepted);
* depth: 16-bit PNG in **millimetres**, 0 and 65535 invalid;
* pose: 4x4 **camera-to-world**, metres;
* intrinsics: the nominal ``fx = fy = 585, cx = 320, cy = 240`` unless a ``camera-intrinsics.txt``
  (3x3) sits next to the frames. They belong to the depth camera; colour is registered only
  approximately (a few pixels).

``path`` may be a sequence folder (``seq-01``) or a folder holding a ``data/`` sub-folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import DatasetError
from .base import Frame, SceneData, check_rotation, image_size, read_numbers, require_dir

__all__ = ["read_7scenes", "detect", "SEVEN_SCENES_K"]

SEVEN_SCENES_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
_FRAME = re.compile(r"^(frame-\d+)\.pose\.txt$")


def _frames_dir(path: Path) -> Path | None:
    for cand in (path, path / "data"):
        if cand.is_dir() and any(cand.glob("frame-*.pose.txt")):
            return cand
    return None


def detect(path: Path) -> bool:
    return path.is_dir() and _frames_dir(path) is not None


def read_7scenes(path: str | Path) -> SceneData:
    """Read a 7-Scenes sequence folder (see module docstring)."""
    root = require_dir(Path(path), "7-Scenes folder")
    folder = _frames_dir(root)
    if folder is None:
        raise DatasetError(f"no frame-XXXXXX.pose.txt files in {root} or {root / 'data'}")
    K = SEVEN_SCENES_K
    if (folder / "camera-intrinsics.txt").is_file():
        K = read_numbers(folder / "camera-intrinsics.txt", 9).reshape(3, 3)
    frames = []
    for pose_file in sorted(folder.glob("frame-*.pose.txt")):
        stem = _FRAME.match(pose_file.name).group(1)
        imgs = [folder / f"{stem}.color.{ext}" for ext in ("png", "jpg")]
        img = next((p for p in imgs if p.is_file()), None)
        if img is None:
            raise DatasetError(f"missing colour image {imgs[0]} (or .jpg) for {pose_file}")
        depth = folder / f"{stem}.depth.png"
        T = read_numbers(pose_file, 16).reshape(4, 4)
        check_rotation(T[:3, :3], str(pose_file))
        w, h = image_size(img)
        frames.append(Frame(name=stem, image_path=img, K=K, width=w, height=h, cam2world=T,
                            depth_path=depth if depth.is_file() else None, depth_scale=1000.0,
                            depth_invalid=(65535,)))
    name = root.name if root != folder else folder.name
    return SceneData(name=name, layout="7scenes", root=root, frames=frames, extras={"units": "m"})
