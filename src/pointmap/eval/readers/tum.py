"""TUM RGB-D benchmark sequences (Sturm et al. 2012).

Layout: ``rgb/<timestamp>.png``, ``depth/<timestamp>.png`` and optionally ``rgb.txt``,
``depth.txt`` (``timestamp filename``) and ``groundtruth.txt`` (``timestamp tx ty tz qx qy qz
qw``: the colour camera's **camera-to-world** pose in metres, quaternion x y z w). Lines starting
with ``#`` are comments. Without ``rgb.txt`` / ``depth.txt`` the file names give the timestamps.

Association: each colour frame takes the depth map with the nearest timestamp within ``max_dt``
(0.02 s) and the GT pose interpolated at its timestamp (linear for the position, slerp for the
rotation) when a GT sample lies within ``max_dt``; otherwise no depth / no pose.

Depth: 16-bit PNG, ``depth_m = value / 5000``, 0 invalid. Intrinsics (from the TUM website) are
chosen from ``freiburg1/2/3`` in the folder name, or passed as ``K``. fr1 and fr2 images are
**not** undistorted: their OpenCV distortion coefficients are in ``Frame.distortion``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import roma
import torch

from ...errors import DatasetError
from .base import Frame, SceneData, image_size, parse_floats, pose_from_Rt, require_dir

__all__ = ["read_tum", "detect", "TUM_INTRINSICS"]

# fx, fy, cx, cy and distortion (k1, k2, p1, p2, k3) of the three Kinect cameras.
TUM_INTRINSICS: dict[str, tuple[tuple[float, float, float, float], tuple[float, ...] | None]] = {
    "freiburg1": ((517.3, 516.5, 318.6, 255.3), (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "freiburg2": ((520.9, 521.0, 325.1, 249.7), (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "freiburg3": ((535.4, 539.2, 320.1, 247.6), None),
}
_STAMP = re.compile(r"^(\d+\.\d+)\.png$")


def detect(path: Path) -> bool:
    if not path.is_dir():
        return False
    if (path / "rgb.txt").is_file():
        return True
    rgb = path / "rgb"
    return rgb.is_dir() and any(_STAMP.match(p.name) for p in rgb.iterdir())


def _read_list(path: Path) -> list[tuple[float, str]]:
    out = []
    for k, ln in enumerate(path.read_text().splitlines(), start=1):
        tok = ln.split()
        if not tok or ln.lstrip().startswith("#") or tok[0] == "timestamp":
            continue
        if len(tok) != 2:
            raise DatasetError(f"{path} line {k}: expected 'timestamp filename', found {len(tok)} columns")
        out.append((parse_floats(tok[:1], f"{path} line {k}")[0], tok[1]))
    return out


def _list_folder(folder: Path, sub: str) -> list[tuple[float, str]]:
    d = folder / sub
    if not d.is_dir():
        return []
    return sorted((float(m.group(1)), f"{sub}/{p.name}") for p in d.iterdir() if (m := _STAMP.match(p.name)))


def _read_groundtruth(path: Path) -> np.ndarray:
    rows = []
    for k, ln in enumerate(path.read_text().splitlines(), start=1):
        tok = ln.split()
        if not tok or ln.lstrip().startswith("#"):
            continue
        if len(tok) != 8:
            raise DatasetError(f"{path} line {k}: expected 8 columns (timestamp tx ty tz qx qy qz qw), found {len(tok)}")
        rows.append(parse_floats(tok, f"{path} line {k}"))
    gt = np.array(rows, dtype=np.float64).reshape(-1, 8)
    return gt[np.argsort(gt[:, 0])]


def interpolate_pose(gt: np.ndarray, t: float, max_dt: float) -> np.ndarray | None:
    """Camera-to-world ``(4, 4)`` at time ``t`` from GT rows ``(M, 8)``, or ``None`` when no GT
    sample lies within ``max_dt`` seconds."""
    if len(gt) == 0 or np.min(np.abs(gt[:, 0] - t)) > max_dt:
        return None
    k = int(np.searchsorted(gt[:, 0], t))
    lo, hi = max(k - 1, 0), min(k, len(gt) - 1)
    a, b = gt[lo], gt[hi]
    alpha = 0.0 if hi == lo else float(np.clip((t - a[0]) / (b[0] - a[0]), 0.0, 1.0))
    qa, qb = torch.from_numpy(a[4:8]), torch.from_numpy(b[4:8])  # x y z w, roma's order
    q = roma.unitquat_slerp(roma.quat_normalize(qa), roma.quat_normalize(qb), torch.tensor([alpha], dtype=torch.float64), shortest_arc=True)
    R = roma.unitquat_to_rotmat(q.reshape(4)).numpy()
    return pose_from_Rt(R, (1 - alpha) * a[1:4] + alpha * b[1:4])


def read_tum(path: str | Path, K: np.ndarray | None = None, max_dt: float = 0.02) -> SceneData:
    """Read a TUM RGB-D sequence folder (e.g. ``rgbd_dataset_freiburg1_xyz``).

    Args:
        path: the sequence folder.
        K: ``(3, 3)`` intrinsics; default from the ``freiburgN`` in the folder name.
        max_dt: association tolerance in seconds for depth maps and GT poses.
    """
    folder = require_dir(Path(path), "TUM RGB-D sequence folder")
    dist = None
    if K is None:
        key = next((k for k in TUM_INTRINSICS if k in folder.name), None)
        if key is None:
            raise DatasetError(f"cannot tell the TUM camera of {folder}: its name has no freiburg1/2/3; pass K")
        (fx, fy, cx, cy), d = TUM_INTRINSICS[key]
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        dist = None if d is None else np.array(d)
    rgb = _read_list(folder / "rgb.txt") if (folder / "rgb.txt").is_file() else _list_folder(folder, "rgb")
    if not rgb:
        raise DatasetError(f"no colour frames in {folder} (expected rgb.txt or rgb/<timestamp>.png)")
    depth = _read_list(folder / "depth.txt") if (folder / "depth.txt").is_file() else _list_folder(folder, "depth")
    dt = np.array([d[0] for d in depth])
    gt_file = folder / "groundtruth.txt"
    gt = _read_groundtruth(gt_file) if gt_file.is_file() else np.zeros((0, 8))
    frames = []
    for t, rel in rgb:
        img = folder / rel
        w, h = image_size(img)
        dpath = None
        if len(dt):
            k = int(np.argmin(np.abs(dt - t)))
            if abs(dt[k] - t) <= max_dt:
                dpath = folder / depth[k][1]
                if not dpath.is_file():
                    raise DatasetError(f"missing depth map {dpath} listed for t={depth[k][0]}")
        frames.append(Frame(name=Path(rel).stem, image_path=img, K=K, width=w, height=h,
                            cam2world=interpolate_pose(gt, t, max_dt), depth_path=dpath,
                            depth_scale=5000.0, timestamp=t, distortion=dist))
    return SceneData(name=folder.name, layout="tum", root=folder, frames=frames, extras={"units": "m"})
