"""Readers of training data on disk (raw views for :mod:`pointmap.train.data`)."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from .co3d import Co3dDataset
from .scene_folder import SceneFolderDataset

__all__ = ["SceneFolderDataset", "Co3dDataset", "make_synthetic_dataset"]


def make_synthetic_dataset(options: dict[str, Any], length: int, seed: int = 0) -> Dataset:
    """The synthetic multi-view engine's pair dataset, built from plain config fields.

    ``options`` are the fields of the engine's config dataclass (``SyntheticConfig``); ``length`` is
    the number of pairs. Raises ``ImportError`` with a clear message when the engine is missing.
    """
    try:
        from .. import synthetic
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(f"the synthetic data engine (pointmap.train.synthetic) is unavailable: {exc}") from exc
    cfg_cls = getattr(synthetic, "SyntheticConfig", None)
    opts = dict(options)
    if cfg_cls is None:
        raise ImportError("pointmap.train.synthetic has no SyntheticConfig")
    fields = getattr(cfg_cls, "__dataclass_fields__", {})
    if "seed" in fields and "seed" not in opts:
        opts["seed"] = seed
    return synthetic.SyntheticPairDataset(cfg_cls(**opts), length)
