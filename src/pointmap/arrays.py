"""Tensors, arrays and nested lists to numpy: the one conversion every numpy consumer
(exporters, metrics, evaluation) uses."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_float64", "to_numpy"]


def to_numpy(x: torch.Tensor | np.ndarray | Any, dtype: Any = None) -> np.ndarray:
    """A numpy copy (CPU, detached) of a tensor, array or nested sequence, cast to ``dtype`` when
    given; the result never shares memory with ``x``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.array(x, dtype=dtype, copy=True)


def as_float64(x: torch.Tensor | np.ndarray | Any) -> np.ndarray:
    """:func:`to_numpy` in float64, the precision of every metric."""
    return to_numpy(x, np.float64)
