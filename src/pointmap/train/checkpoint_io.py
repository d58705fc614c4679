"""Checkpoint I/O of a training run: the resume state file, the global RNG states, model files.

``checkpoint-last.pt`` holds a plain dict (loadable with ``torch.load(weights_only=True)``)::

    model        full state dict (keys of ``DUSt3R.state_dict()``)
    optimizer    ``optimizer.state_dict()`` layout (integer parameter ids)
    iter, step   iterations and optimiser steps done
    best         best mean held-out ``loss_med`` so far (``inf`` without evaluation)
    rng          Python, NumPy, torch (and CUDA) global generator states (:func:`rng_state`)
    config       the run's ``TrainConfig.to_dict()`` as JSON
    model_config the architecture (``ModelConfig.to_dict()``), so the file loads as a model
    pool         each rank's synthetic view pool state, or ``None``
"""

from __future__ import annotations

import ast
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..io_utils import atomic_write
from ..model import DUSt3R, save_model

__all__ = ["rng_state", "set_rng_state", "save_state", "load_state", "write_model_file"]


def rng_state() -> dict[str, Any]:
    """The global Python, NumPy, torch (and CUDA) generator states, as tensors and plain values."""
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


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`rng_state`'s dict."""
    random.setstate(ast.literal_eval(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a resume state atomically (``torch.save`` format)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """Read a resume state (tensors and plain values only).

    Raises:
        CheckpointError: the file cannot be read or unpickled.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad checkpoint
        raise CheckpointError(f"cannot read the training checkpoint {path}: {exc}") from exc


def write_model_file(model: nn.Module, sd: dict[str, torch.Tensor], path: Path) -> None:
    """Write the full state ``sd`` of a DUSt3R (possibly a sharded one, whose own tensors are
    shards) as a model file readable by :func:`pointmap.model.load_model`."""
    with torch.device("meta"):
        shell = DUSt3R(model.config)
    shell.load_state_dict(sd, assign=True)
    shell.recommended_conf_threshold = model.recommended_conf_threshold
    save_model(shell, path)
