"""Keyframes of an online reconstruction: their reduced pointmaps, which of them a new frame is
paired with, and when a new frame becomes one (by how much of a keyframe's surface it still sees)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Keyframe", "KeyframeSet", "overlap_fraction"]


def overlap_fraction(world: np.ndarray, cam2world: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> float:
    """Fraction of the world points ``world (M, 3)`` that a camera ``cam2world (4, 4)`` with
    intrinsics ``K (3, 3)`` (pixels) sees in front of it and inside its ``size = (H, W)`` image
    (pixel centres at integer coordinates, so the image spans ``[-0.5, W - 0.5)``); 0 without points."""
    if len(world) == 0:
        return 0.0
    T = np.linalg.inv(np.asarray(cam2world, dtype=np.float64))
    cam = np.asarray(world, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]
    z = cam[:, 2]
    front = z > 1e-9
    uv = cam[front, :2] / z[front, None] * np.diag(K)[:2] + K[:2, 2]
    H, W = size
    inside = (uv[:, 0] >= -0.5) & (uv[:, 0] < W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < H - 0.5)
    return float(inside.sum()) / len(world)


@dataclass
class Keyframe:
    """One keyframe, kept at reduced resolution.

    Attributes:
        frame: the frame's index in the stream.
        pose: ``(4, 4)`` float64 camera-to-world (OpenCV axes), in the online world frame.
        K: ``(3, 3)`` float64 intrinsics at the prediction resolution ``(H, W)``.
        size: ``(H, W)`` of the predictions.
        world: ``(h, w, 3)`` float16 world points of every ``stride``-th pixel.
        conf: ``(h, w)`` float16 raw confidence of those pixels.
        rgb: ``(h, w, 3)`` float16 colours in ``[0, 1]`` (grey when the frame has none).
        image: what the pair predictor needs to pair a new frame with this one
            (:meth:`~.tracker.PairPredictor.encode`'s output: a network's encoder tokens);
            dropped with the keyframe.
        descriptor: ``(D,)`` unit global descriptor for retrieval, or ``None``.
    """

    frame: int
    pose: np.ndarray
    K: np.ndarray
    size: tuple[int, int]
    world: torch.Tensor
    conf: torch.Tensor
    rgb: torch.Tensor
    image: Any = None
    descriptor: torch.Tensor | None = None

    def confident_points(self, conf_threshold: float) -> np.ndarray:
        """``(M, 3)`` float64 world points whose raw confidence exceeds ``conf_threshold``."""
        keep = (self.conf.float() > conf_threshold).numpy()
        return self.world.float().numpy()[keep].astype(np.float64)

    def move(self, new_pose: np.ndarray) -> None:
        """Give the keyframe ``new_pose``, carrying its world points rigidly with the camera."""
        C = new_pose @ np.linalg.inv(self.pose)
        w = self.world.double() @ torch.from_numpy(C[:3, :3]).T + torch.from_numpy(C[:3, 3])
        self.world, self.pose = w.half(), np.asarray(new_pose, dtype=np.float64)


class KeyframeSet:
    """The keyframes still paired with new frames: at most ``capacity`` of them (the oldest
    beyond it are retired: their pose stays in the trajectory, their maps are dropped)."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self.items: list[Keyframe] = []
        self.retired = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, kf: Keyframe) -> None:
        """Add ``kf``; retire the oldest keyframe when over capacity."""
        self.items.append(kf)
        while len(self.items) > self.capacity:
            self.items.pop(0)
            self.retired += 1

    def candidates(self, pose: np.ndarray, window: int, loop: int,
                   descriptor: torch.Tensor | None = None, max_angle_deg: float = 60.0) -> list[int]:
        """Indices into :attr:`items` of the keyframes to pair a new frame with: the ``window``
        most recent ones, then ``loop`` more (loop closure): the most similar by global descriptor
        when ``descriptor (D,)`` is given and the keyframes have one, else the nearest camera
        centres to ``pose (4, 4)`` (the frame's predicted pose) among those looking within
        ``max_angle_deg`` of its direction."""
        n = len(self.items)
        recent = list(range(max(0, n - window), n))
        older = [k for k in range(n) if k not in recent]
        if loop <= 0 or not older:
            return recent
        if descriptor is not None and all(self.items[k].descriptor is not None for k in older):
            sims = torch.stack([self.items[k].descriptor for k in older]) @ descriptor
            score = -sims.numpy()
        else:
            c = np.stack([self.items[k].pose[:3, 3] for k in older])
            d = np.stack([self.items[k].pose[:3, 2] for k in older])
            score = np.linalg.norm(c - pose[:3, 3], axis=1)
            score[d @ pose[:3, 2] < np.cos(np.radians(max_angle_deg))] = np.inf
        order = [older[k] for k in np.argsort(score, kind="stable")[:loop] if np.isfinite(score[k])]
        return recent + order
