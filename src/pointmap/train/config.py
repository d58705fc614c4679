"""`TrainConfig`: every training setting as nested typed dataclasses, loadable from YAML with overrides.

Example (YAML)::

    model:
      arch: {enc_embed_dim: 1024, ..., head_type: linear, img_size: [224, 224]}  # or omit: init's
      init: checkpoints/croco_v2.pth        # any checkpoint the model loader reads (strict=False)
      freeze: none
    criterion:
      train: {type: conf, alpha: 0.2, norm_mode: avg_dis}
      test: {type: scale_shift_inv, gt_scale: true}
    data:
      train:
        - {kind: co3d, root: data/co3d_processed, num_pairs: 100000, aug_crop: 16, mask_bg: rand}
      test:
        - {kind: co3d, root: data/co3d_processed, split: test, num_pairs: 1000, color_jitter: false}
      resolution: 224                       # 224, 512 (the five reference ratios) or [[W, H], ...]
      batch_size: 16
    optimizer: {lr: 1.0e-4, weight_decay: 0.05}
    schedule: {epochs: 100, warmup_epochs: 10}
    output_dir: runs/dust3r_224

Dataset entries are typed per ``kind`` (:mod:`pointmap.train.specs`). Overrides are
``dotted.key=value`` strings whose value is parsed as YAML (``optimizer.lr=2e-4``, ``amp=bf16``,
``data.train.0.num_pairs=500``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, PointmapError
from ..model import ModelConfig
from .losses import CRITERION_TYPES
from .specs import DatasetSpec

__all__ = [
    "TrainConfig",
    "ModelSetup",
    "LossConfig",
    "CriterionSetup",
    "DataSetup",
    "OptimizerSetup",
    "ScheduleSetup",
    "load_train_config",
    "apply_overrides",
]

_FREEZE = ("none", "encoder", "encoder_decoder")
_AMP = ("none", "bf16")
_PARALLEL = ("ddp", "fsdp")
_DEVICE = ("auto", "cpu", "cuda")


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{where} must be one of {allowed}, not {value!r}")


@dataclass
class ModelSetup:
    """The network to train.

    Attributes:
        arch: the architecture (:class:`~pointmap.model.ModelConfig` fields in YAML); ``None`` takes
            the architecture of ``init``.
        init: checkpoint to initialise from (any format the model loader reads; missing keys are
            allowed, e.g. CroCo encoder/decoder-only weights; ``dec_blocks2`` copied from ``dec_blocks``).
        freeze: ``"none"``, ``"encoder"`` or ``"encoder_decoder"``.
        compile: wrap the model with ``torch.compile``.
    """

    arch: ModelConfig | None = None
    init: str | None = None
    freeze: str = "none"
    compile: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.arch, dict):
            try:
                self.arch = ModelConfig.from_dict(_yaml_floats(ModelConfig, self.arch, "model.arch"))
            except (PointmapError, TypeError, ValueError) as exc:
                raise ConfigError(f"model.arch: {exc}") from None
        _choice("model.freeze", self.freeze, _FREEZE)


@dataclass
class LossConfig:
    """One criterion (:func:`~pointmap.train.losses.build_criterion`).

    Attributes:
        type: ``"conf"`` (confidence-weighted 3D regression), ``"regr3d"`` or ``"scale_shift_inv"``.
        alpha: confidence regularisation weight (``conf``).
        norm_mode: point normalisation (``"avg_dis"``: mean distance to the origin).
        gt_scale: normalise predictions with the ground truth's scale; ``None``: the type's default
            (on for ``scale_shift_inv`` only).
    """

    type: str = "conf"
    alpha: float = 0.2
    norm_mode: str = "avg_dis"
    gt_scale: bool | None = None

    def __post_init__(self) -> None:
        _choice("criterion type", self.type, CRITERION_TYPES)

    def spec(self) -> dict[str, Any]:
        """The dict that :func:`~pointmap.train.losses.build_criterion` takes."""
        d = dataclasses.asdict(self)
        if d["gt_scale"] is None:
            del d["gt_scale"]
        return d


@dataclass
class CriterionSetup:
    """Training and held-out criteria (defaults: the reference's)."""

    train: LossConfig = field(default_factory=LossConfig)
    test: LossConfig = field(default_factory=lambda: LossConfig(type="scale_shift_inv", gt_scale=True))


@dataclass
class DataSetup:
    """What the network sees.

    Attributes:
        train, test: dataset mixtures (typed entries, :mod:`pointmap.train.specs`).
        resolution: training resolutions: ``224``, ``512`` or a list of ``[W, H]``.
        test_resolution: evaluation resolution ``[W, H]`` (default: the first training one).
        orientation: ``"landscape"`` or ``"auto"`` (reference orientation choice,
            :func:`~pointmap.train.views.crop_resize`).
        batch_size: pairs per process per iteration (each pair is also fed reversed).
        symmetrize: feed each pair in both orders.
        num_workers: data-loader worker processes.
        seed: seed of the epoch shuffles and mixture permutations (reference: 777).
    """

    train: list[DatasetSpec] = field(default_factory=list)
    test: list[DatasetSpec] = field(default_factory=list)
    resolution: Any = 224
    test_resolution: list[int] | None = None
    orientation: str = "landscape"
    batch_size: int = 16
    symmetrize: bool = True
    num_workers: int = 0
    seed: int = 777

    def __post_init__(self) -> None:
        for name in ("train", "test"):
            entries = getattr(self, name)
            if not isinstance(entries, list):
                raise ConfigError(f"data.{name} must be a list of dataset entries, got {entries!r}")
            setattr(self, name, [e if isinstance(e, DatasetSpec) else DatasetSpec.from_dict(e) for e in entries])
        _choice("data.orientation", self.orientation, ("landscape", "auto"))
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, not {self.batch_size}")


@dataclass
class OptimizerSetup:
    """AdamW (betas 0.9, 0.95).

    Attributes:
        lr: peak learning rate (absolute).
        weight_decay: decay for matrices (biases and 1-D parameters get none).
        accum_iter: iterations accumulated per optimiser step.
    """

    lr: float = 1e-4
    weight_decay: float = 0.05
    accum_iter: int = 1

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"invalid optimizer.lr={self.lr} or optimizer.weight_decay={self.weight_decay}")
        if self.accum_iter < 1:
            raise ConfigError(f"optimizer.accum_iter must be >= 1, not {self.accum_iter}")


