"""Typed dataset configs, one dataclass per ``kind``, and the builders of training mixtures.

A training config lists its datasets as mappings whose ``kind`` selects the dataclass; the other keys
are that dataclass's fields (the typed form of the reference ``N @ Dataset(...)``)::

    - {kind: co3d, root: data/co3d_processed, num_pairs: 100000, aug_crop: 16, mask_bg: rand}
    - {kind: scene_folder, root: data/scenes, num_pairs: 5000, max_gap: 3}
    - {kind: synthetic, num_pairs: 10000, engine: {n_views: 8, photo_prob: 0.3}}
    - {kind: synthetic_pool, num_pairs: 135765, engine: {n_views: 8}, pool: {n_scenes: 3072}}
    - {kind: realistic, num_pairs: 10000, engine: {bank: asset-bank, n_views: 8}}
    - {kind: realistic_pool, num_pairs: 100000, engine: {bank: asset-bank}, pool: {n_scenes: 2048},
       procedural_fraction: 0.3}

``engine`` holds :class:`~pointmap.train.synthetic.SyntheticConfig` fields (for the ``realistic``
kinds :class:`~pointmap.train.realistic.capture.RealisticConfig` fields) except ``resolution``,
``split`` and ``seed``, which come from the run (its resolutions and seed) and the entry's ``split``;
``pool`` holds :class:`~pointmap.train.synthetic.pool.PoolConfig` fields. A new kind is a new
:class:`DatasetSpec` subclass listed in :data:`DATASET_KINDS`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch

from ..errors import ConfigError, PointmapError
from .datasets import Co3dDataset, MixtureDataset, PairViewDataset, SceneFolderDataset, ViewDictPairDataset
from .synthetic import SyntheticConfig, SyntheticPairDataset
from .synthetic.pool import PoolConfig, SyntheticViewPool
from .realistic.capture import RealisticConfig, RealisticPairDataset
from .realistic.pool import RealisticViewPool
from .views import Resolution

__all__ = [
    "DatasetSpec",
    "SceneFolderData",
    "Co3dData",
    "SyntheticData",
    "SyntheticPoolData",
    "RealisticData",
    "RealisticPoolData",
    "DATASET_KINDS",
    "build_mixture",
]

_RUN_ENGINE_FIELDS = ("resolution", "split", "seed")


@dataclass(kw_only=True)
class DatasetSpec:
    """One term of a training mixture: the fields every kind has.

    Attributes:
        num_pairs: pairs per epoch drawn from this dataset (``None``: all of it, in order).
        split: split name (``"train"``, ``"test"``, ``"val"`` …) where the dataset has splits.
        aug_crop: crop jitter in pixels (reference: 16 or 256).
        color_jitter: per-view colour jitter (train sets: on; test sets: off).
    """

    kind: ClassVar[str] = ""
    num_pairs: int | None = None
    split: str = "train"
    aug_crop: int = 0
    color_jitter: bool = True

    def build(self, resolutions: Sequence[Resolution], seed: int = 0,
              orientation: str = "landscape") -> PairViewDataset:
        """The pair dataset of this entry at the landscape ``(W, H)`` ``resolutions``; ``seed`` seeds
        its per-item generators."""
        raise NotImplementedError

    def _common(self, resolutions: Sequence[Resolution], seed: int, orientation: str) -> dict[str, Any]:
        return dict(resolutions=resolutions, aug_crop=self.aug_crop, color_jitter=self.color_jitter,
                    orientation=orientation, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-ready mapping (``kind`` first) that :meth:`from_dict` reads back."""
        d = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = _engine_dict(v) if isinstance(v, SyntheticConfig) else v
        return json.loads(json.dumps(d, default=dataclasses.asdict))

    @staticmethod
    def from_dict(d: Any) -> "DatasetSpec":
        """The typed spec of a mapping with a ``kind`` key.

        Raises:
            ConfigError: not a mapping, unknown ``kind``, unknown or invalid fields.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a dataset entry must be a mapping with a 'kind', got {d!r}")
        d = dict(d)
        kind = d.pop("kind", None)
        if kind not in DATASET_KINDS:
            raise ConfigError(f"dataset entry {d} has kind {kind!r}; use one of {sorted(DATASET_KINDS)}")
        cls = DATASET_KINDS[kind]
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown fields {bad} for a {kind!r} dataset; its fields: {sorted(known)}")
        try:
            return cls(**cls._typed_fields(d))
        except (TypeError, ValueError, PointmapError) as exc:  # the engine's checks raise PointmapError
            raise ConfigError(f"invalid {kind!r} dataset entry: {exc}") from None

    @classmethod
    def _typed_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Nested mappings of ``d`` turned into their dataclasses (subclasses with nested fields)."""
        return d


