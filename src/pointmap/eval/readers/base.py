"""Common records returned by every dataset reader, and small parsing helpers.

Every reader returns a :class:`SceneData` holding :class:`Frame` records with:

* ``K``: ``(3, 3)`` float64 pinhole intrinsics in pixels of the image file, pixel centres at
  integer coordinates (OpenCV);
* ``cam2world``: ``(4, 4)`` float64 camera-to-world pose in OpenCV axes (x right, y down,
  z forward), in the dataset's world units (metres where the dataset is metric), or ``None``;
* depth: :meth:`Frame.load_depth` returns ``(H, W)`` float32 z-depth in **metres** with 0 at
  invalid pixels, whatever the file encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import roma
import torch
from PIL import Image

from ...errors import DatasetError

__all__ = [
    "Frame",
    "PairRecord",
    "SceneData",
    "image_size",
    "read_numbers",
    "parse_floats",
    "require_dir",
    "require_file",
    "check_rotation",
    "pose_from_Rt",
    "nearest_rotation",
    "invert_pose",
    "load_depth_png",
]


@dataclass
class Frame:
    """One image of a dataset.

    Attributes:
        name: display name (file name stem or dataset id).
        image_path: colour image file.
        K: ``(3, 3)`` float64 intrinsics, pixels.
        width, height: image size in pixels (of ``image_path``).
        cam2world: ``(4, 4)`` float64 OpenCV camera-to-world pose, or ``None`` when unknown. Its
            rotation is projected onto the nearest rotation (readers reject deviations > 1e-3).
        depth_path: depth file, or ``None``.
        depth_scale: raw depth value per metre (``depth_m = raw / depth_scale``), e.g. 1000 for
            millimetre PNGs, 5000 for TUM, 256 for KITTI.
        depth_invalid: raw values that mark missing depth besides 0 (e.g. 65535 in 7-Scenes).
        depth_loader: custom loader ``frame -> (H, W) metres``, used instead of the PNG decoder.
        timestamp: seconds, where the dataset has one.
        distortion: OpenCV distortion coefficients ``(k1, k2, p1, p2[, k3])`` when the images are
            not undistorted, else ``None``.
    """

    name: str
    image_path: Path
    K: np.ndarray
    width: int
    height: int
    cam2world: np.ndarray | None = None
    depth_path: Path | None = None
    depth_scale: float = 1.0
    depth_invalid: tuple[int, ...] = ()
    depth_loader: Callable[["Frame"], np.ndarray] | None = field(default=None, repr=False)
    timestamp: float | None = None
    distortion: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.image_path = Path(self.image_path)
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        if self.cam2world is not None:
            T = np.array(self.cam2world, dtype=np.float64).reshape(4, 4)
            if np.isfinite(T).all():  # remove round-off (e.g. KinectFusion poses are ~1e-4 off)
                T[:3, :3] = nearest_rotation(T[:3, :3])
            self.cam2world = T
        if self.depth_path is not None:
            self.depth_path = Path(self.depth_path)

    @property
    def has_depth(self) -> bool:
        return self.depth_path is not None or self.depth_loader is not None

    def load_depth(self) -> np.ndarray:
        """Depth ``(H, W)`` float32 in metres, 0 where invalid. Raises DatasetError without depth."""
        if self.depth_loader is not None:
            return self.depth_loader(self)
        if self.depth_path is None:
            raise DatasetError(f"frame {self.name} has no depth map")
        return load_depth_png(self.depth_path, self.depth_scale, self.depth_invalid)


@dataclass
class PairRecord:
    """An image pair with a known relative pose (two-view benchmarks).

    Attributes:
        i, j: frame indices in :attr:`SceneData.frames`.
        T_0to1: ``(4, 4)`` float64 transform from camera-``i`` to camera-``j`` coordinates.
        rot0, rot1: number of 90-degree rotations the benchmark applies to each image (EXIF).
    """

    i: int
    j: int
    T_0to1: np.ndarray
    rot0: int = 0
    rot1: int = 0


@dataclass
class SceneData:
    """A dataset scene: frames with intrinsics and (optional) poses and depth.

    Attributes:
        name: scene name; layout: the reader that produced it; root: the folder (or file) read.
        frames: the frames, in dataset order.
        pairs: evaluation pairs (two-view layouts), else empty.
        extras: layout-specific metadata (e.g. a bounding box, a scale matrix), JSON-friendly.
    """

    name: str
    layout: str
    root: Path
    frames: list[Frame]
    pairs: list[PairRecord] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def has_poses(self) -> bool:
        return bool(self.frames) and all(f.cam2world is not None for f in self.frames)

    def poses(self) -> np.ndarray:
        """``(N, 4, 4)`` camera-to-world poses; raises DatasetError where a pose is missing."""
        missing = [f.name for f in self.frames if f.cam2world is None]
        if missing:
            raise DatasetError(f"scene {self.name} ({self.root}) has no pose for {missing[:5]}")
        return np.stack([f.cam2world for f in self.frames])

    def intrinsics(self) -> np.ndarray:
        """``(N, 3, 3)`` intrinsics."""
        return np.stack([f.K for f in self.frames]) if self.frames else np.zeros((0, 3, 3))

    def image_paths(self) -> list[Path]:
        return [f.image_path for f in self.frames]


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def require_dir(path: Path, what: str = "dataset folder") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{what} {path} does not exist or is not a folder")
    return path


def require_file(path: Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"missing {what}: {path}")
    return path


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, reading only its header."""
    path = require_file(path, "image")
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as exc:
        raise DatasetError(f"could not read image {path}: {exc}") from exc


