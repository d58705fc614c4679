"""ScanNet exports (the SensReader output): ``color/``, ``depth/``, ``pose/``, ``intrinsic/``.

* ``color/<id>.jpg`` (1296x968 in raw exports; any size accepted);
* ``depth/<id>.png``: 16-bit **millimetres**, 0 invalid (640x480 in raw exports);
* ``pose/<id>.txt``: 4x4 **camera-to-world**, metres; lines of ``-inf`` mark frames without a
  pose (``cam2world = None``);
* ``intrinsic/intrinsic_color.txt``: 4x4 (its top-left 3x3 is ``K``).

When the depth map is smaller than the colour image, :meth:`Frame.load_depth` resizes it to the
colour size with nearest-neighbour sampling (the export's depth is registered to the colour
camera up to this resampling).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ...errors import DatasetError
from .base import Frame, SceneData, check_rotation, image_size, load_depth_png, read_numbers, require_dir, require_file

__all__ = ["read_scannet", "detect"]


def detect(path: Path) -> bool:
    return path.is_dir() and all((path / d).is_dir() for d in ("color", "pose")) and (path / "intrinsic").is_dir()


def _load_resized(frame: Frame) -> np.ndarray:
    d = load_depth_png(frame.depth_path, frame.depth_scale)
    if d.shape != (frame.height, frame.width):
        d = cv2.resize(d, (frame.width, frame.height), interpolation=cv2.INTER_NEAREST)
    return d


def _sort_key(p: Path):
    return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)


def read_scannet(path: str | Path) -> SceneData:
    """Read one exported ScanNet scene (e.g. ``scene0707_00``)."""
    folder = require_dir(Path(path), "ScanNet scene folder")
    for sub in ("color", "pose", "intrinsic"):
        require_dir(folder / sub, f"ScanNet '{sub}' folder")
    K = read_numbers(require_file(folder / "intrinsic" / "intrinsic_color.txt", "ScanNet intrinsics"), 16).reshape(4, 4)[:3, :3]
    images = sorted((p for p in (folder / "color").iterdir() if p.suffix.lower() in (".jpg", ".png")), key=_sort_key)
    if not images:
        raise DatasetError(f"no images in {folder / 'color'}")
    frames = []
    for img in images:
        pose_file = folder / "pose" / f"{img.stem}.txt"
        T = read_numbers(require_file(pose_file, "ScanNet pose"), 16).reshape(4, 4)
        if np.isfinite(T).all():
            check_rotation(T[:3, :3], str(pose_file))
        else:
            T = None
        depth = folder / "depth" / f"{img.stem}.png"
        w, h = image_size(img)
        frames.append(Frame(name=img.stem, image_path=img, K=K, width=w, height=h, cam2world=T,
                            depth_path=depth if depth.is_file() else None, depth_scale=1000.0,
                            depth_loader=_load_resized if depth.is_file() else None))
    return SceneData(name=folder.name, layout="scannet", root=folder, frames=frames, extras={"units": "m"})
