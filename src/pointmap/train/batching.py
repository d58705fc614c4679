"""Sampling and batching: sample keys, the per-batch aspect-ratio sampler, collate and symmetrize.

Sampling follows the reference: a :class:`BatchedRandomSampler` draws one aspect ratio per batch and
yields sample keys ``(index, aspect_ratio_index, epoch)``; every random choice of an item (crop
jitter, orientation, colour jitter, reader randomness) comes from a generator seeded by
``(dataset seed, epoch, index, aspect_ratio_index)`` (:meth:`~pointmap.train.datasets.PairViewDataset.item_rng`),
so items do not depend on worker layout, rank or on how many batches were drawn before (this is
what makes resumed runs exact).

:func:`collate_pairs` stacks items into ``(view1, view2)`` batches (tensors gain a leading ``B``,
strings become lists) and :func:`symmetrize_batch` interleaves every pair with its reverse.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import DatasetError

__all__ = ["SampleKey", "parse_key", "BatchedRandomSampler", "collate_pairs", "symmetrize_batch"]

SampleKey = tuple[int, int, int]
"""``(sample index, aspect-ratio index, epoch)`` as yielded by :class:`BatchedRandomSampler`."""


def parse_key(key: int | Sequence[int]) -> SampleKey:
    """A full :data:`SampleKey` from an index or a partial key (missing parts are 0)."""
    if isinstance(key, (int, np.integer)):
        return int(key), 0, 0
    k = tuple(int(x) for x in key)
    return (k + (0, 0))[:3] if len(k) < 3 else k[:3]  # type: ignore[return-value]


class BatchedRandomSampler(Sampler):
    """Batch sampler: shuffles ``num_samples`` with ``seed + epoch``, cuts global batches of
    ``batch_size * world_size`` (incomplete last batch dropped), draws one aspect-ratio index per global
    batch, and gives rank ``r`` the slice ``[r * batch_size, (r + 1) * batch_size)`` of each.

    Yields lists of :data:`SampleKey`. :meth:`set_epoch` selects the epoch; ``start_batch`` skips the
    first batches of the epoch (resume).
    """

    def __init__(self, num_samples: int, batch_size: int, num_resolutions: int = 1,
                 world_size: int = 1, rank: int = 0, seed: int = 777) -> None:
        if batch_size < 1 or num_resolutions < 1:
            raise ValueError("batch_size and num_resolutions must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.num_resolutions, self.world_size, self.rank = num_resolutions, world_size, rank
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        if len(self) == 0:
            raise DatasetError(
                f"{num_samples} pairs per epoch are fewer than one global batch "
                f"({batch_size} x {world_size} processes)"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and the first batch to yield."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self) -> int:
        """Batches per epoch (per rank), including the skipped ones."""
        return self.num_samples // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        perm = rng.permutation(self.num_samples)
        n = len(self)
        ars = rng.integers(self.num_resolutions, size=n)
        gb = self.batch_size * self.world_size
        for b in range(self.start_batch, n):
            base = b * gb + self.rank * self.batch_size
            yield [(int(perm[base + k]), int(ars[b]), self.epoch) for k in range(self.batch_size)]


def collate_pairs(items: Sequence[tuple[dict, dict]]) -> tuple[dict, dict]:
    """Stack a list of ``(view1, view2)`` items into batched ``(view1, view2)``: tensors and arrays
    gain a leading batch axis (``true_shape`` -> int32 ``(B, 2)``), other values become lists."""
    out = []
    for i in range(2):
        views = [it[i] for it in items]
        batch: dict[str, Any] = {}
        common = [k for k in views[0] if all(k in v for v in views[1:])]
        for k in common:
            vals = [v[k] for v in views]
            if isinstance(vals[0], (torch.Tensor, np.ndarray)):
                batch[k] = torch.stack([torch.as_tensor(x) for x in vals])
            elif isinstance(vals[0], (int, float, bool)) and not isinstance(vals[0], str):
                batch[k] = torch.tensor(vals)
            else:
                batch[k] = list(vals)
        if "true_shape" in batch:
            batch["true_shape"] = torch.as_tensor(batch["true_shape"]).to(torch.int32).reshape(-1, 2)
        out.append(batch)
    return out[0], out[1]


def _interleave(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.stack([a, b], dim=1).flatten(0, 1)
    return [x for pair in zip(a, b) for x in pair]


def symmetrize_batch(view1: dict, view2: dict) -> tuple[dict, dict]:
    """Feed every pair in both orders: batches ``(B, ...)`` become ``(2B, ...)`` with
    ``view1 = [a0, b0, a1, b1, ...]`` and ``view2 = [b0, a0, b1, a1, ...]``."""
    v1 = {k: _interleave(view1[k], view2[k]) for k in view1 if k in view2}
    v2 = {k: _interleave(view2[k], view1[k]) for k in view1 if k in view2}
    return v1, v2