@dataclass
class ScheduleSetup:
    """Learning-rate schedule (linear warm-up, half-cycle cosine) and stopping.

    Attributes:
        epochs, warmup_epochs: schedule length in epochs (fractions allowed for warm-up).
        total_steps, warmup_steps: alternative schedule in optimiser steps (overrides epochs).
        min_lr: final learning rate (absolute).
        stop_at_step: stop (with a checkpoint) after this many optimiser steps; the schedule is
            unaffected — used to split one run into several jobs.
        max_minutes: wall-clock budget; the run checkpoints and stops cleanly when it is spent.
    """

    epochs: float = 100
    warmup_epochs: float = 10
    total_steps: int | None = None
    warmup_steps: int | None = None
    min_lr: float = 1e-6
    stop_at_step: int | None = None
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.min_lr < 0:
            raise ConfigError(f"schedule.min_lr must be >= 0, not {self.min_lr}")


_SECTIONS = {"model": ModelSetup, "criterion": CriterionSetup, "data": DataSetup, "optimizer": OptimizerSetup,
             "schedule": ScheduleSetup}


@dataclass
class TrainConfig:
    """Training settings (defaults: the reference 224-linear stage on one process).

    Attributes:
        model, criterion, data, optimizer, schedule: the sections above.
        amp: ``"none"`` (fp32) or ``"bf16"`` autocast.
        parallel: multi-process strategy (used when ``WORLD_SIZE > 1``): ``"ddp"`` replicates the
            model on every rank (``DistributedDataParallel``); ``"fsdp"`` shards parameters,
            gradients and optimiser state over the ranks (``torch.distributed.fsdp.fully_shard``
            on every encoder/decoder block, then on the whole network), for large models such as
            ViT-Large 512 DPT. Both give the same updates; checkpoints have the same format.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: model-init and per-item seeds (ranks add their rank where needed).
        output_dir: run folder (checkpoints, logs).
        resume: continue from ``output_dir/checkpoint-last.pt`` when it exists.
        save_every_steps: also write the resume checkpoint every N optimiser steps (0: per epoch only).
        keep_freq: keep a model snapshot every N epochs (0: never).
        eval_freq: evaluate every N epochs (0: never).
        log_every: log/print every N optimiser steps.
        tensorboard: write TensorBoard logs when the package is available.
        progress: show a progress bar (rank 0).
    """

    model: ModelSetup = field(default_factory=ModelSetup)
    criterion: CriterionSetup = field(default_factory=CriterionSetup)
    data: DataSetup = field(default_factory=DataSetup)
    optimizer: OptimizerSetup = field(default_factory=OptimizerSetup)
    schedule: ScheduleSetup = field(default_factory=ScheduleSetup)
    amp: str = "none"
    parallel: str = "ddp"
    device: str = "auto"
    seed: int = 0
    output_dir: str = "runs/train"
    resume: bool = True
    save_every_steps: int = 0
    keep_freq: int = 0
    eval_freq: int = 1
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        _choice("amp", self.amp, _AMP)
        _choice("parallel", self.parallel, _PARALLEL)
        _choice("device", self.device, _DEVICE)
        if self.model.arch is None and self.model.init is None:
            raise ConfigError("give a model architecture ('model.arch') or a checkpoint to start from ('model.init')")
        if self.schedule.min_lr > self.optimizer.lr:
            raise ConfigError(f"schedule.min_lr={self.schedule.min_lr} exceeds optimizer.lr={self.optimizer.lr}")

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-ready nested dict (round trips through :meth:`from_dict`)."""
        return json.loads(json.dumps(_plain(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a nested mapping; unknown keys and invalid values raise :class:`ConfigError`
        naming the dotted key."""
        return _build(cls, d, "")