@dataclass(kw_only=True)
class SceneFolderData(DatasetSpec):
    """Scene folders (:class:`~pointmap.train.datasets.SceneFolderDataset`).

    Attributes:
        root: a scene folder or a folder of scene folders.
        max_gap: default pairs join frames at most ``max_gap`` apart.
    """

    kind: ClassVar[str] = "scene_folder"
    root: str
    max_gap: int = 3

    def build(self, resolutions: Sequence[Resolution], seed: int = 0,
              orientation: str = "landscape") -> PairViewDataset:
        return SceneFolderDataset(self.root, split=self.split, max_gap=self.max_gap,
                                  **self._common(resolutions, seed, orientation))


@dataclass(kw_only=True)
class Co3dData(DatasetSpec):
    """Preprocessed CO3Dv2 (:class:`~pointmap.train.datasets.Co3dDataset`).

    Attributes:
        root: the preprocessed dataset folder.
        mask_bg: zero the depth outside the object mask: ``True``, ``False`` or ``"rand"`` (50 %).
        num_frames: frames per sequence the pair offsets are designed for (reference: 100).
    """

    kind: ClassVar[str] = "co3d"
    root: str
    mask_bg: bool | str = True
    num_frames: int = 100

    def __post_init__(self) -> None:
        if self.mask_bg not in (True, False, "rand"):
            raise ConfigError(f"mask_bg must be true, false or 'rand', not {self.mask_bg!r}")

    def build(self, resolutions: Sequence[Resolution], seed: int = 0,
              orientation: str = "landscape") -> PairViewDataset:
        return Co3dDataset(self.root, split=self.split, mask_bg=self.mask_bg, num_frames=self.num_frames,
                           **self._common(resolutions, seed, orientation))


def _engine_dict(cfg: SyntheticConfig) -> dict[str, Any]:
    """The ``engine`` mapping of a config: the fields that differ from the defaults, but those the
    run sets."""
    default = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            default[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default[f.name] = f.default_factory()
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in _RUN_ENGINE_FIELDS and json.dumps(v) != json.dumps(default.get(k))}


def _engine(d: Any, cls: type[SyntheticConfig] = SyntheticConfig) -> SyntheticConfig:
    if isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise ConfigError(f"'engine' must be a mapping of {cls.__name__} fields, got {d!r}")
    run_set = sorted(set(d) & set(_RUN_ENGINE_FIELDS))
    if run_set:
        raise ConfigError(f"'engine' may not set {run_set}: the run's resolution and seed and the entry's "
                          "split are used")
    return cls(**d)


def _split(split: str) -> str:
    return split if split in ("train", "val") else "train"


@dataclass(kw_only=True)
class SyntheticData(DatasetSpec):
    """The synthetic multi-view engine, pairs rendered per item in the data-loader workers.

    Attributes:
        engine: the engine's settings (``resolution``, ``split`` and ``seed`` are the run's; a
            ``split`` other than ``"val"`` renders train scenes).
    ``num_pairs`` is also the dataset length (default 1000).
    """

    kind: ClassVar[str] = "synthetic"
    engine: SyntheticConfig = field(default_factory=SyntheticConfig)

    @classmethod
    def _typed_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "engine": _engine(d.get("engine", {}))}

    def build(self, resolutions: Sequence[Resolution], seed: int = 0,
              orientation: str = "landscape") -> PairViewDataset:
        cfg = dataclasses.replace(self.engine, resolution=[tuple(r) for r in resolutions],
                                  split=_split(self.split), seed=seed)
        base = SyntheticPairDataset(cfg, self.num_pairs or 1000)
        return ViewDictPairDataset(base, pass_aspect_ratio=True, **self._common(resolutions, seed, orientation))


