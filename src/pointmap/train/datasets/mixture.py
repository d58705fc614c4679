"""Weighted mixtures of pair datasets (the reference ``N @ dataset + M @ dataset``)."""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from ...errors import DatasetError
from ..batching import SampleKey, parse_key

__all__ = ["MixtureDataset"]


class MixtureDataset(Dataset):
    """Weighted mixture: component ``c`` contributes ``num_pairs[c]`` items per epoch (the reference
    ``N @ dataset``), drawn from a permutation of that dataset seeded by ``seed + epoch`` and cycled
    when ``N`` exceeds its size; ``None`` takes the dataset as is.

    Keys are :data:`SampleKey`; the aspect-ratio index and epoch are passed on to the component.
    """

    def __init__(self, parts: Sequence[tuple[Dataset, int | None]], seed: int = 777) -> None:
        if not parts:
            raise ValueError("a dataset mixture needs at least one dataset")
        self.datasets = [d for d, _ in parts]
        self.sizes = [len(d) if n is None else int(n) for d, n in parts]
        for d, n in zip(self.datasets, self.sizes):
            if len(d) == 0 and n > 0:
                raise DatasetError(f"dataset {type(d).__name__} is empty but {n} pairs were requested")
        self.offsets = np.cumsum([0] + self.sizes).tolist()
        self.fixed = [n is None for _, n in parts]
        self.seed = seed
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _perm(self, c: int, epoch: int) -> np.ndarray:
        key = (c, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 64:
                self._perm_cache.clear()
            self._perm_cache[key] = np.random.default_rng(self.seed + epoch).permutation(len(self.datasets[c]))
        return self._perm_cache[key]

    def locate(self, key: SampleKey) -> tuple[int, int]:
        """``(component, index in that component)`` of a mixture key."""
        idx, _, epoch = key
        if not 0 <= idx < len(self):
            raise IndexError(f"mixture index {idx} out of range [0, {len(self)})")
        c = bisect.bisect_right(self.offsets, idx) - 1
        j = idx - self.offsets[c]
        if self.fixed[c]:
            return c, j
        perm = self._perm(c, epoch)
        return c, int(perm[j % len(perm)])

    def __getitem__(self, key: int | Sequence[int]) -> tuple[dict, dict]:
        key = parse_key(key)
        c, j = self.locate(key)
        return self.datasets[c][(j, key[1], key[2])]

