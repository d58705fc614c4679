"""Regression heads (linear pixel-shuffle, DPT, and MASt3R's DPT + local-feature MLP) and the
depth/confidence/descriptor post-processing.

Module and parameter names follow the reference checkpoints (``proj``; ``dpt.act_postprocess``,
``dpt.scratch.layer{k}_rn`` with its ``layer_rn.{k-1}`` alias, ``dpt.scratch.refinenet{k}``,
``dpt.head``; ``head_local_features.fc{1,2}``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import Mlp

__all__ = ["LinearHead", "DPTHead", "CatMLPDPTHead", "postprocess", "postprocess_desc", "run_head",
           "build_head", "DescSpec"]

DescSpec = tuple[int, bool, tuple]
"""``(desc_dim, two_confs, desc_conf_mode)`` of a head with descriptors."""


def postprocess(out: torch.Tensor, depth_mode: tuple, conf_mode: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Head output ``(B, 4, H, W)`` -> points ``(B, H, W, 3)`` and confidence ``(B, H, W)``.

    ``exp`` depth mode: ``p = xyz / max(|xyz|, 1e-8) * expm1(|xyz|)``; ``exp`` confidence mode:
    ``conf = vmin + exp(x)`` (``1 + exp(x)`` for the released models), clipped at ``vmax - vmin``.
    """
    fmap = out.permute(0, 2, 3, 1)
    xyz, c = fmap[..., :3], fmap[..., 3]
    mode = depth_mode[0]
    if mode == "linear":
        pts = xyz
    else:
        d = xyz.norm(dim=-1, keepdim=True)
        direction = xyz / d.clip(min=1e-8)
        pts = direction * (torch.expm1(d) if mode == "exp" else d.square())
    return pts, _confidence(c, conf_mode)


def _confidence(c: torch.Tensor, conf_mode: tuple) -> torch.Tensor:
    cmode, cmin, cmax = conf_mode
    if cmode == "exp":
        return cmin + c.exp().clip(max=cmax - cmin)
    return (cmax - cmin) * torch.sigmoid(c) + cmin  # sigmoid


