"""Multi-process training: the process group, DDP replicas or FSDP shards, and their full states.

``TrainConfig.parallel`` picks the strategy when ``WORLD_SIZE > 1``: ``"ddp"`` (a full replica per
rank, ``DistributedDataParallel``) or ``"fsdp"`` (parameters, gradients and optimiser state sharded
over the ranks, :func:`shard_model`). :class:`ParallelModel` hides the difference from the trainer:
its full states are gathered to rank 0 (CPU tensors, the keys of ``DUSt3R.state_dict()`` and the
layout of ``optimizer.state_dict()``), so both strategies and single-process runs write and read
the same checkpoints. Methods marked *collective* must be called by every rank together.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..process_group import init_from_env
from ..errors import CheckpointError
from ..model.layers import DecoderBlock, EncoderBlock

__all__ = ["setup_distributed", "shard_model", "ParallelModel"]


def setup_distributed() -> tuple[int, int, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``
    (:func:`pointmap.process_group.init_from_env`: NCCL on ``cuda:LOCAL_RANK``, gloo on the CPU).

    Returns ``(rank, world_size, device)``; a single process gets ``(0, 1, cuda or cpu)``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not dist.is_initialized():
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = init_from_env()
    return dist.get_rank(), dist.get_world_size(), device


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Shard ``model`` over all ranks with FSDP (``torch.distributed.fsdp.fully_shard``), in place.

    Every encoder and decoder block is its own unit (its parameters are gathered just before it
    runs and freed after); the remaining parameters (patch embedding, norms, heads) form the root
    unit. Rank 0's weights are broadcast first, as ``DistributedDataParallel`` does. Call it after
    :func:`~pointmap.train.model_init.freeze_model` and before building the optimiser (whose
    parameters become the local shards). Needs an initialised process group. Returns ``model``.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, 0)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    blocks = [m for m in model.modules() if isinstance(m, (EncoderBlock, DecoderBlock))]
    for blk in blocks:
        fully_shard(blk, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _full_options(cpu_offload: bool = True) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def _is_alias(key: str) -> bool:
    """DPT ``layer_rn.{k}`` keys: second names of the ``layer{k+1}_rn`` convolutions."""
    return ".dpt.scratch.layer_rn." in key


@dataclass
class ParallelModel:
    """One rank's model and the module its forward pass runs through.

    Attributes:
        model: the network (sharded in place under FSDP).
        net: what the forward pass calls: the DDP wrapper, the (sharded) model, or a compiled one.
        world: number of processes.
        sharded: FSDP (``True``) or a full replica (``False``).
    """

    model: nn.Module
    net: nn.Module
    world: int
    sharded: bool

    @classmethod
    def wrap(cls, model: nn.Module, device: torch.device, world: int, strategy: str = "ddp",
             compile: bool = False) -> "ParallelModel":
        """Shard (``strategy == "fsdp"``) or replicate (``"ddp"``) ``model`` over ``world`` ranks,
        then compile it if asked. Build the optimiser after this call (FSDP swaps the parameters
        for their shards)."""
        sharded = world > 1 and strategy == "fsdp"
        net = model
        if sharded:
            shard_model(model, device)
        elif world > 1:
            # the parameters the architecture never uses are frozen (freeze_model), so DDP needs no
            # per-iteration search for unused parameters
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if compile:
            net = torch.compile(net)
        return cls(model, net, world, sharded)

    @contextlib.contextmanager
    def no_grad_sync(self) -> Iterator[None]:
        """Accumulate gradients locally (no all-reduce / reduce-scatter) inside the block."""
        if self.world == 1:
            yield
        elif self.sharded:
            self.model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.model.set_requires_gradient_sync(True)
        else:
            ddp = self.net._orig_mod if hasattr(self.net, "_orig_mod") else self.net
            with ddp.no_sync():
                yield

    def _optimizer_names(self, optimizer: torch.optim.Optimizer) -> list[str]:
        """Parameter names in the order of ``optimizer.state_dict()``'s integer ids."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]

    def full_model_state(self) -> dict[str, torch.Tensor]:
        """The full state dict (*collective* under FSDP: CPU tensors on rank 0, ``{}`` elsewhere)."""
        if not self.sharded:
            return self.model.state_dict()
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.model, options=_full_options())

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The full optimiser state in ``optimizer.state_dict()``'s layout (integer parameter ids),
        so that unsharded runs can load it (*collective* under FSDP; ``{}`` off rank 0)."""
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        osd = get_optimizer_state_dict(self.model, optimizer, options=_full_options())
        if not osd:
            return {}
        index = {n: i for i, n in enumerate(self._optimizer_names(optimizer))}
        return {"state": {index[n]: v for n, v in osd["state"].items()},
                "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]]}

    def load_model_state(self, sd: dict[str, torch.Tensor]) -> None:
        """Load a full state dict (each rank keeps its shard under FSDP)."""
        if not self.sharded:
            self.model.load_state_dict(sd)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        # aliases share their tensors with the primary keys: load those only
        missing, unexpected = set_model_state_dict(
            self.model, {k: v for k, v in sd.items() if not _is_alias(k)},
            options=StateDictOptions(full_state_dict=True, strict=False))
        missing = [k for k in missing if not _is_alias(k)]
        if missing or unexpected:
            raise CheckpointError(f"the training checkpoint does not match the model: missing {missing[:3]}, "
                                  f"unexpected {list(unexpected)[:3]}")

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, osd: dict[str, Any]) -> None:
        """Load an ``optimizer.state_dict()``-layout state (full tensors) on every rank."""
        if not self.sharded:
            optimizer.load_state_dict(osd)
            return
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        names = self._optimizer_names(optimizer)
        if sum(len(g["params"]) for g in osd["param_groups"]) != len(names):
            raise CheckpointError("the optimiser state of the training checkpoint does not match the "
                                  "trainable parameters (was 'model.freeze' changed?)")
        named = {"state": {names[i]: v for i, v in osd["state"].items()},
                 "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in osd["param_groups"]]}
        set_optimizer_state_dict(self.model, optimizer, named, options=_full_options(cpu_offload=False))
