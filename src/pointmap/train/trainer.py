"""The training loop: AdamW + warm-up/cosine schedule, accumulation, bf16, DDP/FSDP, exact resume.

Run folder (``output_dir``) contents:

* ``checkpoint-last.pt`` — resume state (:mod:`pointmap.train.checkpoint_io`), written atomically;
  loadable with ``torch.load(weights_only=True)`` and, for its weights, with
  :func:`pointmap.model.load_model` (a run stopped by its time budget or by ``stop_at_step`` has no
  ``checkpoint-final.safetensors``).
* ``checkpoint-best.safetensors`` — the model with the lowest mean test ``loss_med`` so far.
* ``checkpoint-final.safetensors`` — the model at the end of the schedule;
  ``model-epochNNNN.safetensors`` every ``keep_freq`` epochs. All readable by
  :func:`pointmap.model.load_model`.
* ``config.json`` — the run's :class:`~pointmap.train.config.TrainConfig`.
* ``log.jsonl`` and ``tb/`` — :mod:`pointmap.train.runlog`.

Multi-process training uses ``torchrun``: each rank sees its own slice of every global batch
(:class:`~pointmap.train.batching.BatchedRandomSampler`); only rank 0 writes files; the model is
replicated or sharded as :mod:`pointmap.train.parallel` says.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ConfigError
from ..io_utils import atomic_write_text
from ..model import save_model
from .batching import BatchedRandomSampler, collate_pairs, symmetrize_batch
from .checkpoint_io import load_state, rng_state, save_state, set_rng_state, write_model_file
from .config import TrainConfig, load_train_config
from .losses import build_criterion
from .model_init import build_model, freeze_model, param_groups
from .parallel import ParallelModel, setup_distributed
from .runlog import RunLogger
from .schedule import Schedule
from .specs import SyntheticPoolData, build_mixture
from .views import resolutions_for

__all__ = ["Trainer", "TrainResult", "LoopState", "train", "main_train", "forward_loss", "evaluate"]

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


@dataclass
class LoopState:
    """Where a run stands (saved in the resume checkpoint): iterations and optimiser steps done,
    best mean held-out ``loss_med`` so far."""

    it: int = 0
    step: int = 0
    best: float = math.inf


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


@torch.no_grad()
def evaluate(model: nn.Module, cfg: TrainConfig, device: torch.device,
             cache: dict[int, list] | None = None) -> dict[str, dict[str, float]]:
    """Test criterion on each of ``cfg.data.test`` (in order, no jitter):
    ``{name: {"loss_avg", "loss_med"}}`` over batches of ``cfg.data.batch_size`` pairs.

    ``cache`` (a dict kept by the caller) stores the collated test batches of the first call, so
    later evaluations do not read or render the test sets again."""
    data = cfg.data
    res = [tuple(data.test_resolution)] if data.test_resolution else resolutions_for(data.resolution)[:1]
    criterion = build_criterion(cfg.criterion.test.spec())
    out = {}
    was_training = model.training
    model.eval()
    for i, spec in enumerate(data.test):
        if cache is None or i not in cache:
            ds = spec.build(res, seed=data.seed, orientation="landscape")
            n = len(ds) if spec.num_pairs is None else min(len(ds), spec.num_pairs)
            batches = [collate_pairs([ds[(j, 0, 0)] for j in range(b, min(n, b + data.batch_size))])
                       for b in range(0, n, data.batch_size)]
            if cache is not None:
                cache[i] = batches
        else:
            batches = cache[i]
        losses = [float(forward_loss(model, criterion, batch, device, cfg.amp, symmetrize=True)[0])
                  for batch in batches]
        out[f"{i}_{spec.kind}"] = {"loss_avg": float(np.mean(losses)), "loss_med": float(np.median(losses))}
    model.train(was_training)
    return out


class Trainer:
    """One training run of ``cfg`` on this process (every rank of a ``torchrun`` job builds one).

    Construction joins the process group, writes ``config.json`` (rank 0), builds the model (wrapped
    for DDP/FSDP), the optimiser, the criterion and the training data. Then :meth:`resume` restores
    ``checkpoint-last.pt`` (or seeds a fresh run) and :meth:`fit` runs the loop; :meth:`step` does one
    iteration, :meth:`evaluate` the held-out sets, :meth:`save` the resume checkpoint. Methods that
    say *collective* must be called by every rank together.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.t_start = time.monotonic()
        self.rank, self.world, device = setup_distributed()
        if cfg.device == "cpu":
            device = torch.device("cpu")
        elif cfg.device == "cuda" and device.type != "cuda":
            raise ConfigError("device 'cuda' requested but CUDA is not available; set device: auto or cpu")
        if not cfg.data.train:
            raise ConfigError("the training config lists no data.train entry")
        pools = [s for s in cfg.data.train if isinstance(s, SyntheticPoolData)]
        if pools and len(cfg.data.train) != 1:
            raise ConfigError("a 'synthetic_pool' train set must be the only data.train entry")
        self.device = device
        self.is_main = self.rank == 0
        self.out = Path(cfg.output_dir)
        self.ckpt_path = self.out / "checkpoint-last.pt"
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        model = build_model(cfg)
        freeze_model(model, cfg.model.freeze)
        model.to(device).train()
        # before the optimiser: under FSDP it must hold the shards
        self.parallel = ParallelModel.wrap(model, device, self.world, cfg.parallel, cfg.model.compile)
        self.model = model
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.optimizer.weight_decay), lr=cfg.optimizer.lr,
                                           betas=(0.9, 0.95))
        self.criterion = build_criterion(cfg.criterion.train.spec())

        resolutions = resolutions_for(cfg.data.resolution)
        self.pool = None
        self.dataset = self.sampler = None
        if pools:
            self.pool = pools[0].build_pool(resolutions, cfg.seed, self.rank, self.world, device,
                                            progress=self.is_main and cfg.progress)
            iters_per_epoch = max(1, (pools[0].num_pairs or 100_000) // (cfg.data.batch_size * self.world))
        else:
            self.dataset = build_mixture(cfg.data.train, resolutions, seed=cfg.seed,
                                         orientation=cfg.data.orientation, mixture_seed=cfg.data.seed)
            self.sampler = BatchedRandomSampler(len(self.dataset), cfg.data.batch_size, len(resolutions),
                                                self.world, self.rank, seed=cfg.data.seed)
            iters_per_epoch = len(self.sampler)
        self.schedule = Schedule.of(cfg, iters_per_epoch)
        self.state = LoopState()
        self.losses: list[float] = []  # logged step losses of this invocation
        self.last_loss = math.nan  # loss of the last iteration
        self.saved_at = -1  # iteration of the last resume checkpoint
        self.logger = RunLogger(self.out, False, False, None)
        self._eval_cache: dict[int, list] = {}
        self._acc_loss, self._acc_n = 0.0, 0

    # ------------------------------------------------------------------------------------------
    # resume / save
    # ------------------------------------------------------------------------------------------

    def resume(self) -> bool:
        """Restore ``checkpoint-last.pt`` when ``cfg.resume`` and it exists (model, optimiser, loop
        state, RNG states, the view pool), else seed the global generators with ``seed + rank`` and
        fill the pool. Opens the run log. Returns whether the run was resumed."""
        cfg = self.cfg
        st = load_state(self.ckpt_path) if cfg.resume and self.ckpt_path.exists() else None
        if st is not None:
            self.parallel.load_model_state(st["model"])
            self.parallel.load_optimizer_state(self.optimizer, st["optimizer"])
            self.state = LoopState(int(st["iter"]), int(st["step"]), float(st["best"]))
            set_rng_state(st["rng"])
        else:
            random.seed(cfg.seed + self.rank)
            np.random.seed(cfg.seed + self.rank)
            torch.manual_seed(cfg.seed + self.rank)
        if self.pool is not None:
            if st is not None and st.get("pool"):
                self.pool.load_state_dict(st["pool"][self.rank])
            else:
                self.pool.fill()
            if self.is_main:
                print(f"synthetic view pool: {self.pool.pool.n_scenes} scenes x {self.pool.n_views} views, "
                      f"{self.pool.n_valid_pairs} co-visible pairs, rendered in {self.pool.render_seconds:.1f} s",
                      flush=True)
        self.logger = RunLogger(self.out, self.is_main, cfg.tensorboard, self.state.step if st is not None else None)
        return st is not None

    def save(self) -> None:
        """Write the resume checkpoint of the current iteration (*collective*; rank 0 writes)."""
        self.saved_at = self.state.it
        pool_states = None
        if self.pool is not None:  # every rank's pool
            pool_states = [self.pool.state_dict()]
            if self.world > 1:
                pool_states = [None] * self.world
                dist.all_gather_object(pool_states, self.pool.state_dict())
        model_state = self.parallel.full_model_state()
        optim_state = self.parallel.full_optimizer_state(self.optimizer)
        if not self.is_main:
            return
        s = self.state
        save_state(self.ckpt_path, {
            "model": model_state, "optimizer": optim_state, "iter": s.it, "step": s.step, "best": s.best,
            "rng": rng_state(), "config": json.dumps(self.cfg.to_dict()),
            "model_config": self.model.config.to_dict(), "pool": pool_states})

    def save_model_file(self, name: str) -> None:
        """Write the model as ``output_dir/name`` (*collective* under FSDP; rank 0 writes)."""
        if not self.parallel.sharded:
            if self.is_main:
                save_model(self.model, self.out / name)
            return
        sd = self.parallel.full_model_state()  # gathered to rank 0
        if self.is_main:
            write_model_file(self.model, sd, self.out / name)

    # ------------------------------------------------------------------------------------------
    # one iteration, evaluation
    # ------------------------------------------------------------------------------------------

    def step(self, batch: tuple[dict, dict]) -> float | None:
        """One iteration on ``batch``: forward, backward and, on the last iteration of an
        accumulation group, the optimiser step (gradients synchronised over the ranks) and its log
        row. Returns the optimiser step's loss (mean over the group and the ranks) or ``None``."""
        cfg, s = self.cfg, self.state
        accum = cfg.optimizer.accum_iter
        if s.it % accum == 0:
            for g in self.optimizer.param_groups:
                g["lr"] = self.schedule.lr_at(s.it)
        boundary = (s.it + 1) % accum == 0
        with contextlib.nullcontext() if boundary else self.parallel.no_grad_sync():
            loss, details = forward_loss(self.parallel.net, self.criterion, batch, self.device, cfg.amp,
                                         cfg.data.symmetrize)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {float(loss)} at iteration {s.it}")
            (loss / accum).backward()
        self.last_loss = float(loss.detach())
        self._acc_loss += self.last_loss
        self._acc_n += 1
        s.it += 1
        if not boundary:
            return None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        s.step += 1
        step_loss = self._acc_loss / self._acc_n
        if self.world > 1:
            t = torch.tensor([step_loss], device=self.device)
            dist.all_reduce(t)
            step_loss = float(t) / self.world
        self._acc_loss, self._acc_n = 0.0, 0
        self.losses.append(step_loss)
        if s.step % cfg.log_every == 0 or s.step == 1:
            self.logger.write({"kind": "train", "step": s.step, "epoch": s.it / self.schedule.iters_per_epoch,
                               "lr": self.optimizer.param_groups[0]["lr"], "loss": step_loss,
                               **{k: float(v) for k, v in details.items()}})
        return step_loss

    def evaluate(self) -> dict[str, dict[str, float]] | None:
        """The held-out losses (:func:`evaluate`) of the current model, on rank 0 (on every rank
        under FSDP, *collective*); ``None`` on the other ranks."""
        if not (self.is_main or self.parallel.sharded):
            return None
        return evaluate(self.model, self.cfg, self.device, cache=self._eval_cache)

    def _evaluate_and_keep_best(self, epoch: int) -> None:
        """Evaluate, log, and write ``checkpoint-best.safetensors`` when the mean ``loss_med``
        improved (rank 0 decides; *collective*)."""
        s = self.state
        stats = self.evaluate()
        improved = False
        if self.is_main:
            med = float(np.mean([v["loss_med"] for v in stats.values()]))
            self.logger.write({"kind": "test", "step": s.step, "epoch": epoch, "loss_med": med,
                               **{f"{n}/{k}": v for n, d in stats.items() for k, v in d.items()}})
            if med < s.best:
                s.best, improved = med, True
        if self.world > 1:
            b = torch.tensor([s.best, float(improved)], dtype=torch.float64, device=self.device)
            dist.broadcast(b, 0)
            s.best, improved = float(b[0]), bool(b[1])
        if improved:
            self.save_model_file("checkpoint-best.safetensors")

    # ------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------

    def _epoch_batches(self) -> Iterable[tuple[dict, dict]]:
        """The remaining batches of the current epoch."""
        epoch, start = divmod(self.state.it, self.schedule.iters_per_epoch)
        if self.pool is not None:
            return (self.pool.sample(self.cfg.data.batch_size) for _ in range(start, self.schedule.iters_per_epoch))
        self.sampler.set_epoch(epoch, start_batch=start)
        return DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate_pairs,
                          num_workers=self.cfg.data.num_workers, pin_memory=self.device.type == "cuda")

    def _budget_spent(self) -> bool:
        """The wall-clock budget is spent on some rank (*collective*)."""
        if self.cfg.schedule.max_minutes is None:
            return False
        flag = torch.tensor([float(time.monotonic() - self.t_start > 60 * self.cfg.schedule.max_minutes)])
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _after_step(self) -> str:
        """End-of-epoch evaluation and snapshots, periodic checkpoints, and the stop decision
        (``"done"`` to go on, ``"stopped"`` or ``"time_limit"``) after an optimiser step."""
        cfg, s, total = self.cfg, self.state, self.schedule.total_iters
        epoch_end = s.it % self.schedule.iters_per_epoch == 0 or s.it >= total
        if epoch_end:
            ep = math.ceil(s.it / self.schedule.iters_per_epoch)
            if cfg.data.test and cfg.eval_freq and (ep % cfg.eval_freq == 0 or s.it >= total):
                self._evaluate_and_keep_best(ep)
            if cfg.keep_freq and ep % cfg.keep_freq == 0:
                self.save_model_file(f"model-epoch{ep:04d}.safetensors")
        saved = epoch_end or bool(cfg.save_every_steps and s.step % cfg.save_every_steps == 0)
        if saved:
            self.save()
        status = "done"
        if cfg.schedule.stop_at_step is not None and s.step >= cfg.schedule.stop_at_step and s.it < total:
            status = "stopped"
        elif self._budget_spent() and s.it < total:
            status = "time_limit"
        if status != "done" and not saved:
            self.save()
        return status

    def fit(self, step_callback: Callable[[int, float], None] | None = None) -> TrainResult:
        """Run the schedule from the current state to its end, a stop or the time budget.

        ``step_callback(step, loss)`` is called after every optimiser step (for monitoring)."""
        sched, s = self.schedule, self.state
        bar = None
        if self.is_main and self.cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sched.total_iters, initial=s.it, unit="it", dynamic_ncols=True, desc="train")
        pairs_per_iter = self.cfg.data.batch_size * self.world
        t_run, it_run = time.monotonic(), s.it
        status = "done"
        self.optimizer.zero_grad(set_to_none=True)
        try:
            while s.it < sched.total_iters and status == "done":
                for batch in self._epoch_batches():
                    step_loss = self.step(batch)
                    if bar is not None:
                        dt = max(time.monotonic() - t_run, 1e-9)
                        bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                        pairs_s=f"{(s.it - it_run) * pairs_per_iter / dt:.1f}")
                        bar.update(1)
                    if step_loss is None:
                        continue
                    if step_callback is not None:
                        step_callback(s.step, step_loss)
                    status = self._after_step()
                    if status != "done" or s.it >= sched.total_iters or s.it % sched.iters_per_epoch == 0:
                        break  # stop, or the next epoch (a new loader)
            if status == "done":
                if self.saved_at != s.it:  # not already written at this iteration
                    self.save()
                self.save_model_file("checkpoint-final.safetensors")
        finally:
            if bar is not None:
                bar.close()
            self.logger.close()
        if self.world > 1:
            dist.barrier()
        return TrainResult(status, s.step, s.it // sched.iters_per_epoch, self.out, self.losses, s.best)


def train(cfg: TrainConfig, step_callback: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train according to ``cfg`` (see :class:`~pointmap.train.config.TrainConfig`).

    Resumes from ``output_dir/checkpoint-last.pt`` when ``cfg.resume`` and the file exists; the
    resumed run reproduces the uninterrupted one (same batches, same RNG states, same optimiser
    state). ``step_callback(step, loss)`` is called after every optimiser step (for monitoring).
    """
    trainer = Trainer(cfg)
    trainer.resume()
    return trainer.fit(step_callback)


def main_train(config_path: str | Path, overrides: list[str] | None = None,
               max_minutes: float | None = None) -> TrainResult:
    """Entry point of ``pointmap train CONFIG [key=value ...]``: load the YAML config, apply
    overrides and the optional time budget (minutes), then :func:`train`."""
    cfg = load_train_config(config_path, overrides)
    if max_minutes is not None:
        cfg.schedule.max_minutes = max_minutes
    return train(cfg)
