"""CO3Dv2 (Reizenstein et al. 2021): ``<category>/frame_annotations.jgz``.

The annotation file is gzipped JSON: a list of frames with ``sequence_name``, ``frame_number``,
``frame_timestamp``, ``image {path, size [H, W]}``, ``depth {path, scale_adjustment}`` and
``viewpoint {R, T, focal_length, principal_point, intrinsics_format}``. Paths are relative to the
dataset root (the parent of the category folder).

Camera conversion (PyTorch3D -> OpenCV). PyTorch3D maps world to camera with row vectors,
``X_cam = X_world @ R + T``, in axes +X left, +Y up, +Z forward. In column form the world-to-camera
rotation is ``R^T`` and the translation ``T``; flipping x and y to OpenCV axes gives
``R_w2c = diag(-1, -1, 1) R^T`` and ``t_w2c = diag(-1, -1, 1) T``; ``cam2world`` is the inverse.
Intrinsics are in NDC. For ``ndc_isotropic`` (CO3Dv2), with ``s = min(H, W) / 2``:
``fx = f_x s``, ``fy = f_y s``, ``cx = W / 2 - p_x s``, ``cy = H / 2 - p_y s`` (the same
conversion as PyTorch3D's ``opencv_from_cameras_projection``). For ``ndc_norm_image_bounds``
(CO3Dv1) the x terms use ``W / 2`` and the y terms ``H / 2`` in place of ``s``.

Depth PNGs store float16 bit patterns; ``depth = float16 * scale_adjustment`` in the scene's
(non-metric, COLMAP-scaled) units, 0 invalid.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DatasetError
from .base import Frame, SceneData, check_rotation, invert_pose, pose_from_Rt, require_dir, require_file

__all__ = ["read_co3d", "pytorch3d_to_opencv", "detect"]

_FLIP = np.diag([-1.0, -1.0, 1.0])


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "frame_annotations.jgz").is_file()


def pytorch3d_to_opencv(
    R: np.ndarray, T: np.ndarray, focal: np.ndarray, pp: np.ndarray, size_hw: tuple[int, int],
    intrinsics_format: str = "ndc_isotropic",
) -> tuple[np.ndarray, np.ndarray]:
    """Convert one PyTorch3D NDC camera to OpenCV ``(K (3, 3), cam2world (4, 4))`` (see module
    docstring for the formulas)."""
    H, W = size_hw
    if intrinsics_format == "ndc_isotropic":
        sx = sy = min(H, W) / 2.0
    elif intrinsics_format == "ndc_norm_image_bounds":
        sx, sy = W / 2.0, H / 2.0
    else:
        raise DatasetError(f"unknown CO3D intrinsics_format '{intrinsics_format}'")
    K = np.array([[focal[0] * sx, 0, W / 2.0 - pp[0] * sx], [0, focal[1] * sy, H / 2.0 - pp[1] * sy], [0, 0, 1]])
    w2c = pose_from_Rt(_FLIP @ np.asarray(R, dtype=np.float64).T, _FLIP @ np.asarray(T, dtype=np.float64))
    return K, invert_pose(w2c)


def _load_annotations(folder: Path) -> list[dict]:
    path = require_file(folder / "frame_annotations.jgz", "CO3D frame annotations")
    try:
        with gzip.open(path, "rt") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"could not read {path}: {exc}") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{path} should hold a list of frame annotations")
    return data


def _depth_loader(path: Path, scale: float):
    def load(frame: Frame) -> np.ndarray:
        require_file(path, "CO3D depth map")
        with Image.open(path) as im:
            raw = np.asarray(im, dtype=np.uint16)
        d = raw.view(np.float16).astype(np.float32) * scale
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d

    return load


def read_co3d(path: str | Path, sequence: str | None = None, dataset_root: str | Path | None = None) -> SceneData:
    """Read one sequence of a CO3Dv2 category folder.

    Args:
        path: category folder with ``frame_annotations.jgz``.
        sequence: sequence name (default: the first in sorted order).
        dataset_root: folder the annotation paths are relative to (default: ``path``'s parent).
    """
    folder = require_dir(Path(path), "CO3D category folder")
    root = Path(dataset_root) if dataset_root is not None else folder.parent
    anns = _load_annotations(folder)
    names = sorted({a.get("sequence_name") for a in anns})
    if not names:
        raise DatasetError(f"{folder / 'frame_annotations.jgz'} has no frames")
    seq = sequence if sequence is not None else names[0]
    if seq not in names:
        raise DatasetError(f"sequence '{seq}' not in {folder}; known: {names[:10]}")
    frames = []
    for a in sorted((a for a in anns if a.get("sequence_name") == seq), key=lambda a: a["frame_number"]):
        try:
            vp, im = a["viewpoint"], a["image"]
            H, W = (int(v) for v in im["size"])
            K, c2w = pytorch3d_to_opencv(np.array(vp["R"]), np.array(vp["T"]), np.array(vp["focal_length"]),
                                         np.array(vp["principal_point"]), (H, W),
                                         vp.get("intrinsics_format", "ndc_isotropic"))
            img = root / im["path"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"malformed CO3D annotation of frame {a.get('frame_number')} in {folder}: {exc}") from exc
        check_rotation(c2w[:3, :3], f"{folder} frame {a['frame_number']}")
        depth = a.get("depth") or {}
        dpath = root / depth["path"] if depth.get("path") else None
        frames.append(Frame(name=f"{seq}/{a['frame_number']:06d}", image_path=img, K=K, width=W, height=H,
                            cam2world=c2w, depth_path=dpath, timestamp=a.get("frame_timestamp"),
                            depth_loader=_depth_loader(dpath, float(depth.get("scale_adjustment", 1.0))) if dpath else None))
    return SceneData(name=seq, layout="co3d", root=folder, frames=frames, extras={"units": "arbitrary"})
