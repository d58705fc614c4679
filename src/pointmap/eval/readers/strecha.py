"""Strecha et al. (EPFL, CVPR 2008) dense multi-view benchmark: ``.camera`` files.

Folder layout: ``images/<name>`` and ``gt_dense_cameras/<name>.camera`` (``<name>`` includes the
image extension, e.g. ``0000.jpg.camera``); camera files next to the images also work.
Each ``.camera`` file holds 26 numbers: ``K`` (3 lines), radial distortion (1 line, 3 numbers),
``R`` (3 lines, **camera-to-world**: its columns are the camera axes in the world), the camera
centre ``C`` (1 line) and ``W H``. So ``cam2world = [R | C]`` and ``x_cam = R^T (X - C)``.
Units are metres. The camera's ``W H`` must match the image file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DatasetError
from .base import Frame, SceneData, check_rotation, image_size, pose_from_Rt, read_numbers, require_dir

__all__ = ["read_strecha", "detect"]


def _camera_dir(folder: Path) -> Path | None:
    for cand in (folder / "gt_dense_cameras", folder / "cameras", folder / "images", folder):
        if cand.is_dir() and any(cand.glob("*.camera")):
            return cand
    return None


def detect(path: Path) -> bool:
    return path.is_dir() and _camera_dir(path) is not None


def read_strecha(path: str | Path, camera_dir: str | None = None) -> SceneData:
    """Read a Strecha scene folder (e.g. ``fountain-P11``).

    Args:
        path: scene folder.
        camera_dir: sub-folder with the ``.camera`` files (default: ``gt_dense_cameras``).
    """
    folder = require_dir(Path(path), "Strecha scene folder")
    cams = folder / camera_dir if camera_dir else _camera_dir(folder)
    if cams is None or not cams.is_dir():
        raise DatasetError(f"no folder with .camera files in {folder} (expected gt_dense_cameras/)")
    files = sorted(cams.glob("*.camera"))
    if not files:
        raise DatasetError(f"no .camera files in {cams}")
    img_dir = folder / "images" if (folder / "images").is_dir() else cams
    frames = []
    for f in files:
        v = read_numbers(f, 26)
        K, dist, R, C, (w, h) = v[:9].reshape(3, 3), v[9:12], v[12:21].reshape(3, 3), v[21:24], v[24:26]
        check_rotation(R, str(f))
        img = img_dir / f.name[: -len(".camera")]
        iw, ih = image_size(img)
        if (iw, ih) != (int(w), int(h)):
            raise DatasetError(f"{f} is for a {int(w)}x{int(h)} image but {img} is {iw}x{ih}")
        frames.append(Frame(name=Path(img.name).stem, image_path=img, K=K, width=iw, height=ih,
                            cam2world=pose_from_Rt(R, C),
                            distortion=None if not np.any(dist) else np.array([dist[0], dist[1], 0, 0, dist[2]])))
    return SceneData(name=folder.name, layout="strecha", root=folder, frames=frames, extras={"units": "m"})
