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
outputs while the other ranks exit after inference. From Python (a script started by torchrun)::

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
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

from .errors import PointmapError
from .images import LoadedImage
from .inference import infer_pairs
from .model.network import DUSt3R
from .predictions import PairPredictions

__all__ = ["infer_pairs_distributed", "init_from_env", "split_pairs"]

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_from_env(backend: str | None = None) -> torch.device:
    """Initialise the default process group from torchrun's environment variables.

    Uses ``nccl`` when CUDA is available and ``gloo`` otherwise (unless ``backend`` is given) and,
    on CUDA, makes ``cuda:LOCAL_RANK`` the current device. Does nothing to an already initialised
    group.

    Returns:
        The device this rank should compute on (``cuda:LOCAL_RANK`` or ``cpu``).

    Raises:
        PointmapError: when the torchrun variables are missing (the script was not started by
            ``torchrun``).
    """
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return device
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise PointmapError(
            f"distributed inference needs the environment variables {', '.join(missing)}; "
            "start the command with `torchrun --nproc_per_node N ...`"
        )
    backend = backend or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend=backend)
    return device


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
        raise ValueError(f"world_size must be >= 1, got {world_size}")
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

    Returns:
        On the group's first rank (every rank with ``all_ranks``): :class:`PairPredictions` with,
        per pair, ``pts3d_1`` ``(H_i, W_i, 3)``, ``conf_1`` ``(H_i, W_i)``, ``pts3d_2_in_1``
        ``(H_j, W_j, 3)``, ``conf_2`` ``(H_j, W_j)`` on the CPU, in the order of ``pairs``.
        ``None`` on the other ranks.
    """
    kw = {"batch_size": batch_size, "device": device, "dtype": dtype, "storage_dtype": storage_dtype}
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return infer_pairs(model, images, pairs, progress=progress, **kw)
    if len(pairs) == 0:
        raise ValueError("no pairs to run")
    pairs = [(int(i), int(j)) for i, j in pairs]
    n = len(images)
    bad = [p for p in pairs if not (0 <= p[0] < n and 0 <= p[1] < n)]
    if bad:
        raise ValueError(f"pairs refer to images outside 0..{n - 1}: {bad[:5]}")

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if device is None and torch.cuda.is_available():
        kw["device"] = torch.device("cuda", torch.cuda.current_device())
    mine = split_pairs(pairs, world)[rank]
    local: list[tuple[int, tuple[torch.Tensor, ...]]] = []
    if mine:
        show = progress if rank == 0 else False
        preds = infer_pairs(model, images, [pairs[q] for q in mine], progress=show, **kw)
        local = [(q, (preds.pts3d_1[b], preds.conf_1[b], preds.pts3d_2_in_1[b], preds.conf_2[b]))
                 for b, q in enumerate(mine)]

    dst = dist.get_global_rank(group, 0) if group is not None else 0
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