def _yaml_floats(cls: type, d: dict[str, Any], where: str) -> dict[str, Any]:
    """``d`` with the strings of ``cls``'s float fields read as numbers (YAML 1.1 reads ``1e-4``,
    without a dot, as a string)."""
    out = dict(d)
    for f in dataclasses.fields(cls):
        v = out.get(f.name)
        if isinstance(v, str) and "float" in str(f.type):
            try:
                out[f.name] = float(v)
            except ValueError:
                raise ConfigError(f"{where + '.' if where else ''}{f.name} must be a number, not {v!r}") from None
    return out


def _plain(obj: Any) -> Any:
    """JSON-ready form of a config value (dataset entries by their own ``to_dict``; a model
    architecture by the fields that differ from the defaults)."""
    if isinstance(obj, DatasetSpec):
        return obj.to_dict()
    if isinstance(obj, ModelConfig):
        default = ModelConfig().to_dict()
        return {k: v for k, v in obj.to_dict().items() if v != default[k]}
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _build(cls: type, d: Any, where: str) -> Any:
    """Instantiate the config dataclass ``cls`` from mapping ``d`` (``where``: its dotted key)."""
    label = where or "the training config"
    if not isinstance(d, dict):
        raise ConfigError(f"{label} must be a mapping, got {d!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    bad = sorted(set(d) - set(known))
    if bad:
        raise ConfigError(f"unknown training config keys {[f'{where}.{b}' if where else b for b in bad]}; "
                          f"known keys{' of ' + where if where else ''}: {sorted(known)}")
    kw = _yaml_floats(cls, d, where)
    for name, value in d.items():
        key = f"{where}.{name}" if where else name
        if cls is TrainConfig and name in _SECTIONS:
            kw[name] = _build(_SECTIONS[name], value if value is not None else {}, key)
        elif cls is CriterionSetup:
            kw[name] = _build(LossConfig, value, key)
    try:
        return cls(**kw)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {label}: {exc}") from None


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
        try:
            for p in parts[:-1]:
                node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
            last = parts[-1]
            if isinstance(node, list):
                node[int(last)] = value
            else:
                node[last] = value
        except (ValueError, IndexError, AttributeError, TypeError):
            raise ConfigError(f"override {ov!r}: {key} does not name a setting of the config") from None
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
