"""RealEstate10K camera files: one ``<sequence>.txt`` per video.

Line 1 is the video URL. Each further line has 19 columns:
``timestamp fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3`` where the timestamp is
in microseconds, the intrinsics are **normalised** by the image width (``fx, cx``) and height
(``fy, cy``), and the 3x4 matrix is **world-to-camera** (OpenCV axes, arbitrary scale).
Frames are images named ``<timestamp>.png`` / ``.jpg`` in ``<sequence>/`` next to the text file
(or in ``image_dir``); their size sets the pixel intrinsics (or pass ``image_size``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DatasetError
from .base import Frame, SceneData, check_rotation, image_size, invert_pose, parse_floats, require_file

__all__ = ["read_realestate10k", "detect"]


def _is_camera_file(path: Path) -> bool:
    try:
        with open(path, errors="replace") as f:
            f.readline()
            return len(f.readline().split()) == 19
    except OSError:
        return False


def detect(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".txt" and _is_camera_file(path)
    return path.is_dir() and any(_is_camera_file(p) for p in path.glob("*.txt"))


def read_realestate10k(
    path: str | Path, image_dir: str | Path | None = None, image_size_wh: tuple[int, int] | None = None
) -> SceneData:
    """Read one RealEstate10K sequence.

    Args:
        path: the sequence ``.txt`` file, or a folder holding exactly one.
        image_dir: folder with the frames (default: ``<sequence>/`` next to the file).
        image_size_wh: ``(W, H)`` to use when the frame images are not available.
    """
    path = Path(path)
    if path.is_dir():
        files = [p for p in sorted(path.glob("*.txt")) if _is_camera_file(p)]
        if len(files) != 1:
            raise DatasetError(f"{path} holds {len(files)} RealEstate10K camera files; pass one file")
        path = files[0]
    require_file(path, "RealEstate10K camera file")
    frames_dir = Path(image_dir) if image_dir is not None else path.with_suffix("")
    lines = path.read_text().splitlines()
    frames = []
    for k, ln in enumerate(lines[1:], start=2):
        tok = ln.split()
        if not tok:
            continue
        where = f"{path} line {k}"
        if len(tok) != 19:
            raise DatasetError(f"{where}: expected 19 columns (timestamp, fx fy cx cy, 0 0, 3x4 pose), found {len(tok)}")
        v = parse_floats(tok, where)
        stamp = tok[0]
        img = next((frames_dir / f"{stamp}.{e}" for e in ("png", "jpg") if (frames_dir / f"{stamp}.{e}").is_file()), None)
        if img is not None:
            w, h = image_size(img)
        elif image_size_wh is not None:
            (w, h), img = image_size_wh, frames_dir / f"{stamp}.png"
        else:
            raise DatasetError(f"missing frame image {frames_dir / (stamp + '.png')}; pass image_size_wh to read cameras only")
        fx, fy, cx, cy = v[1:5]
        K = np.array([[fx * w, 0, cx * w], [0, fy * h, cy * h], [0, 0, 1]])
        w2c = np.eye(4)
        w2c[:3] = np.array(v[7:19]).reshape(3, 4)
        check_rotation(w2c[:3, :3], where)
        frames.append(Frame(name=stamp, image_path=img, K=K, width=int(w), height=int(h),
                            cam2world=invert_pose(w2c), timestamp=v[0] * 1e-6))
    if not frames:
        raise DatasetError(f"{path} has no camera lines")
    return SceneData(name=path.stem, layout="realestate10k", root=path, frames=frames,
                     extras={"url": lines[0].strip(), "units": "arbitrary"})
