"""What the format modules share: reading a JSON file and checking a matrix in it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError

__all__ = ["finite_matrix", "read_json"]


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value of the file ``path``; :class:`~pointmap.errors.FormatError` naming the file
    when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"cannot read camera file {path}: {exc}") from None


def finite_matrix(value: object, shape: tuple[int, int], where: str) -> np.ndarray:
    """``value`` as a float64 array of ``shape`` with finite entries, else a
    :class:`~pointmap.errors.FormatError` naming ``where``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != shape or not np.isfinite(arr).all():
        raise FormatError(f"{where}: expected a finite {shape[0]}x{shape[1]} matrix")
    return arr
