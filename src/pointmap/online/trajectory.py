"""Camera trajectories in the TUM RGB-D format: one line ``timestamp tx ty tz qx qy qz qw`` per
frame (camera-to-world, the camera's centre and its rotation as a unit quaternion, scalar last);
the reader beside the writer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..geometry.registration import rigid_registration
from ..io_utils import atomic_write_text

__all__ = ["absolute_trajectory_error", "poses_to_tum_rows", "read_tum", "tum_rows_to_poses", "write_tum"]


def poses_to_tum_rows(timestamps: np.ndarray, cam2world: np.ndarray) -> np.ndarray:
    """``(N, 8)`` rows ``t tx ty tz qx qy qz qw`` of ``timestamps (N,)`` seconds and camera-to-world
    poses ``(N, 4, 4)`` (the rotation block is orthonormalized by the quaternion conversion)."""
    P = np.asarray(cam2world, dtype=np.float64).reshape(-1, 4, 4)
    q = Rotation.from_matrix(P[:, :3, :3]).as_quat()  # (x, y, z, w)
    return np.column_stack([np.asarray(timestamps, dtype=np.float64), P[:, :3, 3], q])


def tum_rows_to_poses(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`poses_to_tum_rows`: ``(timestamps (N,), cam2world (N, 4, 4))``."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
    P = np.tile(np.eye(4), (len(rows), 1, 1))
    if len(rows):
        P[:, :3, :3] = Rotation.from_quat(rows[:, 4:8]).as_matrix()
    P[:, :3, 3] = rows[:, 1:4]
    return rows[:, 0].copy(), P


def write_tum(path: str | os.PathLike, timestamps: np.ndarray, cam2world: np.ndarray) -> Path:
    """Write a TUM trajectory file (atomically); returns its path."""
    rows = poses_to_tum_rows(timestamps, cam2world)
    text = "# timestamp tx ty tz qx qy qz qw\n" + "".join(
        " ".join(f"{v:.9g}" for v in r) + "\n" for r in rows)
    atomic_write_text(path, text)
    return Path(path)


def read_tum(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory file: ``(timestamps (N,), cam2world (N, 4, 4))``; ``#`` lines are comments.

    Raises:
        InputError: a line without eight numbers (named by its number).
    """
    rows = []
    for k, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            vals = []
        if len(vals) != 8:
            raise InputError(f"{path}: line {k} is not 'timestamp tx ty tz qx qy qz qw'")
        rows.append(vals)
    return tum_rows_to_poses(np.array(rows).reshape(-1, 8))


def absolute_trajectory_error(est: np.ndarray, gt: np.ndarray) -> float:
    """RMS distance between the camera centres of ``est (N, 4, 4)`` and ``gt (N, 4, 4)``
    (camera-to-world) after the similarity (Umeyama) that best maps the first onto the second;
    in ``gt``'s units."""
    x = torch.from_numpy(np.asarray(est, dtype=np.float64)[:, :3, 3])
    y = torch.from_numpy(np.asarray(gt, dtype=np.float64)[:, :3, 3])
    s, R, t = rigid_registration(x, y, with_scale=True)
    return float(((s * x @ R.T + t - y).norm(dim=-1) ** 2).mean().sqrt())
