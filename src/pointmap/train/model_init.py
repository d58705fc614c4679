"""The network of a training run: build and initialise it, freeze parts, AdamW parameter groups."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..model import DUSt3R, load_weights, read_checkpoint
from ..model.checkpoint import recommended_threshold
from .config import TrainConfig

__all__ = ["build_model", "freeze_model", "param_groups"]


def build_model(cfg: TrainConfig) -> DUSt3R:
    """Build the network of ``cfg.model`` (seeded by ``cfg.seed``) and initialise it from
    ``cfg.model.init`` if given.

    The model keeps the init checkpoint's recommended confidence threshold (when it stores one),
    so the files the run writes carry it on. The init checkpoint is read with :func:`pointmap.model.read_checkpoint` and copied with
    ``strict=False`` semantics (missing heads / ``dec_blocks2`` allowed; ``dec_blocks2`` is copied
    from ``dec_blocks`` when absent; shape mismatches raise :class:`~pointmap.errors.CheckpointError`).

    Raises:
        ConfigError: no ``model.arch`` and the init checkpoint records no architecture.
    """
    sd = None
    arch = cfg.model.arch
    if cfg.model.init:
        ck_cfg, sd = read_checkpoint(cfg.model.init)
        arch = arch or ck_cfg
        if arch is None:
            raise ConfigError(f"{cfg.model.init} holds weights but no architecture; give 'model.arch' in the config")
    torch.manual_seed(cfg.seed)
    model = DUSt3R(arch)
    if sd is not None:
        report = load_weights(model, sd, strict=False, source=str(cfg.model.init))
        if report.missing:
            warnings.warn(f"{len(report.missing)} parameters not in {cfg.model.init} keep their initial "
                          f"values (e.g. {report.missing[0]})", stacklevel=2)
        threshold = recommended_threshold(cfg.model.init)
        if threshold is not None:
            model.recommended_conf_threshold = threshold
    return model


_FREEZE_PREFIXES = {
    "none": (),
    "encoder": ("mask_token", "patch_embed.", "enc_blocks."),
    "encoder_decoder": ("mask_token", "patch_embed.", "enc_blocks.", "enc_norm.", "decoder_embed.",
                        "dec_blocks.", "dec_blocks2.", "dec_norm."),
}


def freeze_model(model: nn.Module, freeze: str) -> int:
    """Set ``requires_grad=False`` on the frozen part (reference semantics: ``"encoder"`` =
    mask token, patch embedding, encoder blocks; ``"encoder_decoder"`` = everything but the heads).
    Parameters the forward pass never uses (``DUSt3R.unused_parameter_names``: ``mask_token``, a
    DPT unit without input) are always frozen. Returns the number of frozen tensors."""
    prefixes = _FREEZE_PREFIXES[freeze]
    unused = set(model.unused_parameter_names()) if hasattr(model, "unused_parameter_names") else {"mask_token"}
    n = 0
    for name, p in model.named_parameters():
        if name.startswith(prefixes) or name in unused:
            p.requires_grad_(False)
            n += 1
    return n


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for trainable matrices; none for biases and 1-D parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
