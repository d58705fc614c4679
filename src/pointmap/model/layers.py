"""Transformer building blocks: 2D RoPE, attention (SDPA with an explicit-math twin), MLP, blocks.

Parameter names follow the reference checkpoints exactly (``attn.qkv``, ``cross_attn.projq``,
``norm_y``, ``mlp.fc1`` ...), so state dicts map one to one.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RoPE2D",
    "Attention",
    "CrossAttention",
    "Mlp",
    "EncoderBlock",
    "DecoderBlock",
    "AttentionImpl",
    "attend",
    "math_attention",
    "patch_positions",
]

AttentionImpl = Literal["sdpa", "math"]
"""``'sdpa'``: :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels);
``'math'``: :func:`math_attention`, the explicit twin that tests compare it against."""


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference attention ``(B, h, N, d)`` x ``(B, h, M, d)`` -> ``(B, h, N, d)``, as the
    reference implementation computes it (explicit matmul and softmax)."""
    scale = q.shape[-1] ** -0.5
    attn = (q @ k.transpose(-2, -1)) * scale
    return attn.softmax(dim=-1) @ v


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: AttentionImpl = "sdpa") -> torch.Tensor:
    """Attention ``(B, h, N, d)`` x ``(B, h, M, d)`` -> ``(B, h, N, d)`` by ``impl``."""
    if impl == "math":
        return math_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def patch_positions(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer ``(row, col)`` positions ``(h*w, 2)`` of a row-major ``h x w`` token grid."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return torch.stack([rows, cols], dim=-1)


class RoPE2D(nn.Module):
    """2D rotary position embedding (no parameters).

    A head vector of size ``D`` is split in two halves: the first rotated by the token's row,
    the second by its column. Within a half of size ``D/2``, element ``i`` is paired with
    ``i + D/4`` ("rotate half") and rotated by ``pos * base**(-2i/(D/2))``.
    """

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = float(base)

    def tables(
        self, pos: torch.Tensor, head_dim: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos``/``sin`` tables ``(N, head_dim)`` for integer positions ``pos`` ``(N, 2)``.

        Angles are computed in float32 (as the reference does) and the result cast to ``dtype``.
        The layout matches :meth:`apply`: ``[row half | col half]``, each ``[f | f]``.
        """
        half = head_dim // 2
        inv_freq = 1.0 / (self.base ** (torch.arange(0, half, 2, device=pos.device).float() / half))
        ang = pos.float()[..., None] * inv_freq  # (N, 2, half/2)
        ang = torch.cat([ang, ang], dim=-1)  # (N, 2, half)
        ang = ang.flatten(-2)  # (N, head_dim): row half then col half
        return ang.cos().to(dtype), ang.sin().to(dtype)

    @staticmethod
    def apply(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate ``t`` ``(B, h, N, D)`` with tables ``(N, D)`` (or ``(B, 1, N, D)``)."""
        D = t.shape[-1]
        q = D // 4
        # rotate_half within each of the two halves: [a, b] -> [-b, a]
        t4 = t.unflatten(-1, (2, 2, q))
        rot = torch.stack([-t4[..., 1, :], t4[..., 0, :]], dim=-2).flatten(-3)
        return t * cos + rot * sin


class Mlp(nn.Module):
    """``Linear -> GELU(erf) -> Linear`` (output width ``out``, default ``dim``)."""

    def __init__(self, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and RoPE on queries and keys;
    ``impl`` (attribute, may be changed) picks the attention kernel (:data:`AttentionImpl`)."""

    def __init__(self, dim: int, num_heads: int, impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.impl: AttentionImpl = impl
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``x`` ``(B, N, C)``; ``rope`` = ``(cos, sin)`` tables for the tokens' positions."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        cos, sin = rope
        q, k = RoPE2D.apply(q, cos, sin), RoPE2D.apply(k, cos, sin)
        out = attend(q, k, v, self.impl).transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class CrossAttention(nn.Module):
    """Multi-head cross-attention with separate q/k/v projections and RoPE on q and k; ``impl``
    as :class:`Attention`."""

    def __init__(self, dim: int, num_heads: int, impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.impl: AttentionImpl = impl
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        rope_x: tuple[torch.Tensor, torch.Tensor],
        rope_y: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Queries from ``x`` ``(B, N, C)``, keys/values from ``y`` ``(B, M, C)``."""
        B, N, C = x.shape
        M = y.shape[1]
        h, d = self.num_heads, C // self.num_heads
        q = self.projq(x).reshape(B, N, h, d).transpose(1, 2)
        k = self.projk(y).reshape(B, M, h, d).transpose(1, 2)
        v = self.projv(y).reshape(B, M, h, d).transpose(1, 2)
        q = RoPE2D.apply(q, *rope_x)
        k = RoPE2D.apply(k, *rope_y)
        out = attend(q, k, v, self.impl).transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: ``x += attn(norm1(x))``; ``x += mlp(norm2(x))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, impl)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Decoder block: self-attention, cross-attention to the other view (memory normalised by
    ``norm_y``), MLP; all pre-norm residual."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, impl)
        self.cross_attn = CrossAttention(dim, num_heads, impl)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.norm_y = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        rope_x: tuple[torch.Tensor, torch.Tensor],
        rope_y: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Update the query stream ``x`` ``(B, N, C)`` given the other view ``y`` ``(B, M, C)``."""
        x = x + self.attn(self.norm1(x), rope_x)
        x = x + self.cross_attn(self.norm2(x), self.norm_y(y), rope_x, rope_y)
        return x + self.mlp(self.norm3(x))
