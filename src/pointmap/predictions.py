"""`PairPredictions`: the network's output for a list of ordered image pairs.

This is the hand-off between pair inference and everything downstream (alignment, two-view scenes,
evaluation); it can be built from plain tensors, so downstream code is testable without a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

import torch

from .errors import InputError

__all__ = ["LazyTensors", "PairPredictions", "take"]


class LazyTensors(Sequence):
    """A read-only sequence of tensors loaded on access (e.g. from an on-disk store).

    Subclasses implement :meth:`load` and give every item's shape up front in :attr:`shapes`, so
    a :class:`PairPredictions` can be checked and indexed without reading any data. Item ``k`` is
    a fresh CPU tensor each time it is read: nothing stays in memory between reads.
    """

    shapes: list[tuple[int, ...]]

    def load(self, k: int) -> torch.Tensor:  # pragma: no cover - abstract
        """Read item ``k``."""
        raise NotImplementedError

    def take(self, indices: Sequence[int]) -> "LazyTensors":
        """The items at ``indices`` as another lazy sequence (nothing is read)."""
        return _Taken(self, [int(k) for k in indices])

    def __len__(self) -> int:
        return len(self.shapes)

    @overload
    def __getitem__(self, k: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, k: slice) -> list[torch.Tensor]: ...

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self.load(q) for q in range(*k.indices(len(self)))]
        k = int(k)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self.load(k)


class _Taken(LazyTensors):
    def __init__(self, base: LazyTensors, idx: list[int]) -> None:
        self.base, self.idx = base, idx
        self.shapes = [base.shapes[k] for k in idx]

    def load(self, k: int) -> torch.Tensor:
        return self.base.load(self.idx[k])


def take(items: Sequence[torch.Tensor], indices: Sequence[int]) -> Sequence[torch.Tensor]:
    """``[items[k] for k in indices]``, without reading anything when ``items`` is lazy."""
    if isinstance(items, LazyTensors):
        return items.take(indices)
    return [items[k] for k in indices]


def _shape(items: Sequence[torch.Tensor], k: int) -> tuple[int, ...]:
    if isinstance(items, LazyTensors):
        return tuple(items.shapes[k])
    return tuple(items[k].shape)


def _as_list(x: torch.Tensor | Sequence[torch.Tensor], name: str) -> Sequence[torch.Tensor]:
    if isinstance(x, LazyTensors):
        return x
    if isinstance(x, torch.Tensor):
        return list(x.unbind(0))
    out = list(x)
    if not all(isinstance(t, torch.Tensor) for t in out):
        raise TypeError(f"{name} must be a tensor or a sequence of tensors")
    return out


@dataclass
class PairPredictions:
    """Pointmaps and confidences for ordered image pairs ``(i, j)``.

    For pair ``k = (i, j)``:

    * ``pts3d_1[k]``: ``(H_i, W_i, 3)`` points of image ``i`` in camera ``i``'s frame;
    * ``conf_1[k]``: ``(H_i, W_i)`` their confidence (``> 1`` for DUSt3R's ``1 + exp`` mode);
    * ``pts3d_2_in_1[k]``: ``(H_j, W_j, 3)`` points of image ``j`` in camera ``i``'s frame;
    * ``conf_2[k]``: ``(H_j, W_j)`` their confidence;
    * for networks with local descriptors (MASt3R), optionally ``desc_1[k]`` ``(H_i, W_i, D)``
      (L2-normalised) and ``desc_conf_1[k]`` ``(H_i, W_i)`` of image ``i``, ``desc_2[k]``
      ``(H_j, W_j, D)`` and ``desc_conf_2[k]`` ``(H_j, W_j)`` of image ``j``; ``None`` when the
      network has none or they were not kept (at ``D = 24`` they take 8x the memory of the
      points; :meth:`drop_descriptors` frees them once matching is done).

    Units are those of the network (scale-free for DUSt3R, metres for metric models). Tensors
    live on the CPU unless moved.

    The four per-pair lists may be :class:`LazyTensors` (a store-backed result of
    :func:`pointmap.inference.infer_pairs` with a :class:`pointmap.store.PredictionStore`): the
    API is the same, but every access reads that pair from disk (float16), so code that must
    scale reads each pair once, in order, and does not keep it.

    Attributes:
        pairs: ordered ``(i, j)`` image indices, ``i != j`` not required (monocular use feeds
            ``(i, i)``).
        n_images: number of images the indices refer to (``max index + 1`` when not given).
    """

    pairs: list[tuple[int, int]]
    pts3d_1: Sequence[torch.Tensor]
    conf_1: Sequence[torch.Tensor]
    pts3d_2_in_1: Sequence[torch.Tensor]
    conf_2: Sequence[torch.Tensor]
    n_images: int = -1
    image_shapes: list[tuple[int, int]] = field(default_factory=list)
    desc_1: list[torch.Tensor] | None = None
    desc_conf_1: list[torch.Tensor] | None = None
    desc_2: list[torch.Tensor] | None = None
    desc_conf_2: list[torch.Tensor] | None = None

    _DESC = ("desc_1", "desc_conf_1", "desc_2", "desc_conf_2")

    @property
    def has_descriptors(self) -> bool:
        """Whether the descriptor fields are present."""
        return self.desc_1 is not None

    def drop_descriptors(self) -> None:
        """Free the descriptors and their confidences (sets the four fields to ``None``)."""
        for name in self._DESC:
            setattr(self, name, None)

    def _check_descriptors(self) -> None:
        given = [getattr(self, n) is not None for n in self._DESC]
        if any(given) and not all(given):
            raise ValueError("desc_1, desc_conf_1, desc_2, desc_conf_2 must be given together")
        if not all(given):
            return
        for name in self._DESC:
            setattr(self, name, _as_list(getattr(self, name), name))
            if len(getattr(self, name)) != len(self.pairs):
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {len(self.pairs)} pairs")
        for k, (i, j) in enumerate(self.pairs):  # shapes only: store-backed fields are not read
            for d, c, p, side in ((_shape(self.desc_1, k), _shape(self.desc_conf_1, k), _shape(self.pts3d_1, k), "1"),
                                  (_shape(self.desc_2, k), _shape(self.desc_conf_2, k),
                                   _shape(self.pts3d_2_in_1, k), "2")):
                if len(d) != 3 or d[:2] != p[:2] or c != p[:2]:
                    raise ValueError(
                        f"pair {(i, j)}: desc_{side} must be (H,W,D) and desc_conf_{side} (H,W) "
                        f"with the points' (H,W) {p[:2]}")

    def __post_init__(self) -> None:
        self.pairs = [(int(i), int(j)) for i, j in self.pairs]
        self.pts3d_1 = _as_list(self.pts3d_1, "pts3d_1")
        self.conf_1 = _as_list(self.conf_1, "conf_1")
        self.pts3d_2_in_1 = _as_list(self.pts3d_2_in_1, "pts3d_2_in_1")
        self.conf_2 = _as_list(self.conf_2, "conf_2")
        n = len(self.pairs)
        for name in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2"):
            if len(getattr(self, name)) != n:
                raise InputError(f"{name} has {len(getattr(self, name))} entries for {n} pairs")
        if self.n_images < 0:
            self.n_images = 1 + max((max(p) for p in self.pairs), default=-1)
        if any(min(p) < 0 or max(p) >= self.n_images for p in self.pairs):
            raise InputError(f"pair indices must lie in [0, {self.n_images})")
        shapes: dict[int, tuple[int, int]] = {}
        for e, (i, j) in enumerate(self.pairs):
            p1, c1 = _shape(self.pts3d_1, e), _shape(self.conf_1, e)
            p2, c2 = _shape(self.pts3d_2_in_1, e), _shape(self.conf_2, e)
            if len(p1) != 3 or p1[-1] != 3 or c1 != p1[:2]:
                raise InputError(f"pair {(i, j)}: pts3d_1 must be (H,W,3) with conf_1 (H,W)")
            if len(p2) != 3 or p2[-1] != 3 or c2 != p2[:2]:
                raise InputError(f"pair {(i, j)}: pts3d_2_in_1 must be (H,W,3) with conf_2 (H,W)")
            for k, shp in ((i, p1[:2]), (j, p2[:2])):
                if shapes.setdefault(k, shp) != shp:
                    raise InputError(f"image {k} appears with two shapes: {shapes[k]} and {shp}")
        if not self.image_shapes:
            self.image_shapes = [shapes.get(k, (0, 0)) for k in range(self.n_images)]
        self._check_descriptors()

    def __len__(self) -> int:
        return len(self.pairs)

    def index(self, i: int, j: int) -> int:
        """Position of the ordered pair ``(i, j)``; ``KeyError`` if absent."""
        try:
            return self.pairs.index((i, j))
        except ValueError:
            raise KeyError(f"pair {(i, j)} not in predictions") from None

    def pairs_within(self, images: Sequence[int]) -> list[int]:
        """Positions of the pairs whose two images are both in ``images`` (in pair order)."""
        inside = set(int(k) for k in images)
        return [e for e, (i, j) in enumerate(self.pairs) if i in inside and j in inside]

    def subset(self, images: Sequence[int]) -> "PairPredictions":
        """The pairs within ``images`` (:meth:`pairs_within`, order kept), re-indexed so that
        ``images[r]`` becomes image ``r``; tensors are shared, not copied.

        Raises:
            ValueError: an index of ``images`` is out of range or repeated.
        """
        images = [int(k) for k in images]
        if len(set(images)) != len(images) or any(not 0 <= k < self.n_images for k in images):
            raise InputError(f"subset images {images} must be distinct indices in [0, {self.n_images})")
        remap = {k: r for r, k in enumerate(images)}
        keep = self.pairs_within(images)
        pick = lambda ts: None if ts is None else take(ts, keep)  # noqa: E731  (lazy stays lazy)
        return PairPredictions(
            [(remap[self.pairs[e][0]], remap[self.pairs[e][1]]) for e in keep],
            pick(self.pts3d_1), pick(self.conf_1), pick(self.pts3d_2_in_1), pick(self.conf_2),
            n_images=len(images), image_shapes=[self.image_shapes[k] for k in images],
            **{n: pick(getattr(self, n)) for n in self._DESC},
        )

    @property
    def lazy(self) -> bool:
        """Whether the tensors are read from disk on access (store-backed)."""
        return isinstance(self.pts3d_1, LazyTensors)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "PairPredictions":
        """A copy with every tensor moved/cast (a store-backed instance is read into memory)."""
        mv = lambda ts: None if ts is None else [t.to(device=device, dtype=dtype) for t in ts]  # noqa: E731
        return PairPredictions(
            self.pairs, mv(self.pts3d_1), mv(self.conf_1), mv(self.pts3d_2_in_1), mv(self.conf_2),
            self.n_images, list(self.image_shapes),
            *(mv(getattr(self, n)) for n in self._DESC),
        )
