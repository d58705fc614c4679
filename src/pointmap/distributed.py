"""Pair inference spread over several processes (one per GPU) with ``torch.distributed``.

Each rank takes a contiguous block of the pair list, sorted so that a pair and its mirror
``(j, i)`` and pairs sharing a first image stay together, encodes only the images its own pairs
use (once each), decodes its pairs batched by shape with :func:`pointmap.inference.infer_pairs`,
and the results (CPU tensors) are gathered to rank 0 in the original pair order. Global alignment
then runs on rank 0 only; it needs the whole pair graph and is cheap next to the network.

Launch on one machine with ``N`` GPUs (torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``)::

    torchrun --nproc_per_node N -m pointmap reconstruct photos/ -o out/ --distributed

Every rank loads the model and the images; the network work is split; rank 0 aligns and writes the
outputs while the other ranks exit after inference.

Gathering moves gigabytes (8 floats per pixel per pair: 6 MB for a 512x384 pair). When all ranks
run on one host (torchrun's ``LOCAL_WORLD_SIZE`` equals the world size), each other rank streams its
results straight into a file-backed shared mapping (in ``/dev/shm`` when it has room, else the temp
folder) while it computes, and rank 0 maps those files without copying: only the small index of
offsets travels through ``torch.distributed``. Across hosts the results are gathered as objects. From Python (a script started by torchrun)::

    import torch.distributed as dist
    from pointmap.distributed import infer_pairs_distributed, init_from_env
    from pointmap.images import load_images
    from pointmap.model import load_model
    from pointmap.pairs import make_pairs

    device = init_from_env()                 # nccl + cuda:LOCAL_RANK, or gloo on the CPU
    model = load_model("default", device=device)
    images = load_images("photos/", size=512)
    pairs = make_pairs(len(images), "complete", symmetrize=True)
    preds = infer_pairs_distributed(model, images, pairs, device=device)
    if preds is not None:                    # rank 0 holds every pair, in the order of `pairs`
        ...                                  # global alignment, export
    dist.destroy_process_group()
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import InputError, PointmapError
from .images import LoadedImage
from .inference import _as_tensor, infer_pairs
from .model.network import DUSt3R
from .predictions import PairPredictions
from .process_group import init_from_env
from .store import PredictionStore

__all__ = ["infer_pairs_distributed", "init_from_env", "split_pairs"]

def split_pairs(pairs: Sequence[tuple[int, int]], world_size: int) -> list[list[int]]:
    """Assign pairs to ranks: contiguous, balanced blocks of the pair list sorted by image.

    Pairs are sorted by ``(min(i, j), max(i, j))`` so that each rank's images form a narrow range,
    and blocks are cut only between different image sets, so ``(i, j)`` and ``(j, i)`` land on the
    same rank (same two images to encode). Each cut is the allowed one nearest to the even split,
    so a block holds ``len(pairs) / world_size`` pairs give or take the largest group of pairs
    sharing one image set (2 for a symmetrized graph without repeats).

    Returns:
        ``world_size`` lists of positions into ``pairs`` (some empty when there are fewer image
        sets than ranks).
    """
    if world_size < 1:
        raise InputError(f"world_size must be >= 1, got {world_size}")
    key = lambda q: (min(pairs[q]), max(pairs[q]))
    order = sorted(range(len(pairs)), key=lambda q: (*key(q), pairs[q][0], q))
    # positions in `order` where the image set changes: the allowed cuts
    cuts = [0] + [k for k in range(1, len(order)) if key(order[k]) != key(order[k - 1])] + [len(order)]
    bounds = [0]
    for r in range(1, world_size):
        target = r * len(order) / world_size
        best = min((c for c in cuts if c >= bounds[-1]), key=lambda c: (abs(c - target), c))
        bounds.append(best)
    bounds.append(len(order))
    return [order[a:b] for a, b in itertools.pairwise(bounds)]


_ALIGN = 64  # bytes: every result tensor starts on a cache line


class _SharedArena:
    """A bump allocator over one file-backed, ``MAP_SHARED`` byte tensor that another process of
    the host can map (``torch.from_file``) and read without a copy."""

    def __init__(self, path: Path, nbytes: int) -> None:
        self.path, self.nbytes = path, max(int(nbytes), _ALIGN)
        self.buf = torch.from_file(str(path), shared=True, size=self.nbytes, dtype=torch.uint8)
        self.offset = 0

    def alloc(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        n = math.prod(shape) * dtype.itemsize
        if self.offset + n > self.nbytes:
            raise RuntimeError(f"shared result buffer {self.path} is too small ({self.nbytes} bytes)")
        t = self.buf[self.offset:self.offset + n].view(dtype).view(shape)
        self.offset += -(-n // _ALIGN) * _ALIGN
        return t

    def locate(self, t: torch.Tensor) -> tuple[int, list[int], list[int]]:
        """``(byte offset, shape, strides)`` of a view ``t`` of this arena."""
        return t.data_ptr() - self.buf.data_ptr(), list(t.shape), list(t.stride())


def _result_bytes(shapes: Sequence[tuple[int, int]], pairs: Sequence[tuple[int, int]], dtype: torch.dtype) -> int:
    """Upper bound of the arena size for ``pairs`` (4 maps per pair, each batch row-aligned)."""
    per = [(3 * shapes[i][0] * shapes[i][1] + shapes[i][0] * shapes[i][1]
            + 3 * shapes[j][0] * shapes[j][1] + shapes[j][0] * shapes[j][1]) for i, j in pairs]
    return sum(per) * dtype.itemsize + 4 * _ALIGN * (len(pairs) + 1)


def _shared_dir(nbytes: int) -> Path:
    """``/dev/shm`` when it has room for ``nbytes`` (with margin), else the temp folder."""
    for d in ("/dev/shm", tempfile.gettempdir()):
        try:
            if os.path.isdir(d) and shutil.disk_usage(d).free > 1.2 * nbytes + (1 << 28):
                return Path(d)
        except OSError:
            continue
    raise PointmapError(f"no room for {nbytes / 2**30:.1f} GiB of shared inference results in /dev/shm or "
                        f"{tempfile.gettempdir()}; use storage_dtype=torch.float16 or fewer pairs")


def _single_host(world: int, group: dist.ProcessGroup | None) -> bool:
    return group is None and os.environ.get("LOCAL_WORLD_SIZE") == str(world)


@torch.no_grad()
def infer_pairs_distributed(
    model: DUSt3R,
    images: Sequence[LoadedImage | torch.Tensor],
    pairs: Sequence[tuple[int, int]],
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool | None = None,
    group: dist.ProcessGroup | None = None,
    *,
    all_ranks: bool = False,
    storage_dtype: torch.dtype = torch.float32,
    shared_memory: bool | None = None,
    store: PredictionStore | None = None,
    descriptors: bool = False,
) -> PairPredictions | None:
    """Run the network on ordered image pairs, split across the ranks of a process group.

    Every rank must call this with the same ``images`` and ``pairs`` (a collective call). Rank
    ``r`` runs :func:`pointmap.inference.infer_pairs` on its block of :func:`split_pairs`, which
    encodes each image its pairs use once and decodes the pairs batched by shape; the per-pair
    results are then gathered (as CPU tensors) to the group's first rank.

    Args:
        model: a :class:`DUSt3R` network with the same weights on every rank.
        images: preprocessed images (``LoadedImage`` or ``(3, H, W)`` tensors in ``[-1, 1]``).
        pairs: ordered ``(i, j)`` indices into ``images``.
        batch_size, device, dtype, storage_dtype: as for :func:`~pointmap.inference.infer_pairs`
            (``device=None`` means the current CUDA device, set by :func:`init_from_env`, or CPU).
        progress: progress bar on the first rank only (default: as ``infer_pairs``).
        group: process group (default: the default group). Without an initialised group, or with
            a single rank, this is exactly ``infer_pairs``.
        all_ranks: return the full predictions on every rank (all-gather) instead of rank 0 only.
        shared_memory: hand results to rank 0 through shared file mappings (see the module
            docstring); ``None``: when all ranks are on one host and ``all_ranks`` is off.
        store: this rank's handle on a :class:`~pointmap.store.PredictionStore` folder every
            rank can reach (opened with ``rank=`` its rank, after the first rank created it):
            the pairs not yet stored are split over the ranks, each rank writes its shards into
            the store, and the first rank returns store-backed predictions (nothing is gathered).
        descriptors: with a ``store``, every rank also writes a MASt3R network's descriptors
            into it (without a store descriptors are never gathered between ranks).

    Returns:
        On the group's first rank (every rank with ``all_ranks``): :class:`PairPredictions` with,
        per pair, ``pts3d_1`` ``(H_i, W_i, 3)``, ``conf_1`` ``(H_i, W_i)``, ``pts3d_2_in_1``
        ``(H_j, W_j, 3)``, ``conf_2`` ``(H_j, W_j)`` on the CPU, in the order of ``pairs``.
        ``None`` on the other ranks.
    """
    # descriptors (MASt3R) are not gathered: only the points and confidences travel between
    # ranks; a store receives them from every rank when asked
    kw = {"batch_size": batch_size, "device": device, "dtype": dtype, "storage_dtype": storage_dtype,
          "descriptors": descriptors and store is not None}
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return infer_pairs(model, images, pairs, progress=progress, store=store, **kw)
    if len(pairs) == 0:
        raise InputError("no pairs to run")
    pairs = [(int(i), int(j)) for i, j in pairs]
    n = len(images)
    bad = [p for p in pairs if not (0 <= p[0] < n and 0 <= p[1] < n)]
    if bad:
        raise InputError(f"pairs refer to images outside 0..{n - 1}: {bad[:5]}")

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if device is None and torch.cuda.is_available():
        kw["device"] = torch.device("cuda", torch.cuda.current_device())
    if store is not None:
        done = store.done()
        left = [p for p in pairs if p not in done]
        mine_pairs = [left[q] for q in split_pairs(left, world)[rank]] if left else []
        if mine_pairs:
            infer_pairs(model, images, mine_pairs, progress=progress if rank == 0 else False,
                        store=store, **kw)
        dist.barrier(group=group)
        if rank != 0 and not all_ranks:
            return None
        store.refresh()
        return store.predictions(pairs, n_images=n)
    mine = split_pairs(pairs, world)[rank]
    dst = dist.get_global_rank(group, 0) if group is not None else 0
    if shared_memory is None:
        shared_memory = not all_ranks and _single_host(world, group)
    if shared_memory and not all_ranks:
        return _infer_shared(model, images, pairs, mine, rank, world, progress, kw)
    local: list[tuple[int, tuple[torch.Tensor, ...]]] = []
    if mine:
        show = progress if rank == 0 else False
        preds = infer_pairs(model, images, [pairs[q] for q in mine], progress=show, **kw)
        local = [(q, (preds.pts3d_1[b], preds.conf_1[b], preds.pts3d_2_in_1[b], preds.conf_2[b]))
                 for b, q in enumerate(mine)]

    if all_ranks:
        parts: list | None = [None] * world
        dist.all_gather_object(parts, local, group=group)
    else:
        parts = [None] * world if rank == 0 else None
        dist.gather_object(local, parts, dst=dst, group=group)
        if rank != 0:
            return None
    out: list[tuple[torch.Tensor, ...] | None] = [None] * len(pairs)
    for part in parts:  # type: ignore[union-attr]
        for q, res in part:
            out[q] = res
    if any(o is None for o in out):  # a rank dropped pairs: a bug, never a user error
        raise RuntimeError("distributed inference lost pairs while gathering")
    pts1, c1, pts2, c2 = (list(x) for x in zip(*out))  # type: ignore[arg-type]
    return PairPredictions(pairs, pts1, c1, pts2, c2, n_images=n)


def _infer_shared(model: DUSt3R, images: Sequence[LoadedImage | torch.Tensor], pairs: list[tuple[int, int]],
                  mine: list[int], rank: int, world: int, progress: bool | None, kw: dict) -> PairPredictions | None:
    """The single-host path of :func:`infer_pairs_distributed` (default group)."""
    n = len(images)
    token = [secrets.token_hex(8) if rank == 0 else None]
    dist.broadcast_object_list(token, src=0)
    arena = None
    index: list[tuple[int, list]] = []
    local: list[tuple[int, tuple[torch.Tensor, ...]]] = []
    try:
        if mine:
            sub = [pairs[q] for q in mine]
            alloc = None
            if rank != 0:
                shapes = [tuple(int(v) for v in _as_tensor(im).shape[-2:]) for im in images]
                need = _result_bytes(shapes, sub, kw["storage_dtype"])
                path = _shared_dir(need) / f"pointmap-{token[0]}-rank{rank}.bin"
                arena = _SharedArena(path, need)
                alloc = arena.alloc
            preds = infer_pairs(model, images, sub, progress=progress if rank == 0 else False,
                                host_alloc=alloc, **kw)
            res = list(zip(preds.pts3d_1, preds.conf_1, preds.pts3d_2_in_1, preds.conf_2))
            if arena is not None:
                index = [(q, [arena.locate(t) for t in r]) for q, r in zip(mine, res)]
            else:
                local = list(zip(mine, res))
        meta = (str(arena.path), arena.nbytes, index) if arena is not None else None
        metas: list | None = [None] * world if rank == 0 else None
        dist.gather_object(meta, metas, dst=0)
        if rank != 0:
            dist.barrier()  # rank 0 has mapped the file: it may go
            return None
        out: list[tuple[torch.Tensor, ...] | None] = [None] * len(pairs)
        for q, r in local:
            out[q] = r
        for m in metas or []:
            if m is None:
                continue
            path, nbytes, idx = m
            buf = torch.from_file(path, shared=False, size=nbytes, dtype=torch.uint8)
            os.unlink(path)  # the mapping stays valid; the name goes
            for q, locs in idx:
                out[q] = tuple(torch.as_strided(buf[off:].view(kw["storage_dtype"]), shape, stride)
                               for off, shape, stride in locs)
        dist.barrier()
    finally:
        if arena is not None:  # rank 0 unlinked it once mapped; after a failure, do not leak it
            arena.buf = None  # type: ignore[assignment]
            arena.path.unlink(missing_ok=True)
    if any(o is None for o in out):  # a rank dropped pairs: a bug, never a user error
        raise RuntimeError("distributed inference lost pairs while gathering")
    pts1, c1, pts2, c2 = (list(x) for x in zip(*out))  # type: ignore[arg-type]
    return PairPredictions(pairs, pts1, c1, pts2, c2, n_images=n)
