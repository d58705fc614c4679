"""The learning-rate schedule: linear warm-up then half-cycle cosine, in iterations."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import TrainConfig

__all__ = ["lr_at", "Schedule"]



def lr_at(progress: float, lr: float, min_lr: float, warmup: float, total: float) -> float:
    """Learning rate at ``progress`` (epochs or steps, fractional): linear warm-up from 0 over
    ``warmup``, then half-cycle cosine from ``lr`` to ``min_lr`` at ``total``."""
    if progress < warmup:
        return lr * progress / warmup
    if total <= warmup:
        return min_lr
    t = min(1.0, (progress - warmup) / (total - warmup))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Schedule:
    """A run's length and learning rates, counted in iterations (``accum_iter`` iterations make one
    optimiser step).

    Attributes:
        iters_per_epoch: iterations per epoch (per rank).
        total_iters, warm_iters: schedule length and warm-up (fractional warm-up allowed).
        lr, min_lr: peak and final learning rates.
    """

    iters_per_epoch: int
    total_iters: int
    warm_iters: float
    lr: float
    min_lr: float

    @classmethod
    def of(cls, cfg: TrainConfig, iters_per_epoch: int) -> "Schedule":
        """The schedule of ``cfg``: ``schedule.total_steps``/``warmup_steps`` when given (optimiser
        steps), else ``epochs``/``warmup_epochs``."""
        s, accum = cfg.schedule, cfg.optimizer.accum_iter
        if s.total_steps is not None:
            total, warm = s.total_steps * accum, (s.warmup_steps or 0) * accum
        else:
            total, warm = int(round(s.epochs * iters_per_epoch)), s.warmup_epochs * iters_per_epoch
        return cls(iters_per_epoch, total, warm, cfg.optimizer.lr, s.min_lr)

    def lr_at(self, it: int) -> float:
        """Learning rate of iteration ``it``."""
        return lr_at(it, self.lr, self.min_lr, self.warm_iters, self.total_iters)
