"""`TrainConfig`: every training setting as one dataclass, loadable from YAML with overrides.

Example (YAML)::

    model: {enc_embed_dim: 1024, ..., head_type: linear, img_size: [224, 224]}   # or omit and use init
    init: checkpoints/croco_v2.pth          # any checkpoint the model loader reads (strict=False)
    train_data:
      - {kind: co3d, root: data/co3d_processed, num_pairs: 100000, aug_crop: 16, options: {mask_bg: rand}}
    test_data:
      - {kind: co3d, root: data/co3d_processed, split: test, num_pairs: 1000, color_jitter: false}
    resolution: 224                         # 224, 512 (the five reference ratios) or [[W, H], ...]
    batch_size: 16
    lr: 1.0e-4
    epochs: 100
    warmup_epochs: 10
    output_dir: runs/dust3r_224

Overrides are ``dotted.key=value`` strings whose value is parsed as YAML (``lr=2e-4``,
``amp=bf16``, ``train_data.0.num_pairs=500``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import PointmapError
from .data import DatasetSpec

__all__ = ["TrainConfig", "ConfigError", "load_train_config", "apply_overrides"]


class ConfigError(PointmapError, ValueError):
    """A training configuration file or override is invalid."""


_FREEZE = ("none", "encoder", "encoder_decoder")
_AMP = ("none", "bf16")
_PARALLEL = ("ddp", "fsdp")


@dataclass
class TrainConfig:
    """Training settings (defaults: the reference 224-linear stage on one process).

    Attributes:
        model: :class:`~pointmap.model.ModelConfig` fields; ``None`` takes the architecture of ``init``.
        init: checkpoint to initialise from (any format the model loader reads; missing keys are
            allowed, e.g. CroCo encoder/decoder-only weights; ``dec_blocks2`` copied from ``dec_blocks``).
        train_data, test_data: dataset mixtures (:class:`~pointmap.train.data.DatasetSpec`).
        resolution: training resolutions: ``224``, ``512`` or a list of ``[W, H]``.
        test_resolution: evaluation resolution ``[W, H]`` (default: the first training one).
        orientation: ``"landscape"`` or ``"auto"`` (reference orientation choice, see the data module).
        batch_size: pairs per process per iteration (each pair is also fed reversed).
        accum_iter: iterations accumulated per optimiser step.
        lr, min_lr: peak and final learning rates (absolute).
        epochs, warmup_epochs: schedule length in epochs (fractions allowed for warm-up).
        total_steps, warmup_steps: alternative schedule in optimiser steps (overrides epochs).
        stop_at_step: stop (with a checkpoint) after this many optimiser steps; the schedule is
            unaffected — used to split one run into several jobs.
        weight_decay: AdamW decay for matrices (biases and 1-D parameters get none).
        amp: ``"none"`` (fp32) or ``"bf16"`` autocast.
        compile: wrap the model with ``torch.compile``.
        parallel: multi-process strategy (used when ``WORLD_SIZE > 1``): ``"ddp"`` replicates the
            model on every rank (``DistributedDataParallel``); ``"fsdp"`` shards parameters,
            gradients and optimiser state over the ranks (``torch.distributed.fsdp.fully_shard``
            on every encoder/decoder block, then on the whole network), for large models such as
            ViT-Large 512 DPT. Both give the same updates; checkpoints have the same format.
        freeze: ``"none"``, ``"encoder"`` or ``"encoder_decoder"``.
        criterion, test_criterion: :func:`~pointmap.train.losses.build_criterion` specs.
        symmetrize: feed each pair in both orders.
        output_dir: run folder (checkpoints, logs).
        resume: continue from ``output_dir/checkpoint-last.pt`` when it exists.
        save_every_steps: also write the resume checkpoint every N optimiser steps (0: per epoch only).
        keep_freq: keep a model snapshot every N epochs (0: never).
        eval_freq: evaluate every N epochs (0: never).
        log_every: log/print every N optimiser steps.
        seed: model-init and per-item seeds (ranks add their rank where needed).
        data_seed: seed of the epoch shuffles and mixture permutations (reference: 777).
        num_workers: data-loader worker processes.
        max_minutes: wall-clock budget; the run checkpoints and stops cleanly when it is spent.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        tensorboard: write TensorBoard logs when the package is available.
        progress: show a progress bar (rank 0).
    """

    model: dict[str, Any] | None = None
    init: str | None = None
    train_data: list[DatasetSpec] = field(default_factory=list)
    test_data: list[DatasetSpec] = field(default_factory=list)
    resolution: Any = 224
    test_resolution: list[int] | None = None
    orientation: str = "landscape"
    batch_size: int = 16
    accum_iter: int = 1
    lr: float = 1e-4
    min_lr: float = 1e-6
    epochs: float = 100
    warmup_epochs: float = 10
    total_steps: int | None = None
    warmup_steps: int | None = None
    stop_at_step: int | None = None
    weight_decay: float = 0.05
    amp: str = "none"
    compile: bool = False
    parallel: str = "ddp"
    freeze: str = "none"
    criterion: dict[str, Any] = field(default_factory=lambda: {"type": "conf", "alpha": 0.2,
                                                               "norm_mode": "avg_dis"})
    test_criterion: dict[str, Any] = field(default_factory=lambda: {"type": "scale_shift_inv",
                                                                    "gt_scale": True})
    symmetrize: bool = True
    output_dir: str = "runs/train"
    resume: bool = True
    save_every_steps: int = 0
    keep_freq: int = 0
    eval_freq: int = 1
    log_every: int = 10
    seed: int = 0
    data_seed: int = 777
    num_workers: int = 0
    max_minutes: float | None = None
    device: str = "auto"
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("lr", "min_lr", "weight_decay", "epochs", "warmup_epochs", "max_minutes"):
            v = getattr(self, name)
            if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
                try:
                    setattr(self, name, float(v))
                except ValueError:
                    raise ConfigError(f"{name} must be a number, not {v!r}") from None
        self.train_data = [d if isinstance(d, DatasetSpec) else _spec(d) for d in self.train_data]
        self.test_data = [d if isinstance(d, DatasetSpec) else _spec(d) for d in self.test_data]
        if self.freeze not in _FREEZE:
            raise ConfigError(f"freeze must be one of {_FREEZE}, not {self.freeze!r}")
        if self.amp not in _AMP:
            raise ConfigError(f"amp must be one of {_AMP}, not {self.amp!r}")
        if self.parallel not in _PARALLEL:
            raise ConfigError(f"parallel must be one of {_PARALLEL}, not {self.parallel!r}")
        if self.orientation not in ("landscape", "auto"):
            raise ConfigError(f"orientation must be 'landscape' or 'auto', not {self.orientation!r}")
        if self.batch_size < 1 or self.accum_iter < 1:
            raise ConfigError("batch_size and accum_iter must be >= 1")
        if self.model is None and self.init is None:
            raise ConfigError("give a model architecture ('model') or a checkpoint to start from ('init')")
        if self.lr <= 0 or self.min_lr < 0:
            raise ConfigError(f"invalid learning rates lr={self.lr}, min_lr={self.min_lr}")

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-ready dict (round trips through :meth:`from_dict`)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown training config keys {bad}; known keys: {sorted(known)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"invalid training config: {exc}") from None


def _spec(d: Any) -> DatasetSpec:
    if not isinstance(d, dict):
        raise ConfigError(f"a dataset entry must be a mapping, got {d!r}")
    try:
        return DatasetSpec.from_dict(d)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def apply_overrides(d: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML; list items by index)."""
    for ov in overrides or []:
        key, sep, raw = ov.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {ov!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse the value of override {ov!r}: {exc}") from None
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
            except ValueError:
                pass
        node: Any = d
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if isinstance(node, list):
                node = node[int(p)]
            else:
                node = node.setdefault(p, {})
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return d


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config and apply overrides.

    Raises:
        ConfigError: unreadable YAML, unknown keys or invalid values (the message names the file).
    """
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read training config {path}: {exc}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"training config {path} must be a mapping")
    d = apply_overrides(d, overrides)
    try:
        return TrainConfig.from_dict(d)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
