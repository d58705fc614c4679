"""The training loop: AdamW + warm-up/cosine schedule, accumulation, bf16, DDP/FSDP, exact resume.

Run folder (``output_dir``) contents:

* ``checkpoint-last.pt`` — resume state (model, optimiser, step, data position, RNG states, config,
  architecture), written atomically; loadable with ``torch.load(weights_only=True)`` and, for its
  weights, with :func:`pointmap.model.load_model` (a run stopped by its time budget or by
  ``stop_at_step`` has no ``checkpoint-final.safetensors``).
* ``checkpoint-best.safetensors`` — the model with the lowest mean test ``loss_med`` so far.
* ``checkpoint-final.safetensors`` — the model at the end of the schedule;
  ``model-epochNNNN.safetensors`` every ``keep_freq`` epochs. All readable by
  :func:`pointmap.model.load_model`.
* ``log.jsonl`` — one JSON object per logged optimiser step (``{"kind": "train", "step", "epoch",
  "lr", "loss", ...}``) and per evaluation (``{"kind": "test", ...}``); see :func:`plot_loss_curve`.
* ``tb/`` — TensorBoard events (when ``tensorboard`` is installed: ``pip install pointmap[train]``).

Multi-process training uses ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``): NCCL on CUDA, gloo on CPU. Each rank sees its own slice of every global batch
(:class:`~pointmap.train.batching.BatchedRandomSampler`); only rank 0 writes files.
``TrainConfig.parallel`` picks the strategy: ``"ddp"`` (a full replica per rank) or ``"fsdp"``
(parameters, gradients and optimiser state sharded over the ranks, see :func:`shard_model`). FSDP
checkpoints are gathered to full tensors on rank 0, so both write the same files and either can
resume the other's ``checkpoint-last.pt``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..errors import CheckpointError, ConfigError
from ..io_utils import atomic_write, atomic_write_text
from .config import TrainConfig, load_train_config
from .batching import BatchedRandomSampler, collate_pairs, symmetrize_batch
from .specs import SyntheticPoolData, build_mixture
from .views import resolutions_for
from .losses import build_criterion

__all__ = [
    "train",
    "main_train",
    "TrainResult",
    "build_model",
    "freeze_model",
    "param_groups",
    "lr_at",
    "forward_loss",
    "setup_distributed",
    "shard_model",
    "plot_loss_curve",
    "read_log",
]

_NO_DEVICE_KEYS = {"instance", "dataset", "label", "idx", "rng"}


@dataclass
class TrainResult:
    """Outcome of :func:`train`: ``status`` is ``"done"``, ``"stopped"`` (``stop_at_step``) or
    ``"time_limit"``; ``step`` the optimiser steps done; ``losses`` the logged train losses of this
    invocation (rank 0); ``best_test`` the best mean test ``loss_med`` (``inf`` without tests)."""

    status: str
    step: int
    epoch: int
    output_dir: Path
    losses: list[float]
    best_test: float


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def setup_distributed() -> tuple[int, int, torch.device]:
    """Initialise ``torch.distributed`` from ``torchrun`` variables when ``WORLD_SIZE > 1``.

    Returns ``(rank, world_size, device)``; CPU runs use gloo, CUDA runs NCCL on ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return 0, 1, dev
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size(), dev


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Shard ``model`` over all ranks with FSDP (``torch.distributed.fsdp.fully_shard``), in place.

    Every encoder and decoder block is its own unit (its parameters are gathered just before it
    runs and freed after); the remaining parameters (patch embedding, norms, heads) form the root
    unit. Rank 0's weights are broadcast first, as ``DistributedDataParallel`` does. Call it after
    :func:`freeze_model` and before building the optimiser (whose parameters become the local
    shards). Needs an initialised process group (gloo on CPU, NCCL on CUDA). Returns ``model``.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from ..model.layers import DecoderBlock, EncoderBlock

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, 0)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    blocks = [m for m in model.modules() if isinstance(m, (EncoderBlock, DecoderBlock))]
    for blk in blocks:
        fully_shard(blk, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def build_model(cfg: TrainConfig) -> nn.Module:
    """Build the network of ``cfg`` and initialise it from ``cfg.model.init`` if given.

    The init checkpoint is read with :func:`pointmap.model.read_checkpoint` and copied with
    ``strict=False`` semantics (missing heads / ``dec_blocks2`` allowed; ``dec_blocks2`` is copied
    from ``dec_blocks`` when absent; shape mismatches raise :class:`CheckpointError`).
    """
    from ..model import DUSt3R, ModelConfig, load_weights, read_checkpoint

    sd = None
    arch = cfg.model.arch if cfg.model.arch is not None else None
    if cfg.model.init:
        ck_cfg, sd = read_checkpoint(cfg.model.init)
        arch = arch or ck_cfg
        if arch is None:
            raise CheckpointError(
                f"{cfg.model.init} holds weights but no architecture; give the 'model' fields in the config"
            )
    torch.manual_seed(cfg.seed)
    model = DUSt3R(arch)
    if sd is not None:
        report = load_weights(model, sd, strict=False, source=str(cfg.model.init))
        if report.missing:
            warnings.warn(f"{len(report.missing)} parameters not in {cfg.model.init} keep their initial "
                          f"values (e.g. {report.missing[0]})", stacklevel=2)
    return model


_FREEZE_PREFIXES = {
    "none": (),
    "encoder": ("mask_token", "patch_embed.", "enc_blocks."),
    "encoder_decoder": ("mask_token", "patch_embed.", "enc_blocks.", "enc_norm.", "decoder_embed.",
                        "dec_blocks.", "dec_blocks2.", "dec_norm."),
}


def freeze_model(model: nn.Module, freeze: str) -> int:
    """Set ``requires_grad=False`` on the frozen part (reference semantics: ``"encoder"`` =
    mask token, patch embedding, encoder blocks; ``"encoder_decoder"`` = everything but the heads).
    Parameters the forward pass never uses (``DUSt3R.unused_parameter_names``: ``mask_token``, a
    DPT unit without input) are always frozen. Returns the number of frozen tensors."""
    prefixes = _FREEZE_PREFIXES[freeze]
    unused = set(model.unused_parameter_names()) if hasattr(model, "unused_parameter_names") else {"mask_token"}
    n = 0
    for name, p in model.named_parameters():
        if name.startswith(prefixes) or name in unused:
            p.requires_grad_(False)
            n += 1
    return n


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for trainable matrices; none for biases and 1-D parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(progress: float, lr: float, min_lr: float, warmup: float, total: float) -> float:
    """Learning rate at ``progress`` (epochs or steps, fractional): linear warm-up from 0 over
    ``warmup``, then half-cycle cosine from ``lr`` to ``min_lr`` at ``total``."""
    if progress < warmup:
        return lr * progress / warmup
    if total <= warmup:
        return min_lr
    t = min(1.0, (progress - warmup) / (total - warmup))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def _to_device(view: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) and k not in _NO_DEVICE_KEYS
                else v) for k, v in view.items()}