def parse_floats(tokens: list[str], where: str) -> list[float]:
    """Parse tokens as floats; DatasetError naming ``where`` and the bad token otherwise."""
    out = []
    for tok in tokens:
        try:
            v = float(tok)
        except ValueError:
            raise DatasetError(f"{where}: '{tok}' is not a number") from None
        out.append(v)
    return out


def read_numbers(path: Path, count: int | None = None) -> np.ndarray:
    """All whitespace-separated numbers of a text file, ``(n,)`` float64; checks ``count``."""
    path = require_file(path)
    tokens = path.read_text().split()
    vals = np.array(parse_floats(tokens, str(path)), dtype=np.float64)
    if count is not None and vals.size != count:
        raise DatasetError(f"{path}: expected {count} numbers, found {vals.size}")
    return vals


def check_rotation(R: np.ndarray, where: str, tol: float = 1e-3) -> np.ndarray:
    """Check ``R`` ``(3, 3)`` is a rotation (orthonormal, det +1) within ``tol``."""
    R = np.asarray(R, dtype=np.float64)
    if not np.isfinite(R).all() or np.abs(R @ R.T - np.eye(3)).max() > tol or np.linalg.det(R) < 0:
        raise DatasetError(f"{where}: the rotation is not orthonormal with det +1:\n{R}")
    return R


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """The rotation ``(3, 3)`` closest to ``R`` in the Frobenius norm (special Procrustes)."""
    return roma.special_procrustes(torch.from_numpy(np.asarray(R, dtype=np.float64))).numpy()


def pose_from_Rt(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A ``(4, 4)`` matrix from ``R`` ``(3, 3)`` and ``t`` ``(3,)``."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).ravel()
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid ``(4, 4)`` transform."""
    R, t = T[:3, :3], T[:3, 3]
    return pose_from_Rt(R.T, -R.T @ t)


def load_depth_png(path: Path, scale: float, invalid: tuple[int, ...] = ()) -> np.ndarray:
    """Decode a 16-bit depth PNG to metres ``(H, W)`` float32 (``raw / scale``), 0 where raw is 0
    or in ``invalid``."""
    path = require_file(path, "depth map")
    try:
        with Image.open(path) as im:
            raw = np.asarray(im).astype(np.float64)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"could not read depth map {path}: {exc}") from exc
    if raw.ndim != 2:
        raise DatasetError(f"depth map {path} has {raw.ndim} dims; expected a single-channel image")
    bad = raw <= 0
    for v in invalid:
        bad |= raw == v
    depth = raw / float(scale)
    depth[bad] = 0.0
    return depth.astype(np.float32)
