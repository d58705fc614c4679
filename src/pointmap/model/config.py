"""`ModelConfig`: every size of the DUSt3R / MASt3R network, as an explicit dataclass.

The reference stores its architecture as a Python constructor string inside checkpoints; pointmap
parses that string (never evaluates it) into this dataclass, see :func:`parse_constructor_string`.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import CheckpointError, ConfigError

__all__ = ["ModelConfig", "parse_constructor_string", "config_to_constructor_string"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a DUSt3R or MASt3R network (defaults: the released ViT-L/ViT-B 512 DPT
    DUSt3R model).

    Attributes:
        img_size: nominal training resolution ``(H, W)``; any multiple of ``patch_size`` runs.
        patch_size: patch side in pixels.
        enc_embed_dim, enc_depth, enc_num_heads: ViT encoder width, blocks, heads.
        dec_embed_dim, dec_depth, dec_num_heads: each decoder's width, blocks, heads.
        mlp_ratio: MLP hidden width / embedding width.
        head_type: ``"linear"`` (pixel shuffle), ``"dpt"``, or ``"catmlp+dpt"`` (MASt3R: DPT for
            points and confidence, plus an MLP on the concatenated encoder and last decoder
            tokens, pixel-shuffled to full resolution, for local descriptors).
        output_mode: ``"pts3d"``, or ``"pts3d+desc{D}"`` (with ``catmlp+dpt``: ``D``-dim
            descriptors, 24 in the released MASt3R).
        depth_mode: ``(mode, vmin, vmax)``; ``("exp", -inf, inf)`` in the released models.
        conf_mode: ``(mode, vmin, vmax)``; ``("exp", 1, inf)`` gives ``conf = 1 + exp(x)``.
        two_confs: descriptors have their own confidence channel (else they reuse ``conf``).
        desc_conf_mode: ``(mode, vmin, vmax)`` of the descriptor confidence (``None``: as
            ``conf_mode``); ``("exp", 0, inf)`` in the released MASt3R.
        desc_mode: descriptor post-processing; ``"norm"``: L2-normalised.
        rope_base: RoPE frequency base (``pos_embed='RoPE100'`` -> 100).
        norm_eps: LayerNorm epsilon.
        dpt_layer_dims: DPT per-hook channel widths.
        dpt_feature_dim: DPT fusion width.
        dpt_last_dim: DPT head hidden width.
        landscape_only: stored for round trips; inference never transposes.
        patch_embed_cls: stored for round trips (``PatchEmbedDust3R`` and ``ManyAR_PatchEmbed``
            behave identically at inference).
    """

    img_size: tuple[int, int] = (512, 512)
    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    mlp_ratio: float = 4.0
    head_type: str = "dpt"
    output_mode: str = "pts3d"
    depth_mode: tuple[str, float, float] = ("exp", -math.inf, math.inf)
    conf_mode: tuple[str, float, float] = ("exp", 1.0, math.inf)
    rope_base: float = 100.0
    norm_eps: float = 1e-6
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    dpt_feature_dim: int = 256
    dpt_last_dim: int = 128
    landscape_only: bool = False
    patch_embed_cls: str = "PatchEmbedDust3R"
    two_confs: bool = False
    desc_conf_mode: tuple[str, float, float] | None = None
    desc_mode: str = "norm"

    def __post_init__(self) -> None:
        if self.head_type not in ("linear", "dpt", "catmlp+dpt"):
            raise ConfigError(f"head_type must be 'linear', 'dpt' or 'catmlp+dpt', not {self.head_type!r}")
        if self.head_type == "catmlp+dpt":
            m = re.fullmatch(r"pts3d\+desc(\d+)", self.output_mode)
            if m is None or int(m.group(1)) < 1:
                raise ConfigError(
                    f"head_type 'catmlp+dpt' needs output_mode 'pts3d+desc<D>', not {self.output_mode!r}")
            if self.desc_mode != "norm":
                raise ConfigError(f"only desc_mode='norm' is supported, not {self.desc_mode!r}")
        elif self.output_mode != "pts3d":
            raise ConfigError(
                f"output_mode {self.output_mode!r} needs head_type 'catmlp+dpt'; "
                f"head {self.head_type!r} supports only 'pts3d'")
        if self.desc_conf_mode is not None and self.desc_conf_mode[0] not in ("exp", "sigmoid"):
            raise ConfigError(f"unknown desc_conf_mode {self.desc_conf_mode!r}")
        if self.enc_embed_dim % self.enc_num_heads or self.dec_embed_dim % self.dec_num_heads:
            raise ConfigError("embedding widths must be divisible by their head counts")
        for name, nh, dim in (("encoder", self.enc_num_heads, self.enc_embed_dim),
                              ("decoder", self.dec_num_heads, self.dec_embed_dim)):
            if (dim // nh) % 4:
                raise ConfigError(f"{name} head dim must be a multiple of 4 for 2D RoPE")
        if self.head_type in ("dpt", "catmlp+dpt") and self.dec_depth < 4:
            raise ConfigError("the DPT head needs dec_depth >= 4")
        if self.depth_mode[0] not in ("exp", "linear", "square"):
            raise ConfigError(f"unknown depth_mode {self.depth_mode!r}")
        if self.conf_mode[0] not in ("exp", "sigmoid"):
            raise ConfigError(f"unknown conf_mode {self.conf_mode!r}")

    @property
    def native_size(self) -> int:
        """Default preprocessing size (long side, pixels) for this network: 224 for models
        trained at 224 or less, 512 otherwise (the sizes the released models were trained at)."""
        return 224 if max(self.img_size) <= 224 else 512

    @property
    def desc_dim(self) -> int:
        """Descriptor dimension (0 for models without descriptors)."""
        return int(self.output_mode[len("pts3d+desc"):]) if self.head_type == "catmlp+dpt" else 0

    @property
    def metric(self) -> bool:
        """Whether the network predicts metric points (metres): the released MASt3R
        (``catmlp+dpt``) models do; DUSt3R's are scale-free."""
        return self.head_type == "catmlp+dpt"

    @property
    def desc_conf(self) -> tuple[str, float, float]:
        """The mode of the descriptor confidence (``desc_conf_mode``, else ``conf_mode``)."""
        return self.desc_conf_mode if self.desc_conf_mode is not None else self.conf_mode

    @property
    def dpt_hooks(self) -> tuple[int, int, int, int]:
        """Token-list indices fed to the DPT head: ``[0, L/2, 3L/4, L]`` (integer division)."""
        L = self.dec_depth
        return (0, 2 * L // 4, 3 * L // 4, L)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists, infinities as floats)."""
        d = asdict(self)
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        for k in ("two_confs", "desc_conf_mode", "desc_mode"):  # DUSt3R files stay as they were
            if out[k] == getattr(ModelConfig, k):
                del out[k]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; also accepts the reference hub ``config.json`` keys."""
        d = dict(d)
        if "pos_embed" in d:
            pe = d.pop("pos_embed")
            if not (isinstance(pe, str) and pe.startswith("RoPE")):
                raise CheckpointError(f"unsupported pos_embed {pe!r}: pointmap implements RoPE only")
            d["rope_base"] = float(pe[4:] or 100)
        d.pop("freeze", None)
        d.pop("mask_ratio", None)
        d.pop("norm_im2_in_dec", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CheckpointError(f"unknown model config fields: {', '.join(unknown)}")
        if d.get("desc_conf_mode") is None:
            d.pop("desc_conf_mode", None)
        for k in ("img_size", "depth_mode", "conf_mode", "dpt_layer_dims", "desc_conf_mode"):
            if k in d:
                v = d[k]
                d[k] = tuple(v) if isinstance(v, (list, tuple)) else (v, v)
        for k in ("depth_mode", "conf_mode", "desc_conf_mode"):
            if k in d:
                m, lo, hi = d[k]
                d[k] = (m, float(lo), float(hi))
        return cls(**d)


_CONSTRUCTOR_NAMES = {"AsymmetricCroCo3DStereo", "AsymmetricCroCo3DStereoMultiview", "DUSt3R"}
_MAST3R_NAMES = {"AsymmetricMASt3R"}


def _literal(node: ast.AST) -> Any:
    """Evaluate a literal AST node, allowing the name ``inf`` and unary minus."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in ("inf", "math.inf"):
        return math.inf
    if isinstance(node, ast.Attribute) and node.attr == "inf":
        return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float":
        if len(node.args) == 1 and isinstance(node.args[0], ast.Constant):
            return float(node.args[0].value)
    raise ConfigError(f"not a literal: {ast.dump(node)}")


def parse_constructor_string(text: str) -> ModelConfig:
    """Parse a reference constructor string such as
    ``AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(512, 512), head_type='dpt', ...)``
    into a :class:`ModelConfig`, without evaluating any code.

    Raises:
        CheckpointError: the string is not a single call of a known model class with literal
            keyword arguments.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise CheckpointError(f"cannot parse model constructor string {text!r}: {exc.msg}") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise CheckpointError(f"model constructor string is not a simple call: {text!r}")
    if call.func.id not in _CONSTRUCTOR_NAMES | _MAST3R_NAMES:
        raise CheckpointError(
            f"model class {call.func.id!r} is not a DUSt3R model (expected AsymmetricCroCo3DStereo, "
            "or AsymmetricMASt3R for MASt3R)"
        )
    if call.args:
        raise CheckpointError("model constructor string has positional arguments; expected keywords")
    kw: dict[str, Any] = {}
    for k in call.keywords:
        if k.arg is None:
            raise CheckpointError("model constructor string uses ** expansion")
        try:
            kw[k.arg] = _literal(k.value)
        except ValueError:
            raise CheckpointError(f"argument {k.arg!r} of the model constructor is not a literal") from None
    pe_cls = kw.pop("patch_embed_cls", "PatchEmbedDust3R")
    if pe_cls not in ("PatchEmbedDust3R", "ManyAR_PatchEmbed"):
        raise CheckpointError(f"unsupported patch_embed_cls {pe_cls!r}")
    kw["patch_embed_cls"] = pe_cls
    for ignored in ("freeze", "mask_ratio", "norm_im2_in_dec"):
        kw.pop(ignored, None)
    if "landscape_only" in kw:
        kw["landscape_only"] = bool(kw["landscape_only"])
    if call.func.id in _MAST3R_NAMES:
        # the reference's MASt3R loader builds the network with PatchEmbedDust3R and
        # landscape_only=False, whatever the checkpoint says (portrait images stay portrait)
        kw["patch_embed_cls"] = "PatchEmbedDust3R"
        kw["landscape_only"] = False
    if isinstance(kw.get("desc_conf_mode"), tuple):
        kw["desc_conf_mode"] = tuple(kw["desc_conf_mode"])
    try:
        return ModelConfig.from_dict(kw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid model constructor string {text!r}: {exc}") from None


def config_to_constructor_string(cfg: ModelConfig) -> str:
    """The reference-style constructor string for ``cfg`` (for writing released-layout ``.pth``)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        if isinstance(v, tuple):
            return "(" + ", ".join(fmt(x) for x in v) + ")"
        return repr(v)

    mast3r = cfg.head_type == "catmlp+dpt"
    parts = [
        f"pos_embed='RoPE{int(cfg.rope_base) if float(cfg.rope_base).is_integer() else cfg.rope_base}'",
        f"output_mode={cfg.output_mode!r}",
        f"depth_mode={fmt(cfg.depth_mode)}",
        f"conf_mode={fmt(cfg.conf_mode)}",
    ]
    if cfg.patch_embed_cls != "PatchEmbedDust3R":
        parts.append(f"patch_embed_cls={cfg.patch_embed_cls!r}")
    parts += [
        f"img_size={fmt(cfg.img_size)}",
        f"head_type={cfg.head_type!r}",
        f"enc_embed_dim={cfg.enc_embed_dim}", f"enc_depth={cfg.enc_depth}",
        f"enc_num_heads={cfg.enc_num_heads}", f"dec_embed_dim={cfg.dec_embed_dim}",
        f"dec_depth={cfg.dec_depth}", f"dec_num_heads={cfg.dec_num_heads}",
    ]
    if mast3r:
        parts.append(f"two_confs={cfg.two_confs!r}")
        if cfg.desc_conf_mode is not None:
            parts.append(f"desc_conf_mode={fmt(cfg.desc_conf_mode)}")
        if cfg.desc_mode != "norm":
            parts.append(f"desc_mode={cfg.desc_mode!r}")
    # fields the reference constructor does not know: written only when they differ from its defaults
    default = ModelConfig()
    for name in ("patch_size", "mlp_ratio", "norm_eps", "dpt_layer_dims", "dpt_feature_dim", "dpt_last_dim"):
        if getattr(cfg, name) != getattr(default, name):
            parts.append(f"{name}={fmt(getattr(cfg, name))}")
    name = "AsymmetricMASt3R" if mast3r else "AsymmetricCroCo3DStereo"
    return name + "(" + ", ".join(parts) + ")"