def forward_loss(
    model: nn.Module,
    criterion: nn.Module,
    batch: tuple[dict, dict],
    device: torch.device,
    amp: str = "none",
    symmetrize: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one collated batch ``(view1, view2)`` (``B`` pairs; ``2B`` directed pairs when
    ``symmetrize``). The network runs under bf16 autocast if ``amp == "bf16"``; the loss in fp32."""
    v1, v2 = batch
    if symmetrize:
        v1, v2 = symmetrize_batch(v1, v2)
    v1, v2 = _to_device(v1, device), _to_device(v2, device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
        pred1, pred2 = model({"img": v1["img"], "true_shape": v1["true_shape"]},
                             {"img": v2["img"], "true_shape": v2["true_shape"]})
    with torch.autocast(device_type=device.type, enabled=False):
        return criterion(v1, v2, pred1, pred2)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": repr(random.getstate()),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import ast

    random.setstate(ast.literal_eval(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a run's ``log.jsonl``."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def plot_loss_curve(log: str | os.PathLike, png: str | os.PathLike) -> Path:
    """Plot train loss per step (and test ``loss_med`` per evaluation) of ``log.jsonl`` to ``png``.

    Needs matplotlib (``pip install pointmap[train]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError("plot_loss_curve needs matplotlib: pip install 'pointmap[train]'") from exc
    rows = read_log(log)
    tr = [r for r in rows if r.get("kind") == "train"]
    te = [r for r in rows if r.get("kind") == "test"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in tr], [r["loss"] for r in tr], label="train loss")
    if te:
        ax.plot([r["step"] for r in te], [r["loss_med"] for r in te], "o-", label="test loss_med")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(png, "wb") as f:
        f.write(buf.getvalue())
    return Path(png)


class _Logger:
    """JSONL + optional TensorBoard logging on rank 0."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.path = out / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():  # drop rows after the checkpoint
            keep = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                warnings.warn("TensorBoard logging disabled: install it with pip install 'pointmap[train]'",
                              stacklevel=3)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            prefix = row["kind"]
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------------------------
# Full (unsharded) states of an FSDP model; collectives: every rank calls them together
# ----------------------------------------------------------------------------------------------


def _full_options(cpu_offload: bool = True) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def _is_alias(key: str) -> bool:
    """DPT ``layer_rn.{k}`` keys: second names of the ``layer{k+1}_rn`` convolutions."""
    return ".dpt.scratch.layer_rn." in key


def _optimizer_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the order of ``optimizer.state_dict()``'s integer ids."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def _full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict of a sharded model on rank 0 (CPU tensors, the keys of
    ``DUSt3R.state_dict()``); an empty dict on the other ranks."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def _full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The full optimiser state of a sharded model on rank 0 in ``optimizer.state_dict()``'s
    layout (integer parameter ids), so that unsharded runs can load it; ``{}`` on other ranks."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    osd = get_optimizer_state_dict(model, optimizer, options=_full_options())
    if not osd:
        return {}
    index = {n: i for i, n in enumerate(_optimizer_names(model, optimizer))}
    return {"state": {index[n]: v for n, v in osd["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]]}


def _load_model_state(model: nn.Module, sd: dict[str, torch.Tensor], sharded: bool) -> None:
    """Load a full state dict into ``model`` (each rank keeps its shard when ``sharded``)."""
    if not sharded:
        model.load_state_dict(sd)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    # aliases share their tensors with the primary keys: load those only
    missing, unexpected = set_model_state_dict(
        model, {k: v for k, v in sd.items() if not _is_alias(k)},
        options=StateDictOptions(full_state_dict=True, strict=False))
    missing = [k for k in missing if not _is_alias(k)]
    if missing or unexpected:
        raise CheckpointError(f"the training checkpoint does not match the model: missing {missing[:3]}, "
                              f"unexpected {list(unexpected)[:3]}")


def _load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, osd: dict[str, Any],
                          sharded: bool) -> None:
    """Load an ``optimizer.state_dict()``-layout state (full tensors) on every rank."""
    if not sharded:
        optimizer.load_state_dict(osd)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = _optimizer_names(model, optimizer)
    if sum(len(g["params"]) for g in osd["param_groups"]) != len(names):
        raise CheckpointError("the optimiser state of the training checkpoint does not match the "
                              "trainable parameters (was 'freeze' changed?)")
    named = {"state": {names[i]: v for i, v in osd["state"].items()},
             "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in osd["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, named, options=_full_options(cpu_offload=False))


def _write_model_file(model: nn.Module, sd: dict[str, torch.Tensor], path: Path) -> None:
    """Write the full state ``sd`` of a (sharded) DUSt3R as a model file (rank 0)."""
    from ..model import DUSt3R, save_model

    with torch.device("meta"):
        shell = DUSt3R(model.config)
    shell.load_state_dict(sd, assign=True)
    shell.recommended_conf_threshold = model.recommended_conf_threshold
    save_model(shell, path)


@contextlib.contextmanager
def _no_grad_sync(net: nn.Module, sharded: bool):
    """Accumulate gradients locally (no all-reduce / reduce-scatter) inside the block; ``net``
    is the DDP wrapper, or the sharded model itself."""
    if not sharded:
        with net.no_sync():
            yield
        return
    net.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        net.set_requires_gradient_sync(True)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad checkpoint
        raise CheckpointError(f"cannot read the training checkpoint {path}: {exc}") from exc


@torch.no_grad()
def evaluate(model: nn.Module, cfg: TrainConfig, device: torch.device, step: int,
             cache: dict[int, list] | None = None) -> dict[str, dict]:
    """Test criterion on each test set (in order, no jitter): ``{name: {"loss_avg", "loss_med"}}``.

    ``cache`` (a dict kept by the caller) stores the collated test batches of the first call, so
    later evaluations do not read or render the test sets again."""
    res = [tuple(cfg.data.test_resolution)] if cfg.data.test_resolution else resolutions_for(cfg.data.resolution)[:1]
    criterion = build_criterion(cfg.criterion.test.spec())
    out = {}
    was_training = model.training
    model.eval()
    for i, spec in enumerate(cfg.data.test):
        if cache is None or i not in cache:
            ds = spec.build(res, seed=cfg.data.seed, orientation="landscape")
            n = len(ds) if spec.num_pairs is None else min(len(ds), spec.num_pairs)
            keys = [(j, 0, 0) for j in range(n)]
            batches = [collate_pairs([ds[k] for k in keys[b:b + cfg.data.batch_size]]) for b in range(0, n, cfg.data.batch_size)]
            if cache is not None:
                cache[i] = batches
        else:
            batches = cache[i]
        losses = []
        for batch in batches:
            loss, _ = forward_loss(model, criterion, batch, device, cfg.amp, symmetrize=True)
            losses.append(float(loss))
        name = f"{i}_{spec.kind}"
        out[name] = {"loss_avg": float(np.mean(losses)), "loss_med": float(np.median(losses))}
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, step_callback: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train according to ``cfg`` (see :class:`~pointmap.train.config.TrainConfig`).

    Resumes from ``output_dir/checkpoint-last.pt`` when ``cfg.resume`` and the file exists; the
    resumed run reproduces the uninterrupted one (same batches, same RNG states, same optimiser
    state). ``step_callback(step, loss)`` is called after every optimiser step (for monitoring).
    """
    t_start = time.monotonic()
    rank, world, device = setup_distributed()
    if cfg.device == "cpu":
        device = torch.device("cpu")
    elif cfg.device == "cuda" and device.type != "cuda":
        raise ConfigError("device 'cuda' requested but CUDA is not available; set device: auto or cpu")
    out = Path(cfg.output_dir)
    is_main = rank == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # model, optimiser, criterion
    model = build_model(cfg)
    freeze_model(model, cfg.model.freeze)
    model.to(device).train()
    sharded = world > 1 and cfg.parallel == "fsdp"
    if sharded:  # before the optimiser: it must hold the shards
        shard_model(model, device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optimizer.weight_decay), lr=cfg.optimizer.lr, betas=(0.9, 0.95))
    criterion = build_criterion(cfg.criterion.train.spec())
    net: nn.Module = model
    if world > 1 and not sharded:
        # the parameters the architecture never uses are frozen (freeze_model), so DDP needs no
        # per-iteration search for unused parameters
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.model.compile:
        net = torch.compile(net)

    # data
    if not cfg.data.train:
        raise ConfigError("the training config lists no data.train entry")
    resolutions = resolutions_for(cfg.data.resolution)
    pool = None
    if any(isinstance(s, SyntheticPoolData) for s in cfg.data.train):
        if len(cfg.data.train) != 1:
            raise ConfigError("a 'synthetic_pool' train set must be the only data.train entry")
        spec = cfg.data.train[0]
        pool = spec.build_pool(resolutions, cfg.seed, rank, world, device, progress=is_main and cfg.progress)
        iters_per_epoch = max(1, (spec.num_pairs or 100_000) // (cfg.data.batch_size * world))
    else:
        dataset = build_mixture(cfg.data.train, resolutions, seed=cfg.seed, orientation=cfg.data.orientation,
                                mixture_seed=cfg.data.seed)
        sampler = BatchedRandomSampler(len(dataset), cfg.data.batch_size, len(resolutions), world, rank,
                                       seed=cfg.data.seed)
        iters_per_epoch = len(sampler)
    if cfg.schedule.total_steps is not None:
        total_iters = cfg.schedule.total_steps * cfg.optimizer.accum_iter
        warm_iters = (cfg.schedule.warmup_steps or 0) * cfg.optimizer.accum_iter
    else:
        total_iters = int(round(cfg.schedule.epochs * iters_per_epoch))
        warm_iters = cfg.schedule.warmup_epochs * iters_per_epoch
    n_epochs = math.ceil(total_iters / iters_per_epoch)

    # resume
    it, step, best = 0, 0, math.inf
    ckpt_path = out / "checkpoint-last.pt"
    resumed = cfg.resume and ckpt_path.exists()
    if resumed:
        st = _load_state(ckpt_path)
        _load_model_state(model, st["model"], sharded)
        _load_optimizer_state(model, optimizer, st["optimizer"], sharded)
        it, step, best = int(st["iter"]), int(st["step"]), float(st["best"])
        _set_rng_state(st["rng"])
    else:
        random.seed(cfg.seed + rank)
        np.random.seed(cfg.seed + rank)
        torch.manual_seed(cfg.seed + rank)
    if pool is not None:
        if resumed and st.get("pool"):
            pool.load_state_dict(st["pool"][rank])
        else:
            pool.fill()
        if is_main:
            print(f"synthetic view pool: {pool.pool.n_scenes} scenes x {pool.n_views} views, "
                  f"{pool.n_valid_pairs} co-visible pairs, rendered in {pool.render_seconds:.1f} s", flush=True)
    eval_cache: dict[int, list] = {}
    saved_at = [-1]  # iteration of the last resume checkpoint
    logger = _Logger(out, is_main, cfg.tensorboard, step if resumed else None)

    def save(tag: str = "last") -> None:  # all ranks call it together
        saved_at[0] = it
        pool_states = None
        if pool is not None:  # every rank's pool (a collective: all ranks call save together)
            pool_states = [pool.state_dict()]
            if world > 1:
                pool_states = [None] * world
                dist.all_gather_object(pool_states, pool.state_dict())
        if sharded:  # gathered to rank 0 (collectives)
            model_state, optim_state = _full_model_state(model), _full_optimizer_state(model, optimizer)
        elif is_main:
            model_state, optim_state = model.state_dict(), optimizer.state_dict()
        if not is_main:
            return
        state = {"model": model_state, "optimizer": optim_state, "iter": it,
                 "step": step, "best": best, "rng": _rng_state(), "config": json.dumps(cfg.to_dict()),
                 "model_config": model.config.to_dict(), "pool": pool_states}
        _save_state(ckpt_path, state)

    def save_model_file(name: str) -> None:  # all ranks call it (a collective under FSDP)
        if sharded:
            sd = _full_model_state(model)
            if is_main:
                _write_model_file(model, sd, out / name)
        elif is_main:
            from ..model import save_model

            save_model(model, out / name)

    bar = None
    if is_main and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_iters, initial=it, unit="it", dynamic_ncols=True, desc="train")
    pairs_per_iter = cfg.data.batch_size * world
    losses: list[float] = []
    status = "done"
    acc_loss, acc_n, t_run, it_run = 0.0, 0, time.monotonic(), it
    optimizer.zero_grad(set_to_none=True)

    def budget_spent() -> bool:
        if cfg.schedule.max_minutes is None:
            return False
        flag = torch.tensor([float(time.monotonic() - t_start > 60 * cfg.schedule.max_minutes)])
        if world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    try:
        while it < total_iters and status == "done":
            epoch, start = divmod(it, iters_per_epoch)
            if pool is not None:
                loader = (pool.sample(cfg.data.batch_size) for _ in range(start, iters_per_epoch))
            else:
                sampler.set_epoch(epoch, start_batch=start)
                loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_pairs,
                                    num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
            for batch in loader:
                if it % cfg.optimizer.accum_iter == 0:
                    lr = lr_at(it, cfg.optimizer.lr, cfg.schedule.min_lr, warm_iters, total_iters)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                boundary = (it + 1) % cfg.optimizer.accum_iter == 0
                sync = (contextlib.nullcontext() if boundary or world == 1
                        else _no_grad_sync(model if sharded else net, sharded))
                with sync:
                    loss, details = forward_loss(net, criterion, batch, device, cfg.amp, cfg.data.symmetrize)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss {float(loss)} at iteration {it}")
                    (loss / cfg.optimizer.accum_iter).backward()
                acc_loss += float(loss.detach())
                acc_n += 1
                it += 1
                if bar is not None:
                    dt = max(time.monotonic() - t_run, 1e-9)
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                    pairs_s=f"{(it - it_run) * pairs_per_iter / dt:.1f}")
                    bar.update(1)
                if not boundary:
                    continue
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                step_loss = acc_loss / acc_n
                if world > 1:
                    t = torch.tensor([step_loss], device=device)
                    dist.all_reduce(t)
                    step_loss = float(t) / world
                acc_loss, acc_n = 0.0, 0
                losses.append(step_loss)
                if step % cfg.log_every == 0 or step == 1:
                    logger.write({"kind": "train", "step": step, "epoch": it / iters_per_epoch,
                                  "lr": optimizer.param_groups[0]["lr"], "loss": step_loss,
                                  **{k: float(v) for k, v in details.items()}})
                if step_callback is not None:
                    step_callback(step, step_loss)
                epoch_end = it % iters_per_epoch == 0 or it >= total_iters
                if epoch_end:
                    ep = math.ceil(it / iters_per_epoch)
                    if cfg.data.test and cfg.eval_freq and (ep % cfg.eval_freq == 0 or it >= total_iters):
                        improved = False
                        if is_main or sharded:  # a sharded model runs on all ranks together
                            stats = evaluate(model, cfg, device, step, cache=eval_cache)
                        if is_main:
                            med = float(np.mean([s["loss_med"] for s in stats.values()]))
                            logger.write({"kind": "test", "step": step, "epoch": ep, "loss_med": med,
                                          **{f"{n}/{k}": v for n, s in stats.items() for k, v in s.items()}})
                            if med < best:
                                best, improved = med, True
                        if world > 1:  # rank 0 decides
                            b = torch.tensor([best, float(improved)], dtype=torch.float64, device=device)
                            dist.broadcast(b, 0)
                            best, improved = float(b[0]), bool(b[1])
                        if improved:
                            save_model_file("checkpoint-best.safetensors")
                    if cfg.keep_freq and ep % cfg.keep_freq == 0:
                        save_model_file(f"model-epoch{ep:04d}.safetensors")
                if epoch_end or (cfg.save_every_steps and step % cfg.save_every_steps == 0):
                    save()
                if cfg.schedule.stop_at_step is not None and step >= cfg.schedule.stop_at_step and it < total_iters:
                    status = "stopped"
                elif budget_spent() and it < total_iters:
                    status = "time_limit"
                if status != "done":
                    if not (epoch_end or (cfg.save_every_steps and step % cfg.save_every_steps == 0)):
                        save()
                    break
                if it >= total_iters:
                    break
                if it % iters_per_epoch == 0:
                    break  # next epoch: new loader
        if status == "done":
            if saved_at[0] != it:  # not already written at this iteration
                save()
            save_model_file("checkpoint-final.safetensors")
    finally:
        if bar is not None:
            bar.close()
        logger.close()
    if world > 1:
        dist.barrier()
    return TrainResult(status, step, it // iters_per_epoch, out, losses, best)


def main_train(config_path: str | os.PathLike, overrides: list[str] | None = None,
               max_minutes: float | None = None) -> TrainResult:
    """Entry point of ``pointmap train CONFIG [key=value ...]``: load the YAML config, apply
    overrides and the optional time budget (minutes), then :func:`train`."""
    cfg = load_train_config(config_path, overrides)
    if max_minutes is not None:
        cfg.schedule.max_minutes = max_minutes
    return train(cfg)
