"""The two-view DUSt3R network: siamese ViT encoder, two cross-attending decoders, two heads
(MASt3R is the same network with ``catmlp+dpt`` heads that also predict local descriptors).

Besides the reference's dict-in, dict-out ``forward(view1, view2)``, the network exposes its stages
(:meth:`DUSt3R.encode`, :meth:`DUSt3R.decode`, :meth:`DUSt3R.heads`) so pair inference can encode
each image once and reuse its tokens for every pair it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from .config import ModelConfig
from .heads import build_head, run_head
from .layers import Attention, AttentionImpl, CrossAttention, DecoderBlock, EncoderBlock, RoPE2D, patch_positions

__all__ = ["DUSt3R", "Encoded"]


@dataclass
class Encoded:
    """Encoder output for a batch of same-shape images.

    Attributes:
        tokens: ``(B, N, enc_dim)`` after ``enc_norm``.
        shape: image ``(H, W)``.
    """

    tokens: torch.Tensor
    shape: tuple[int, int]


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.img_size = cfg.img_size
        self.proj = nn.Conv2d(3, cfg.enc_embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        H, W = img.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise InputError(f"image size {W}x{H} is not a multiple of the {p}-pixel patch size")
        return self.proj(img).flatten(2).transpose(1, 2)


class DUSt3R(nn.Module):
    """DUSt3R (``AsymmetricCroCo3DStereo`` in the reference), built from a :class:`ModelConfig`;
    with ``head_type='catmlp+dpt'`` it is MASt3R (``AsymmetricMASt3R``).

    Its ``state_dict`` has exactly the reference's keys (including the unused ``mask_token`` and
    the DPT ``layer_rn`` aliases).
    """

    def __init__(self, cfg: ModelConfig | None = None, attention: AttentionImpl = "sdpa") -> None:
        """``attention``: the attention kernel of every block (:meth:`set_attention` changes it)."""
        super().__init__()
        cfg = cfg or ModelConfig()
        self.config = cfg
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_embed_dim))  # unused; kept for key parity
        self.patch_embed = _PatchEmbed(cfg)
        self.rope = RoPE2D(cfg.rope_base)
        self.enc_blocks = nn.ModuleList(
            EncoderBlock(cfg.enc_embed_dim, cfg.enc_num_heads, cfg.mlp_ratio, cfg.norm_eps, attention)
            for _ in range(cfg.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(cfg.enc_embed_dim, eps=cfg.norm_eps)
        self.decoder_embed = nn.Linear(cfg.enc_embed_dim, cfg.dec_embed_dim)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(cfg.dec_embed_dim, cfg.dec_num_heads, cfg.mlp_ratio, cfg.norm_eps, attention)
            for _ in range(cfg.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(cfg.dec_embed_dim, eps=cfg.norm_eps)
        self.dec_blocks2 = nn.ModuleList(
            DecoderBlock(cfg.dec_embed_dim, cfg.dec_num_heads, cfg.mlp_ratio, cfg.norm_eps, attention)
            for _ in range(cfg.dec_depth)
        )
        self.downstream_head1 = build_head(cfg)
        self.downstream_head2 = build_head(cfg)
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.static_shapes = False  # set by optimize_for_inference(compile=True)
        self._run_head: Callable = run_head  # compiled by optimize_for_inference(compile=True)
        # raw-confidence threshold suited to this model's calibration (the reference's default is 3;
        # a checkpoint can carry its own, see checkpoint.save_model)
        self.recommended_conf_threshold = 3.0

    def set_attention(self, impl: AttentionImpl) -> "DUSt3R":
        """Use attention kernel ``impl`` (``'sdpa'`` or the explicit ``'math'`` twin) in every
        block; returns ``self``."""
        if impl not in ("sdpa", "math"):
            raise InputError(f"attention must be 'sdpa' or 'math', not {impl!r}")
        for m in self.modules():
            if isinstance(m, (Attention, CrossAttention)):
                m.impl = impl
        return self

    def unused_parameter_names(self) -> list[str]:
        """Parameters the forward pass never uses, kept only so that checkpoints keep the
        reference's keys: ``mask_token`` and, in DPT heads, the first residual unit of the
        deepest fusion block (it has no skip input). The trainer freezes them, so that
        data-parallel training needs no search for unused parameters."""
        return [n for n, _ in self.named_parameters()
                if n == "mask_token" or ".refinenet4.resConfUnit1." in n]

    # ------------------------------------------------------------------ speed
    def optimize_for_inference(
        self,
        compile: bool = True,
        channels_last: bool = True,
        trunk_dtype: torch.dtype | None = None,
        head_dtype: torch.dtype | None = None,
        compile_backend: str | Callable = "inductor",
    ) -> "DUSt3R":
        """Speed settings for GPU inference (results unchanged up to float rounding).

        Args:
            compile: compile each transformer block and the head step (head, then
                post-processing) with :func:`torch.compile` (fuses RoPE, LayerNorm, GELU,
                residuals and the depth/confidence maps). Shapes are static: pair inference pads
                its last batches, so each image shape (pair of shapes) compiles once; see
                :func:`pointmap.inference.warmup` to compile before a timed run.
            channels_last: store the heads' convolutions in NHWC, which cuDNN runs faster.
            trunk_dtype: store encoder and decoders in this dtype (e.g. ``torch.bfloat16``) so
                autocast does not re-cast the weights at every call.
            head_dtype: store and run the heads in this dtype (e.g. ``torch.bfloat16``; default:
                unchanged, float32). The depth/confidence post-processing stays float32.
            compile_backend: :func:`torch.compile` backend (``"inductor"``; tests use cheaper ones).
        """
        heads = (self.downstream_head1, self.downstream_head2)
        for head in heads:
            if channels_last:
                head.to(memory_format=torch.channels_last)
            if head_dtype is not None:
                head.to(head_dtype)
        if trunk_dtype is not None:
            for m in (self.patch_embed, self.enc_blocks, self.enc_norm, self.decoder_embed,
                      self.dec_blocks, self.dec_blocks2, self.dec_norm):
                m.to(trunk_dtype)
        if compile:
            # all blocks share one compiled code object (``Module._call_impl``) whose cache holds
            # one entry per (block type, input shapes); dynamo's default limit of 8 entries is
            # reached by two image shapes, after which further shapes would run uncompiled
            _raise_compile_cache_limit(64)
            for blocks in (self.enc_blocks, self.dec_blocks, self.dec_blocks2):
                for blk in blocks:
                    blk.compile(dynamic=False, backend=compile_backend)
            self._run_head = torch.compile(run_head, dynamic=False, backend=compile_backend)
            self.static_shapes = True
        return self

    # ------------------------------------------------------------------ helpers
    def _rope(self, shape: tuple[int, int], head_dim: int, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached RoPE tables ``(N, head_dim)`` for a token grid of an ``(H, W)`` image."""
        p = self.config.patch_size
        key = (shape, head_dim, ref.device, ref.dtype)
        tab = self._rope_cache.get(key)
        if tab is None:
            pos = patch_positions(shape[0] // p, shape[1] // p, device=ref.device)
            tab = self.rope.tables(pos, head_dim, ref.dtype)
            if len(self._rope_cache) > 32:
                self._rope_cache.clear()
            self._rope_cache[key] = tab
        return tab

    # ------------------------------------------------------------------ stages
    def encode(self, img: torch.Tensor) -> Encoded:
        """Encode same-shape images ``(B, 3, H, W)`` in ``[-1, 1]`` -> :class:`Encoded`."""
        shape = (int(img.shape[-2]), int(img.shape[-1]))
        x = self.patch_embed(img.to(self.patch_embed.proj.weight.dtype))
        rope = self._rope(shape, self.config.enc_embed_dim // self.config.enc_num_heads, x)
        for blk in self.enc_blocks:
            x = blk(x, rope)
        return Encoded(self.enc_norm(x), shape)

    def decode(self, e1: Encoded, e2: Encoded) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run both decoders; returns the per-view token lists ``[enc, f_1, ..., dec_norm(f_L)]``."""
        cfg = self.config
        f1, f2 = self.decoder_embed(e1.tokens), self.decoder_embed(e2.tokens)
        hd = cfg.dec_embed_dim // cfg.dec_num_heads
        r1, r2 = self._rope(e1.shape, hd, f1), self._rope(e2.shape, hd, f2)
        out1, out2 = [e1.tokens], [e2.tokens]
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            f1, f2 = blk1(f1, f2, r1, r2), blk2(f2, f1, r2, r1)
            out1.append(f1)
            out2.append(f2)
        out1[-1], out2[-1] = self.dec_norm(out1[-1]), self.dec_norm(out2[-1])
        return out1, out2

    def heads(
        self,
        tokens1: list[torch.Tensor],
        tokens2: list[torch.Tensor],
        shape1: tuple[int, int],
        shape2: tuple[int, int],
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Heads with autocast off, in the heads' own dtype (float32 unless
        ``optimize_for_inference(head_dtype=...)``), post-processed in float32 ->
        ``pred1 {pts3d, conf}``, ``pred2 {pts3d_in_other_view, conf}``; a MASt3R network
        (``config.desc_dim > 0``) adds ``desc`` ``(B, H, W, D)`` (L2-normalised) and
        ``desc_conf`` ``(B, H, W)`` to both."""
        cfg = self.config
        hd = next(self.downstream_head1.parameters()).dtype
        desc = (cfg.desc_dim, cfg.two_confs, cfg.desc_conf) if cfg.desc_dim else None
        r1 = self._run_head(self.downstream_head1, tokens1, shape1, hd, cfg.depth_mode, cfg.conf_mode, desc)
        r2 = self._run_head(self.downstream_head2, tokens2, shape2, hd, cfg.depth_mode, cfg.conf_mode, desc)
        pred1 = {"pts3d": r1[0], "conf": r1[1]}
        pred2 = {"pts3d_in_other_view": r2[0], "conf": r2[1]}
        if desc is not None:
            pred1.update(desc=r1[2], desc_conf=r1[3])
            pred2.update(desc=r2[2], desc_conf=r2[3])
        return pred1, pred2

    def forward_encoded(self, e1: Encoded, e2: Encoded):
        """Decoders and heads on already encoded views."""
        t1, t2 = self.decode(e1, e2)
        return self.heads(t1, t2, e1.shape, e2.shape)

    # ------------------------------------------------------------------ reference interface
    def forward(self, view1: dict, view2: dict):
        """Reference-style forward: ``view{1,2}['img']`` ``(B, 3, H, W)`` -> ``(pred1, pred2)``.

        ``pred1['pts3d']`` ``(B, H, W, 3)``: view 1's points in camera 1; ``pred2
        ['pts3d_in_other_view']`` ``(B, H, W, 3)``: view 2's points in camera 1; ``conf`` ``(B, H, W)``.
        All images of a view batch must share one shape (``true_shape``, when given, must agree).
        """
        img1, img2 = view1["img"], view2["img"]
        for view, img in ((view1, img1), (view2, img2)):
            ts = view.get("true_shape")
            if ts is not None:
                ts = torch.as_tensor(ts).reshape(-1, 2)
                if not bool((ts.cpu() == torch.tensor(img.shape[-2:])).all()):
                    raise InputError(
                        "true_shape differs from the image tensor's shape; pointmap does not "
                        "use the transposed (landscape-only) storage at inference"
                    )
        if img1.shape[-2:] == img2.shape[-2:]:
            enc = self.encode(torch.cat([img1, img2]))
            B = img1.shape[0]
            e1, e2 = Encoded(enc.tokens[:B], enc.shape), Encoded(enc.tokens[B:], enc.shape)
        else:
            e1, e2 = self.encode(img1), self.encode(img2)
        return self.forward_encoded(e1, e2)


def _raise_compile_cache_limit(n: int) -> None:
    """Let :func:`torch.compile` keep at least ``n`` compiled entries per code object."""
    import torch._dynamo.config as dyn

    for names, limit in ((("recompile_limit", "cache_size_limit"), n),
                         (("accumulated_recompile_limit", "accumulated_cache_size_limit"), 4 * n)):
        name = next((a for a in names if hasattr(dyn, a)), None)  # newer name first
        if name is not None:
            setattr(dyn, name, max(int(getattr(dyn, name)), limit))
