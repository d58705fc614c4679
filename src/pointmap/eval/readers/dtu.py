"""DTU multi-view stereo scans in the IDR / NeuS layout, or the MVSNet per-view layout.

IDR / NeuS: ``cameras_sphere.npz`` (or ``cameras.npz``) with ``world_mat_<i>`` (the 4x4
projection ``P = K [R | t]`` of view ``i``, world = DTU millimetres) and ``scale_mat_<i>`` (maps
the normalised unit sphere to the world), and images ``image/<i:06d>.png`` (sorted order = view
order). ``P`` is split with ``cv2.decomposeProjectionMatrix``; ``K`` is normalised to
``K[2, 2] = 1`` with positive focal lengths and the camera centre comes from the decomposition.
Poses are in DTU world units (**millimetres**, like the DTU GT point clouds); ``extras`` holds
``scale_mat`` (of view 0) to reach the normalised frame.

MVSNet: ``cams/<id>_cam.txt`` (``extrinsic`` + 4x4 world-to-camera, ``intrinsic`` + 3x3, then
``depth_min depth_interval``) with images ``images/<id>.jpg`` or ``.png``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ...errors import DatasetError
from .base import Frame, SceneData, check_rotation, image_size, invert_pose, parse_floats, pose_from_Rt, require_dir

__all__ = ["read_dtu", "decompose_projection", "detect"]

_NPZ = ("cameras_sphere.npz", "cameras.npz")


def detect(path: Path) -> bool:
    return path.is_dir() and (any((path / n).is_file() for n in _NPZ) or (path / "cams").is_dir())


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a ``(3, 4)`` projection ``P ~ K [R | t]`` into ``K (3, 3)`` (``K[2,2] = 1``, positive
    focal lengths) and a camera-to-world pose ``(4, 4)``; ``P`` may carry any non-zero scale."""
    P = np.asarray(P, dtype=np.float64)[:3, :4]
    if np.linalg.det(P[:, :3]) < 0:
        P = -P  # the overall sign of P is arbitrary; pick the one with a proper rotation
    K, R, c = cv2.decomposeProjectionMatrix(P)[:3]
    K = K / K[2, 2]
    D = np.diag(np.sign(np.diag(K)))
    K, R = K @ D, D @ R
    C = (c[:3] / c[3]).ravel()
    return K, pose_from_Rt(R.T, C)


def _images(folder: Path) -> list[Path]:
    for sub in ("image", "images"):
        d = folder / sub
        if d.is_dir():
            return sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    raise DatasetError(f"no image/ or images/ folder in {folder}")


def _read_idr(folder: Path, npz_path: Path) -> SceneData:
    try:
        cams = dict(np.load(npz_path))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"could not read {npz_path}: {exc}") from exc
    images = _images(folder)
    frames = []
    for i, img in enumerate(images):
        key = f"world_mat_{i}"
        if key not in cams:
            raise DatasetError(f"{npz_path} has no {key} for image {img.name}")
        K, c2w = decompose_projection(cams[key])
        check_rotation(c2w[:3, :3], f"{npz_path} {key}")
        w, h = image_size(img)
        frames.append(Frame(name=img.stem, image_path=img, K=K, width=w, height=h, cam2world=c2w))
    extras: dict = {"units": "mm"}
    if "scale_mat_0" in cams:
        extras["scale_mat"] = cams["scale_mat_0"].tolist()
    return SceneData(name=folder.name, layout="dtu", root=folder, frames=frames, extras=extras)


def _read_mvsnet_cam(path: Path) -> tuple[np.ndarray, np.ndarray]:
    tok = path.read_text().split()
    try:
        e, i = tok.index("extrinsic"), tok.index("intrinsic")
    except ValueError:
        raise DatasetError(f"{path} lacks the 'extrinsic' / 'intrinsic' headers") from None
    E = parse_floats(tok[e + 1 : e + 17], str(path))
    K = parse_floats(tok[i + 1 : i + 10], str(path))
    if len(E) != 16 or len(K) != 9:
        raise DatasetError(f"{path}: expected 16 extrinsic and 9 intrinsic numbers")
    return np.array(K).reshape(3, 3), np.array(E).reshape(4, 4)


def _read_mvsnet(folder: Path) -> SceneData:
    frames = []
    cam_files = sorted((folder / "cams").glob("*_cam.txt"))
    if not cam_files:
        raise DatasetError(f"no *_cam.txt files in {folder / 'cams'}")
    for f in cam_files:
        vid = f.name[: -len("_cam.txt")]
        img = next((folder / "images" / f"{vid}{e}" for e in (".jpg", ".png") if (folder / "images" / f"{vid}{e}").is_file()), None)
        if img is None:
            raise DatasetError(f"missing image {folder / 'images' / (vid + '.jpg')} for {f}")
        K, w2c = _read_mvsnet_cam(f)
        check_rotation(w2c[:3, :3], str(f))
        w, h = image_size(img)
        frames.append(Frame(name=vid, image_path=img, K=K, width=w, height=h, cam2world=invert_pose(w2c)))
    return SceneData(name=folder.name, layout="dtu", root=folder, frames=frames, extras={"units": "mm"})


def read_dtu(path: str | Path) -> SceneData:
    """Read a DTU scan folder (IDR/NeuS ``cameras*.npz`` or MVSNet ``cams/``)."""
    folder = require_dir(Path(path), "DTU scan folder")
    for n in _NPZ:
        if (folder / n).is_file():
            return _read_idr(folder, folder / n)
    if (folder / "cams").is_dir():
        return _read_mvsnet(folder)
    raise DatasetError(f"{folder} has neither cameras_sphere.npz / cameras.npz nor a cams/ folder")
