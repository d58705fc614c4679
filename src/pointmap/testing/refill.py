"""Deterministic weight refill from a key manifest (the parity vectors' recipe).

Used to rebuild the parity models (whose weights are not stored) and to benchmark the released
architectures without the real 2 GB checkpoints.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from ..model.checkpoint import load_weights
from ..model.config import ModelConfig
from ..model.network import DUSt3R

__all__ = ["refill_state_dict", "refilled_model"]


def refill_state_dict(keys: Mapping[str, Sequence[int]], seed: int) -> dict[str, torch.Tensor]:
    """Fill every key of ``keys`` (name -> shape) with seeded Gaussian values.

    Keys are visited in sorted order with one ``torch.Generator`` seeded once; each tensor is
    ``randn(shape) * std`` with ``std = 0.75 / sqrt(prod(shape[1:]))`` for tensors of 2+ dims and
    ``0.02`` otherwise; LayerNorm weights (last part ``weight``, previous part containing ``norm``)
    get ``+1``; DPT ``scratch.layer_rn.{i}.weight`` takes the tensor drawn for
    ``scratch.layer{i+1}_rn.weight``.
    """
    g = torch.Generator()
    g.manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name in sorted(keys):
        shape = tuple(keys[name])
        std = 0.75 / math.sqrt(math.prod(shape[1:])) if len(shape) >= 2 else 0.02
        t = torch.randn(shape, generator=g, dtype=torch.float32) * std
        parts = name.split(".")
        if parts[-1] == "weight" and len(parts) >= 2 and "norm" in parts[-2]:
            t = t + 1.0
        sd[name] = t
    for name in list(sd):
        if ".dpt.scratch.layer_rn." in name:
            i = int(name.split(".layer_rn.")[1].split(".")[0])
            sd[name] = sd[name.replace(f".layer_rn.{i}.", f".layer{i + 1}_rn.")]
    return sd


def refilled_model(cfg: ModelConfig, seed: int = 0) -> DUSt3R:
    """The architecture of ``cfg`` with weights refilled by :func:`refill_state_dict` (float32,
    CPU, eval mode); built on the meta device first, so the random initialisation is skipped."""
    with torch.device("meta"):
        model = DUSt3R(cfg)
    model = model.to_empty(device="cpu")
    load_weights(model, refill_state_dict({k: list(v.shape) for k, v in model.state_dict().items()}, seed=seed))
    return model.eval()
