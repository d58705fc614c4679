"""How people hold cameras, on top of the trajectories of
:func:`~pointmap.train.synthetic.cameras.sample_trajectory`: telephoto captures taken from
further back, and handheld shake.

Poses are camera-to-world ``(V, 4, 4)`` (OpenCV axes: the optical axis is the third column of the
rotation); world metres.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from .meshes import MeshScene

__all__ = ["handheld_shake", "step_back"]


def _exit_distance(p: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Largest ``t >= 0`` with ``p + t * d`` inside the box ``[lo, hi]`` (0 when ``p`` is outside)."""
    if np.any(p < lo - 1e-6) or np.any(p > hi + 1e-6):
        return 0.0
    t = math.inf
    for k in range(3):
        if d[k] > 1e-9:
            t = min(t, (hi[k] - p[k]) / d[k])
        elif d[k] < -1e-9:
            t = min(t, (lo[k] - p[k]) / d[k])
    return max(0.0, t)


def step_back(scene: MeshScene, poses: np.ndarray, fov_from: float, fov_to: float) -> np.ndarray:
    """Move every camera back along its optical axis so that what filled a ``fov_from``-degree
    view fills a narrower ``fov_to`` one (distance to the looked-at point times
    ``tan(fov_from / 2) / tan(fov_to / 2)``), as far as the scene's free box (``free_lo`` /
    ``free_hi``, else ``cam_lo`` / ``cam_hi``) allows and never into a blocker. Orientations are kept.

    The looked-at distance of a view is that of the scene target most in front of it (along the
    axis, at least 0.5 m). Returns new poses ``(V, 4, 4)`` float32.
    """
    k = math.tan(math.radians(fov_from) / 2) / math.tan(math.radians(fov_to) / 2)
    lo = scene.free_lo if scene.free_lo is not None else scene.cam_lo
    hi = scene.free_hi if scene.free_hi is not None else scene.cam_hi
    out = poses.astype(np.float64).copy()
    for v in range(len(out)):
        eye, fwd = out[v, :3, 3], out[v, :3, 2]
        rel = scene.targets.astype(np.float64) - eye
        along = rel @ fwd
        cos = along / np.maximum(np.linalg.norm(rel, axis=1), 1e-9)
        dist = max(0.5, float(along[int(np.argmax(cos))]))
        t = min(dist * (k - 1), _exit_distance(eye, -fwd, lo, hi))
        while t > 0.05 and bool(scene.contains((eye - fwd * t)[None], 0.2)[0]):
            t *= 0.7
        if t > 0.05:
            out[v, :3, 3] = eye - fwd * t
    return out.astype(np.float32)


def handheld_shake(poses: np.ndarray, rng: np.random.Generator, rot_deg: float, shift_m: float) -> np.ndarray:
    """Each view turned by a random rotation of about ``rot_deg`` degrees (Gaussian per axis) and
    moved by about ``shift_m`` metres (Gaussian per axis), as a hand holds a camera."""
    out = poses.astype(np.float64).copy()
    if rot_deg > 0:
        R = Rotation.from_rotvec(rng.normal(0, math.radians(rot_deg), (len(out), 3))).as_matrix()
        out[:, :3, :3] = out[:, :3, :3] @ R
    if shift_m > 0:
        out[:, :3, 3] += rng.normal(0, shift_m, (len(out), 3))
    return out.astype(np.float32)
