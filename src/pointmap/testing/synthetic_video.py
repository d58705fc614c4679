"""A synthetic video with exact ground truth: a camera circling the synthetic room of
:mod:`~pointmap.testing.synthetic_pairs` several times, and DUSt3R-like pair predictions of any two
of its frames fabricated on demand (same noise model), so that streams of thousands of frames
need no more memory than a few."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from ..geometry.camera import intrinsics_matrix
from .synthetic_pairs import _fabricate, _look_at, _render, _texture

__all__ = ["SyntheticVideo"]


class SyntheticVideo:
    """Frames are their indices; :meth:`encode` / :meth:`predict` / :meth:`descriptor` /
    :meth:`colours` make it a :class:`~pointmap.online.tracker.PairPredictor`.

    Args:
        size: ``(W, H)`` pixels.
        frames_per_loop: frames per turn around the room.
        noise, distortion, n_blobs: the noise model of :func:`make_synthetic_scene`.
        seed: every prediction is a deterministic function of the seed and the two frames.
    """

    def __init__(self, size: tuple[int, int] = (64, 48), frames_per_loop: int = 400, noise: float = 0.01,
                 distortion: float = 0.02, n_blobs: int = 2, seed: int = 0) -> None:
        self.W, self.H = size
        self.frames_per_loop = frames_per_loop
        self.noise, self.distortion, self.n_blobs, self.seed = noise, distortion, n_blobs, seed
        f = 0.9 * max(size)
        self.K = intrinsics_matrix(torch.tensor(f, dtype=torch.float64),
                                   torch.tensor([self.W / 2, self.H / 2], dtype=torch.float64))
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def pose(self, k: int) -> torch.Tensor:
        """``(4, 4)`` float64 true camera-to-world of frame ``k`` (a smooth wavy orbit)."""
        a = 2 * math.pi * k / self.frames_per_loop
        r = 3.0 + 0.3 * math.sin(3 * a)
        c = torch.tensor([r * math.sin(a), -0.8 + 0.2 * math.sin(2 * a), -r * math.cos(a)], dtype=torch.float64)
        target = torch.tensor([0.3 * math.sin(5 * a), 0.2, 0.3 * math.cos(4 * a)], dtype=torch.float64)
        return _look_at(c, target)

    def poses(self, n: int) -> np.ndarray:
        """``(n, 4, 4)`` float64 true poses of the first ``n`` frames."""
        return np.stack([self.pose(k).numpy() for k in range(n)])

    def _view(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera-frame points and world points ``(H, W, 3)`` of frame ``k`` (a few cached)."""
        if k not in self._cache:
            if len(self._cache) >= 16:
                self._cache.popitem(last=False)
            _, cam, world = _render(self.pose(k), self.K, self.H, self.W)
            self._cache[k] = (cam.float(), world.float())
        self._cache.move_to_end(k)
        return self._cache[k]

    def encode(self, frame: int) -> int:
        """Frames are their indices: nothing to encode."""
        return frame

    def predict(self, frame: int, others: Sequence[int]) -> list[tuple[torch.Tensor, ...]]:
        """Fabricated predictions of the pairs ``(frame, other)`` (float32)."""
        out = []
        for o in others:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + frame * 7919 + o)
            scale = float(torch.exp(0.8 * (torch.rand(1, generator=g) - 0.5)))
            rel = (torch.linalg.inv(self.pose(frame)) @ self.pose(o)).float()
            out.append(_fabricate(self._view(frame)[0], self._view(o)[0], rel, scale, g, self.noise,
                                  self.distortion, self.n_blobs, 0.1))
        return out

    def descriptor(self, frame: int) -> None:
        """No descriptors: loop-closure candidates come from the camera positions."""
        return None

    def colours(self, frame: int) -> torch.Tensor:
        """``(H, W, 3)`` colours in ``[0, 1]`` of frame ``frame``."""
        return _texture(self._view(frame)[1].double()).float()