def postprocess_desc(
    out: torch.Tensor, conf: torch.Tensor, desc: DescSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptor channels of a MASt3R head output ``(B, 4 + D [+ 1], H, W)`` -> L2-normalised
    descriptors ``(B, H, W, D)`` and their confidence ``(B, H, W)``: the extra channel mapped by
    ``desc_conf_mode`` when ``two_confs``, else a copy of the points' ``conf`` ``(B, H, W)``."""
    dim, two_confs, desc_conf_mode = desc
    fmap = out.permute(0, 2, 3, 1)
    d = fmap[..., 4 : 4 + dim]
    d = d / d.norm(dim=-1, keepdim=True)
    dconf = _confidence(fmap[..., 4 + dim], desc_conf_mode) if two_confs else conf.clone()
    return d, dconf


def run_head(
    head: nn.Module,
    tokens: list[torch.Tensor],
    shape: tuple[int, int],
    dtype: torch.dtype,
    depth_mode: tuple,
    conf_mode: tuple,
    desc: DescSpec | None = None,
) -> tuple[torch.Tensor, ...]:
    """One head with autocast off: tokens ``(B, N, C_k)`` cast to the head's ``dtype``, the head
    -> ``(B, C, H, W)``, then :func:`postprocess` in float32 -> points ``(B, H, W, 3)`` and
    confidence ``(B, H, W)`` for images of ``shape`` ``(H, W)``; with ``desc`` (a MASt3R head)
    also descriptors ``(B, H, W, D)`` and their confidence ``(B, H, W)`` (:func:`postprocess_desc`).

    One function so that a compiled model fuses the casts and the post-processing with the head.
    """
    with torch.autocast(device_type=tokens[0].device.type, enabled=False):
        out = head([t.to(dtype) for t in tokens], shape).float()
        pts, conf = postprocess(out, depth_mode, conf_mode)
        if desc is None:
            return pts, conf
        return (pts, conf, *postprocess_desc(out, conf, desc))


class LinearHead(nn.Module):
    """Linear projection of the last decoder tokens to 16x16 patches of 4 channels (pixel shuffle)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.proj = nn.Linear(cfg.dec_embed_dim, 4 * cfg.patch_size**2)

    def forward(self, tokens: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
        """``tokens[-1]`` ``(B, N, C)`` -> ``(B, 4, H, W)`` for image ``shape`` ``(H, W)``."""
        H, W = shape
        p = self.patch_size
        x = self.proj(tokens[-1])  # (B, N, 4*p*p)
        B = x.shape[0]
        x = x.transpose(1, 2).reshape(B, -1, H // p, W // p)
        return F.pixel_shuffle(x, p)


class _ResidualConvUnit(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _FusionBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.resConfUnit1 = _ResidualConvUnit(ch)
        self.resConfUnit2 = _ResidualConvUnit(ch)
        self.out_conv = nn.Conv2d(ch, ch, 1, bias=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    def __init__(self, layer_dims: tuple[int, ...], feat: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(d, feat, 3, padding=1, bias=False) for d in layer_dims]
        self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn = convs
        # the reference keeps a second name for the same convolutions
        self.layer_rn = nn.ModuleList(convs)
        self.refinenet1 = _FusionBlock(feat)
        self.refinenet2 = _FusionBlock(feat)
        self.refinenet3 = _FusionBlock(feat)
        self.refinenet4 = _FusionBlock(feat)


class _Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class _DPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        dims = (cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.dec_embed_dim, cfg.dec_embed_dim)
        ld = cfg.dpt_layer_dims
        self.hooks = cfg.dpt_hooks
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dims[0], ld[0], 1), nn.ConvTranspose2d(ld[0], ld[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(dims[1], ld[1], 1), nn.ConvTranspose2d(ld[1], ld[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(dims[2], ld[2], 1)),
            nn.Sequential(nn.Conv2d(dims[3], ld[3], 1), nn.Conv2d(ld[3], ld[3], 3, stride=2, padding=1)),
        ])
        f, last = cfg.dpt_feature_dim, cfg.dpt_last_dim
        self.scratch = _Scratch(ld, f)
        self.head = nn.Sequential(
            nn.Conv2d(f, f // 2, 3, padding=1),
            _Upsample2x(),
            nn.Conv2d(f // 2, last, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last, 4, 1),
        )

    def forward(self, tokens: list[torch.Tensor], shape: tuple[int, int], patch: int) -> torch.Tensor:
        H, W = shape
        h, w = H // patch, W // patch
        feats = []
        for k, hook in enumerate(self.hooks):
            t = tokens[hook]
            # (B, N, C) row-major tokens -> (B, C, h, w), laid out channels-last (NHWC) for free
            x = t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)
            feats.append(self.scratch.layer_rn[k](self.act_postprocess[k](x)))
        l1, l2, l3, l4 = feats
        s = self.scratch
        path = s.refinenet4(l4)[:, :, : l3.shape[2], : l3.shape[3]]
        path = s.refinenet3(path, l3)
        path = s.refinenet2(path, l2)
        path = s.refinenet1(path, l1)
        return self.head(path)


class DPTHead(nn.Module):
    """DPT head on tokens ``[encoder, decoder L/2, decoder 3L/4, decoder L]``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.dpt = _DPT(cfg)

    def forward(self, tokens: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
        """``tokens``: the ``L + 1`` token lists ``(B, N, C_k)`` -> ``(B, 4, H, W)``."""
        return self.dpt(tokens, shape, self.patch_size)


class CatMLPDPTHead(nn.Module):
    """MASt3R's ``catmlp+dpt`` head: the DPT head for points and confidence, and an MLP
    (``head_local_features``, hidden width 4x) on the concatenated encoder and last decoder
    tokens, pixel-shuffled to full resolution, for ``D`` descriptor channels (plus one
    descriptor-confidence channel with ``two_confs``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.dpt = _DPT(cfg)
        idim = cfg.enc_embed_dim + cfg.dec_embed_dim
        out = (cfg.desc_dim + int(cfg.two_confs)) * cfg.patch_size**2
        self.head_local_features = Mlp(idim, int(4 * idim), out)

    def forward(self, tokens: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
        """``tokens``: the ``L + 1`` token lists ``(B, N, C_k)`` -> ``(B, 4 + D [+ 1], H, W)``:
        DPT's 4 channels, then the descriptor channels."""
        H, W = shape
        p = self.patch_size
        pts = self.dpt(tokens, shape, p)
        x = self.head_local_features(torch.cat([tokens[0], tokens[-1]], dim=-1))  # (B, N, C p^2)
        B = x.shape[0]
        x = F.pixel_shuffle(x.transpose(1, 2).reshape(B, -1, H // p, W // p), p)
        return torch.cat([pts, x.to(pts.dtype)], dim=1)


def build_head(cfg: ModelConfig) -> nn.Module:
    """The head named by ``cfg.head_type``."""
    if cfg.head_type == "catmlp+dpt":
        return CatMLPDPTHead(cfg)
    return DPTHead(cfg) if cfg.head_type == "dpt" else LinearHead(cfg)
