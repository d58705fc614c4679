"""The torchrun process group: one initialisation for distributed inference and training."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import PointmapError

__all__ = ["COLLECTIVE_TIMEOUT", "init_from_env"]

COLLECTIVE_TIMEOUT = timedelta(minutes=30)
"""How long a collective (a barrier, a gather of pair predictions, a gradient all-reduce) waits for
the other ranks before it fails with an error naming the timeout (a hung or dead rank then stops
the run instead of stalling it for torch's default of 10 minutes on NCCL and 30 on gloo, which
differ). Long enough for a rank that is still computing its share of a large scene; a rank that
legitimately needs longer between collectives can be given ``timeout=``."""

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_from_env(backend: str | None = None, timeout: timedelta = COLLECTIVE_TIMEOUT) -> torch.device:
    """Initialise the default process group from torchrun's environment variables.

    Uses ``nccl`` when CUDA is available and ``gloo`` otherwise (unless ``backend`` is given) and,
    on CUDA, makes ``cuda:LOCAL_RANK`` the current device. Does nothing to an already initialised
    group. Every collective of the group fails after ``timeout`` (:data:`COLLECTIVE_TIMEOUT`) when
    another rank does not join it.

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
            f"a distributed run needs the environment variables {', '.join(missing)}; "
            "start the command with `torchrun --nproc_per_node N ...`"
        )
    backend = backend or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend=backend, timeout=timeout)
    return device
