"""Pinhole intrinsics and camera trajectories that mimic real captures.

Poses are camera-to-world ``(4, 4)`` matrices in OpenCV axes (x right, y down, z forward); the
world is ``z`` up. Intrinsics put pixel centres at integer coordinates with the principal point at
``(W/2, H/2)`` (the reference convention) and square pixels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from .scenes import Scene

__all__ = ["MOTIONS", "fov_from_intrinsics", "intrinsics_from_fov", "look_at", "sample_trajectory"]

#: Camera motion kinds.
MOTIONS: tuple[str, ...] = ("orbit", "walk", "rotate", "nearby")


def intrinsics_from_fov(fov_x_deg: float, width: int, height: int) -> np.ndarray:
    """``(3, 3)`` float32 K for a horizontal field of view ``fov_x_deg`` (degrees) over ``width``
    pixels: ``fx = fy = (W / 2) / tan(fov_x / 2)``, principal point ``(W/2, H/2)``."""
    f = (width / 2) / math.tan(math.radians(fov_x_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float32)


def fov_from_intrinsics(K: np.ndarray, width: int) -> float:
    """Horizontal field of view in degrees of intrinsics ``K`` ``(3, 3)`` over ``width`` pixels."""
    return math.degrees(2 * math.atan((width / 2) / float(K[0, 0])))


_Z_UP = np.array([0.0, 0.0, 1.0])


def look_at(eye: np.ndarray, target: np.ndarray, roll_deg: float = 0.0, up: np.ndarray = _Z_UP) -> np.ndarray:
    """Camera-to-world ``(4, 4)`` float64 pose at ``eye`` (metres) looking at ``target``, image
    ``y`` pointing down along ``-up``, then rolled by ``roll_deg`` about the optical axis."""
    fwd = np.asarray(target, float) - np.asarray(eye, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    if np.linalg.norm(right) < 1e-6:  # looking straight up/down: pick any right vector
        right = np.cross(fwd, np.array([1.0, 0.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=1)
    if roll_deg:
        R = R @ Rotation.from_euler("z", roll_deg, degrees=True).as_matrix()
    pose = np.eye(4)
    pose[:3, :3] = R
    pose[:3, 3] = eye
    return pose


def _free_point(scene: Scene, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray,
                margin: float, tries: int = 64) -> np.ndarray:
    """A uniformly drawn point in the box ``[lo, hi]`` that is not within ``margin`` of an object."""
    pts = rng.uniform(lo, hi, size=(tries, 3))
    ok = ~scene.contains(pts, margin)
    return pts[int(np.argmax(ok))] if ok.any() else pts[0]


def _clip_free(scene: Scene, p: np.ndarray) -> np.ndarray:
    """Clamp camera centres ``(V, 3)`` into the scene's camera region."""
    return np.clip(p, scene.cam_lo, scene.cam_hi)


def sample_trajectory(scene: Scene, rng: np.random.Generator, n_views: int,
                      baseline_range: tuple[float, float], motion: str | None = None,
                      margin: float = 0.15) -> tuple[np.ndarray, str]:
    """Camera-to-world poses ``(n_views, 4, 4)`` float32 along one capture-like trajectory.

    The trajectory's total translation is ``b * d`` with ``d`` the distance from the first camera
    to its target and ``b`` log-uniform in ``baseline_range``; pairs picked from it therefore
    range from narrow (neighbouring views) to wide baselines. ``motion`` (random if ``None``):

    * ``orbit``: around the target at constant distance, elevation drifting a little;
    * ``walk``: moving forward (and slightly sideways) while looking ahead, heading drifting;
    * ``rotate``: standing nearly still and panning/tilting (a few centimetres of jitter);
    * ``nearby``: random positions around the first camera, all looking near the same target.

    Returns:
        poses, and the motion used.
    """
    if motion is None:
        probs = {"turntable": [0.7, 0.05, 0.05, 0.2], "street": [0.05, 0.6, 0.15, 0.2],
                 "room": [0.2, 0.3, 0.2, 0.3], "clutter": [0.35, 0.15, 0.15, 0.35]}[scene.layout]
        motion = str(rng.choice(MOTIONS, p=probs))
    target = scene.targets[int(rng.integers(len(scene.targets)))].astype(float)
    target = target + rng.normal(0, 0.1, size=3) * (scene.cam_hi - scene.cam_lo).mean() * 0.05
    eye0 = _free_point(scene, rng, scene.cam_lo, scene.cam_hi, margin)
    dist = float(np.linalg.norm(target - eye0))
    if dist < 0.3:
        target = eye0 + np.array([1.0, 0.0, -0.2])
        dist = float(np.linalg.norm(target - eye0))
    lo, hi = baseline_range
    span = float(np.exp(rng.uniform(math.log(lo), math.log(hi)))) * dist
    t = np.linspace(0.0, 1.0, n_views)
    roll = rng.normal(0, 3.0, size=n_views)
    if rng.uniform() < 0.5:
        t = np.sort(np.concatenate([[0.0], rng.uniform(0, 1, n_views - 1)]))  # irregular spacing
    eyes, targets = [], []
    if motion == "orbit":
        rel = eye0 - target
        radius = np.linalg.norm(rel[:2]) + 1e-6
        az0, el0 = math.atan2(rel[1], rel[0]), math.atan2(rel[2], radius)
        sweep = span / radius * rng.choice([-1, 1])
        el_drift = rng.normal(0, 0.15) * abs(sweep)
        d = np.linalg.norm(rel)
        for ti in t:
            az, el = az0 + sweep * ti, el0 + el_drift * ti
            eyes.append(target + d * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]))
            targets.append(target)
    elif motion == "walk":
        heading = target - eye0
        heading[2] *= 0.3
        heading /= np.linalg.norm(heading)
        side = np.cross(heading, [0, 0, 1.0])
        lateral = rng.normal(0, 0.2) * span
        yaw_drift = rng.normal(0, 0.25)
        for ti in t:
            e = eye0 + heading * span * ti + side * lateral * ti + rng.normal(0, 0.01, 3) * span
            h = Rotation.from_euler("z", yaw_drift * ti).apply(target - eye0)
            eyes.append(e)
            targets.append(e + h)
    elif motion == "rotate":
        pan = rng.normal(0, 1) * min(1.2, 0.3 + span / dist)
        tilt = rng.normal(0, 0.15)
        for ti in t:
            e = eye0 + rng.normal(0, 0.01, 3) * min(span, 0.05 * dist)
            rot = Rotation.from_euler("zx", [pan * ti, 0.0]).apply(target - eye0)
            rot[2] += tilt * ti * dist
            eyes.append(e)
            targets.append(e + rot)
    elif motion == "nearby":
        for i, _ in enumerate(t):
            if i == 0:
                e = eye0
            else:
                step = rng.normal(size=3)
                step[2] *= 0.4
                e = eye0 + step / np.linalg.norm(step) * span * rng.uniform(0.2, 1.0)
            eyes.append(e)
            targets.append(target + rng.normal(0, 0.1, 3) * dist)
    else:
        raise ValueError(f"unknown camera motion {motion!r}; choose from {MOTIONS}")
    eyes = _clip_free(scene, np.array(eyes))
    poses = np.stack([look_at(e, g, r) for e, g, r in zip(eyes, targets, roll)]).astype(np.float32)
    return poses, motion