@dataclass(kw_only=True)
class SyntheticPoolData(SyntheticData):
    """Synthetic views rendered on the training device and kept in a
    :class:`~pointmap.train.synthetic.pool.SyntheticViewPool`; only as the single train set
    (``num_pairs`` is then the epoch length; default 100 000).

    Attributes:
        engine: as for ``synthetic`` (the first training resolution is used).
        pool: pool size and refresh schedule.
    """

    kind: ClassVar[str] = "synthetic_pool"
    pool: PoolConfig = field(default_factory=PoolConfig)

    @classmethod
    def _typed_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        pool = d.get("pool", {})
        if not isinstance(pool, (dict, PoolConfig)):
            raise ConfigError(f"'pool' must be a mapping of PoolConfig fields, got {pool!r}")
        return {**super()._typed_fields(d), "pool": pool if isinstance(pool, PoolConfig) else PoolConfig(**pool)}

    def build(self, resolutions: Sequence[Resolution], seed: int = 0,
              orientation: str = "landscape") -> PairViewDataset:
        raise ConfigError("dataset kind 'synthetic_pool' serves batches on the training device: it can only be "
                          "the single train set (use 'synthetic' for test sets and mixtures)")

    def build_pool(self, resolutions: Sequence[Resolution], seed: int, rank: int, world: int,
                   device: torch.device, progress: bool = False) -> SyntheticViewPool:
        """The view pool of this entry (not yet filled: call ``fill()`` or ``load_state_dict()``)."""
        cfg = dataclasses.replace(self.engine, resolution=tuple(resolutions[0]), split=_split(self.split),
                                  seed=seed)
        return SyntheticViewPool(cfg, self.pool, device=device, rank=rank, world=world, seed=seed,
                                 progress=progress, fill=False)


@dataclass(kw_only=True)
class RealisticData(SyntheticData):
    """The realistic engine (photo-textured models from an asset bank, rasterised), pairs rendered
    per item in the data-loader workers; mixes with ``synthetic`` entries like any dataset.

    Attributes:
        engine: :class:`~pointmap.train.realistic.capture.RealisticConfig` fields (``bank``: the
            asset bank folder, required).
    """

    kind: ClassVar[str] = "realistic"
    engine: SyntheticConfig = field(default_factory=lambda: RealisticConfig(bank="asset-bank"))

    @classmethod
    def _typed_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "engine": _engine(d.get("engine", {}), RealisticConfig)}

    def build(self, resolutions: Sequence[Resolution], seed: int = 0,
              orientation: str = "landscape") -> PairViewDataset:
        cfg = dataclasses.replace(self.engine, resolution=[tuple(r) for r in resolutions],
                                  split=_split(self.split), seed=seed)
        base = RealisticPairDataset(cfg, self.num_pairs or 1000)  # type: ignore[arg-type]
        return ViewDictPairDataset(base, pass_aspect_ratio=True, **self._common(resolutions, seed, orientation))


@dataclass(kw_only=True)
class RealisticPoolData(SyntheticPoolData):
    """Realistic views rendered on the training device and kept in a
    :class:`~pointmap.train.realistic.pool.RealisticViewPool`; only as the single train set.

    Attributes:
        engine: as for ``realistic``. pool: pool size and refresh schedule.
        procedural_fraction: share of the pool's scenes rendered by the procedural engine instead.
    """

    kind: ClassVar[str] = "realistic_pool"
    engine: SyntheticConfig = field(default_factory=lambda: RealisticConfig(bank="asset-bank"))
    procedural_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.procedural_fraction <= 1.0:
            raise ConfigError(f"procedural_fraction must be in [0, 1], not {self.procedural_fraction}")

    @classmethod
    def _typed_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return super()._typed_fields({**d, "engine": _engine(d.get("engine", {}), RealisticConfig)})

    def build_pool(self, resolutions: Sequence[Resolution], seed: int, rank: int, world: int,
                   device: torch.device, progress: bool = False) -> SyntheticViewPool:
        cfg = dataclasses.replace(self.engine, resolution=tuple(resolutions[0]), split=_split(self.split),
                                  seed=seed)
        return RealisticViewPool(cfg, self.pool, device=device, rank=rank, world=world, seed=seed,  # type: ignore[arg-type]
                                 progress=progress, fill=False, procedural_fraction=self.procedural_fraction)


DATASET_KINDS: dict[str, type[DatasetSpec]] = {
    cls.kind: cls for cls in (SceneFolderData, Co3dData, SyntheticData, SyntheticPoolData, RealisticData,
                              RealisticPoolData)
}
"""The dataset kinds a training config may name, and their config dataclasses."""


def build_mixture(specs: Sequence[DatasetSpec], resolutions: Sequence[Resolution], seed: int = 0,
                  orientation: str = "landscape", mixture_seed: int = 777) -> MixtureDataset:
    """A :class:`~pointmap.train.datasets.MixtureDataset` of the entries' datasets
    (:meth:`DatasetSpec.build`), each contributing its ``num_pairs`` per epoch."""
    return MixtureDataset([(s.build(resolutions, seed, orientation), s.num_pairs) for s in specs],
                          seed=mixture_seed)
