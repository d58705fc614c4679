"""Checkpoint I/O: the reference ``.pth`` layout, the hub layout, and pointmap's own format.

Sources accepted by :func:`load_model`:

* a reference ``.pth`` file (``{'model': state_dict, 'args': Namespace(model='Asym...(...)')}``),
  read with ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allow-listed; the
  constructor string is parsed, never evaluated;
* the hub layout: a folder (or its ``model.safetensors``) with ``config.json`` beside it;
* pointmap's own format: one ``.safetensors`` file whose metadata holds the JSON config
  (written by :func:`save_model` and ``pointmap convert``);
* a hub id ``owner/name`` (needs ``huggingface_hub`` and a network connection);
* the name of a bundled model (``"default"``);
* the short name of a released checkpoint (:data:`RELEASED_MODELS`, e.g. ``"dust3r-512-dpt"``):
  a file in the local weights folder (:func:`weights_dir`: ``$POINTMAP_WEIGHTS``, default
  ``~/.cache/pointmap/weights``) named ``<short name>.safetensors``, ``<short name>.pth``, the
  released file name (``DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth``) or a hub-layout folder
  ``<short name>/``; otherwise its hub id, downloaded with ``huggingface_hub``.

The module is long because it holds one short reader per accepted source behind the one
:func:`load_model` and its resolution order; split up, that order would be spread over modules.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, install_hint
from .config import ModelConfig, config_to_constructor_string, parse_constructor_string
from .network import DUSt3R

__all__ = [
    "load_model",
    "save_model",
    "save_reference_pth",
    "read_checkpoint",
    "recommended_threshold",
    "load_weights",
    "LoadReport",
    "BUNDLED_MODELS",
    "RELEASED_MODELS",
    "ReleasedModel",
    "WEIGHTS_ENV",
    "bundled_model_path",
    "released_model_files",
    "weights_dir",
]

_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
BUNDLED_MODELS = {"default": "pointmap_default.safetensors"}
_FORMAT_KEY = "pointmap_config"
_THRESHOLD_KEY = "pointmap_conf_threshold"


def bundled_model_path(name: str = "default") -> Path:
    """Path of a bundled model file (it may not exist in a source checkout without weights)."""
    return _WEIGHTS_DIR / BUNDLED_MODELS[name]


@dataclass(frozen=True)
class ReleasedModel:
    """A released checkpoint known by a short name.

    Attributes:
        hub_id: its Hugging Face hub repository (``config.json`` + ``model.safetensors``).
        file_name: the name of the file its authors distribute for direct download.
    """

    hub_id: str
    file_name: str


#: Short names of released checkpoints (``--weights dust3r-512-dpt``). A new released model is one
#: more entry here.
RELEASED_MODELS: dict[str, ReleasedModel] = {
    "dust3r-512-dpt": ReleasedModel(
        "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt", "DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth"),
    "dust3r-512-linear": ReleasedModel(
        "naver/DUSt3R_ViTLarge_BaseDecoder_512_linear", "DUSt3R_ViTLarge_BaseDecoder_512_linear.pth"),
    "dust3r-224-linear": ReleasedModel(
        "naver/DUSt3R_ViTLarge_BaseDecoder_224_linear", "DUSt3R_ViTLarge_BaseDecoder_224_linear.pth"),
    "mast3r-512": ReleasedModel(
        "naver/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric",
        "MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric.pth"),
}

#: Environment variable naming the local weights folder (see :func:`weights_dir`).
WEIGHTS_ENV = "POINTMAP_WEIGHTS"


def weights_dir() -> Path:
    """The local folder searched for released checkpoints by short name: ``$POINTMAP_WEIGHTS``,
    or ``~/.cache/pointmap/weights`` when that variable is unset or empty."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pointmap" / "weights"


def released_model_files(name: str) -> list[Path]:
    """Where a released checkpoint ``name`` is looked for locally, in order: ``<name>.safetensors``,
    ``<name>.pth``, the released file name, a hub-layout folder ``<name>/`` (in :func:`weights_dir`)."""
    folder = weights_dir()
    entry = RELEASED_MODELS[name]
    return [folder / f"{name}.safetensors", folder / f"{name}.pth", folder / entry.file_name, folder / name]


def _model_names() -> str:
    return ", ".join([*BUNDLED_MODELS, *RELEASED_MODELS])


# ----------------------------------------------------------------------------- state dicts
@dataclass
class LoadReport:
    """What :func:`load_weights` did: keys filled from aliases/copies, and keys left out."""

    filled: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _alias_pairs(keys: set[str]) -> list[tuple[str, str]]:
    """``(layer_rn.{k}, layer{k+1}_rn)`` key pairs of every DPT head among ``keys``."""
    out = []
    for key in keys:
        if ".dpt.scratch.layer" in key and "_rn.weight" in key and ".layer_rn." not in key:
            head, rest = key.split(".dpt.scratch.", 1)
            k = int(rest[len("layer")]) - 1
            out.append((f"{head}.dpt.scratch.layer_rn.{k}.weight", key))
    return out


def _normalise_state_dict(sd: Mapping[str, torch.Tensor], expected: set[str]) -> tuple[dict, list[str]]:
    """Strip wrapper prefixes, fill DPT aliases and ``dec_blocks2`` from ``dec_blocks``."""
    sd = dict(sd)
    filled: list[str] = []
    for prefix in ("module.", "_orig_mod.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    if not any(k.startswith("dec_blocks2.") for k in sd):
        for k in list(sd):
            if k.startswith("dec_blocks."):
                k2 = "dec_blocks2." + k[len("dec_blocks."):]
                sd[k2] = sd[k]
                filled.append(k2)
    for alias, main in _alias_pairs(expected):
        if alias not in sd and main in sd:
            sd[alias] = sd[main]
            filled.append(alias)
        elif main not in sd and alias in sd:
            sd[main] = sd[alias]
            filled.append(main)
    if "mask_token" not in sd and "mask_token" in expected:
        filled.append("mask_token")  # unused by the network: left at its initial value
    return sd, filled


def load_weights(
    model: DUSt3R, state_dict: Mapping[str, torch.Tensor], strict: bool = True, source: str = "state dict"
) -> LoadReport:
    """Copy a reference-named ``state_dict`` into ``model``.

    Fills the DPT ``layer_rn`` aliases, copies ``dec_blocks`` into ``dec_blocks2`` when the latter
    is absent (initialisation from CroCo weights) and ignores ``mask_token``. With ``strict``, any
    unknown, missing or wrongly shaped key raises :class:`CheckpointError` listing them; without,
    missing and unknown keys are reported (shape mismatches always raise).
    """
    own = model.state_dict()
    expected = set(own)
    sd, filled = _normalise_state_dict(state_dict, expected)
    unexpected = sorted(set(sd) - expected)
    missing = sorted(expected - set(sd) - {"mask_token"})
    wrong = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(sd) & expected
        if tuple(sd[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if wrong:
        problems.append("wrongly shaped keys:\n  " + "\n  ".join(wrong[:30]))
    if strict and missing:
        problems.append(f"{len(missing)} missing keys:\n  " + "\n  ".join(missing[:30]))
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unknown keys:\n  " + "\n  ".join(unexpected[:30]))
    if problems:
        raise CheckpointError(f"{source} does not match the model architecture; " + "\n".join(problems))
    with torch.no_grad():
        for k in set(sd) & expected:
            own[k].copy_(sd[k].to(own[k].dtype))
    return LoadReport(filled=sorted(filled), missing=missing, unexpected=unexpected)


# ----------------------------------------------------------------------------- readers
def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's business
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickling_detail(str(exc))
        raise CheckpointError(
            f"refusing to load {path}: it needs Python objects beyond tensors and argparse.Namespace "
            f"({detail.strip()}). Pickled checkpoints can execute code when loaded, so pointmap never "
            "unpickles them, 'pointmap convert' included. If you trust the file, re-save just its "
            "tensors with PyTorch in a separate, disposable environment (the state dict, under "
            "'model', and the constructor string, under 'args.model') and load or convert that file."
        ) from None
    except Exception as exc:  # truncated archives fail in many ways inside torch.load
        first = _without_unsafe_advice(str(exc).splitlines()[0] if str(exc) else "") or type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or not a checkpoint?): {first}"
        ) from None


def _unpickling_detail(text: str) -> str:
    """What torch's safe loader refused (e.g. ``GLOBAL posix.system``), without its advice."""
    text = text.split("WeightsUnpickler error:", 1)[-1]
    for para in re.split(r"\n\s*\n", text):
        para = _without_unsafe_advice(" ".join(para.split()))
        if para and not para.startswith(("Weights only load failed", "Check the documentation")):
            return para
    return "objects the safe loader does not allow"


def _without_unsafe_advice(text: str) -> str:
    """``text`` without the sentences in which torch suggests turning its safe loading off
    (``weights_only=False``) or allow-listing globals: pointmap never gives that advice."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    keep = [s for s in sentences if not re.search(r"weights_only|safe_globals|add_safe_globals", s)]
    return " ".join(keep).strip()


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or not a checkpoint?): {exc}"
        ) from None
    return sd, meta


def _read_hub_config(path: Path) -> ModelConfig:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read model config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"model config {path} is not a JSON object")
    data = data.get("model", data) if data.get("format") == "pointmap" else data
    if data.get("head_type") == "catmlp+dpt":  # MASt3R: the reference's loading rules
        data = {**data, "patch_embed_cls": "PatchEmbedDust3R", "landscape_only": False}
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid model config in {path}: {exc}") from None


def read_checkpoint(path: str | os.PathLike) -> tuple[ModelConfig | None, dict[str, torch.Tensor]]:
    """Read ``(config, state_dict)`` from a local file or folder in any supported layout.

    ``config`` is ``None`` when the file holds weights only (e.g. a bare state dict).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        st = path / "model.safetensors"
        if not st.is_file():
            raise CheckpointError(
                f"folder {path} has no model.safetensors (expected the hub layout: "
                "config.json + model.safetensors)"
            )
        path = st
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    if path.suffix == ".safetensors":
        sd, meta = _read_safetensors(path)
        if _FORMAT_KEY in meta:
            try:
                cfg = ModelConfig.from_dict(json.loads(meta[_FORMAT_KEY]))
            except (ValueError, TypeError) as exc:
                raise CheckpointError(f"invalid pointmap config in {path}: {exc}") from None
            return cfg, sd
        cfg_path = path.parent / "config.json"
        return (_read_hub_config(cfg_path) if cfg_path.is_file() else None), sd
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a dict; it is not a DUSt3R checkpoint")
    if "model" in obj and isinstance(obj["model"], dict):
        sd = obj["model"]
        cfg = None
        args = obj.get("args")
        model_str = getattr(args, "model", None) if args is not None else None
        if isinstance(args, dict):
            model_str = args.get("model")
        if isinstance(model_str, str):
            cfg = parse_constructor_string(model_str)
        else:  # a config dict; "model_config" in pointmap's training checkpoint-last.pt
            arch = next((obj[k] for k in ("config", "model_config") if isinstance(obj.get(k), dict)), None)
            if arch is not None:
                try:
                    cfg = ModelConfig.from_dict(arch)
                except (ValueError, TypeError) as exc:
                    raise CheckpointError(f"invalid model config in {path}: {exc}") from None
        return cfg, sd
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None, obj
    raise CheckpointError(
        f"{path} is not a DUSt3R checkpoint: expected a 'model' state dict (keys found: "
        f"{', '.join(map(str, list(obj)[:8]))})"
    )


def _resolve_released(name: str) -> Path:
    """A released checkpoint by short name: a local file if present, else its hub snapshot."""
    candidates = released_model_files(name)
    for c in candidates:
        if c.is_file() or (c.is_dir() and (c / "model.safetensors").is_file()):
            return c
    entry = RELEASED_MODELS[name]
    where = (
        f"put the checkpoint at {candidates[0]} (pointmap format, e.g. from 'pointmap convert'), "
        f"{candidates[2]} (the released .pth file, same name) or {candidates[3]}/ (config.json + "
        f"model.safetensors from https://huggingface.co/{entry.hub_id}); set {WEIGHTS_ENV} to use "
        "another folder"
    )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise CheckpointError(
            f"the released model {name!r} is not on this machine: {where}; or install the 'hub' "
            f"extra ({install_hint('hub')}) to download {entry.hub_id} from the hub"
        ) from None
    try:
        return _download_snapshot(hf_hub_download, entry.hub_id)
    except Exception as exc:  # offline, proxy, unknown repo, ...
        raise CheckpointError(
            f"the released model {name!r} is not on this machine and could not be downloaded "
            f"from the hub ({_first_line(exc)}). Offline? {where[0].upper()}{where[1:]}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _download_snapshot(hf_hub_download: Any, repo_id: str) -> Path:
    """``config.json`` and ``model.safetensors`` of ``repo_id`` (hub cache); their folder."""
    cfg = hf_hub_download(repo_id, "config.json")
    weights = hf_hub_download(repo_id, "model.safetensors")
    if Path(cfg).parent != Path(weights).parent:
        raise CheckpointError(f"hub files of {repo_id!r} landed in different folders")
    return Path(weights).parent


def _hub_download(repo_id: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise CheckpointError(
            f"{repo_id!r} is neither a local file nor a bundled model name; to fetch it from the hub "
            f"install the 'hub' extra ({install_hint('hub')}), or download config.json and "
            f"model.safetensors from https://huggingface.co/{repo_id} into a folder and pass that folder"
        ) from None
    try:
        return _download_snapshot(hf_hub_download, repo_id)
    except CheckpointError:
        raise
    except Exception as exc:  # offline, unknown repo, ...
        raise CheckpointError(
            f"could not fetch {repo_id!r} from the hub ({_first_line(exc)}). "
            f"Offline? Download config.json and model.safetensors from https://huggingface.co/{repo_id} "
            "into a folder on this machine and pass that folder instead."
        ) from None


def _resolve(source: str | os.PathLike) -> Path:
    s = str(source)
    if s in BUNDLED_MODELS:
        p = bundled_model_path(s)
        if not p.is_file():
            raise CheckpointError(
                f"the bundled model {s!r} is not in this installation (expected {p}); pass --weights "
                "with a checkpoint file or folder"
            )
        return p
    p = Path(s).expanduser()
    if p.exists():
        return p
    if s in RELEASED_MODELS:
        return _resolve_released(s)
    if "/" in s and not s.startswith((".", "/", "~")) and s.count("/") == 1 and not Path(s).suffix:
        return _hub_download(s)
    raise CheckpointError(
        f"checkpoint {s!r} not found: not a file, a folder, a hub id (owner/name) or a model name "
        f"({_model_names()})"
    )


def load_model(
    source: str | os.PathLike = "default",
    device: str | torch.device | None = None,
    config: ModelConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> DUSt3R:
    """Load a DUSt3R network for inference (``eval()`` mode).

    Args:
        source: file, folder, bundled model name (``"default"``), short name of a released model
            (``"dust3r-512-dpt"``, ``"dust3r-512-linear"``, ``"dust3r-224-linear"``) or hub id
            (see the module docstring).
        device: where to put the weights (default CPU).
        config: architecture to use when the checkpoint has none (a bare state dict).
        dtype: parameter dtype (keep float32 and use autocast for mixed precision).

    Raises:
        CheckpointError: unreadable, foreign, truncated or unsafe files; key mismatches.
    """
    path = _resolve(source)
    cfg, sd = read_checkpoint(path)
    threshold = recommended_threshold(path)
    cfg = config or cfg
    if cfg is None:
        err = CheckpointError(
            f"{path} holds weights but no architecture (a bare state dict); pass "
            "config=ModelConfig(...) to load it"
        )
        err.cli_message = (
            f"{path} holds weights but no architecture (a bare state dict), so the command line "
            "cannot build its network; use a checkpoint that records it: a released DUSt3R .pth, "
            "a pointmap .safetensors file, or a folder with config.json + model.safetensors"
        )
        raise err
    with torch.device("meta"):
        model = DUSt3R(cfg)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        model.mask_token.zero_()
    load_weights(model, sd, strict=True, source=str(path))
    if threshold is not None:
        model.recommended_conf_threshold = threshold
    return model.to(device=device or "cpu", dtype=dtype).eval()


def recommended_threshold(path: str | os.PathLike) -> float | None:
    """The raw-confidence threshold stored in a pointmap safetensors file (or hub folder), if any."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        value = (f.metadata() or {}).get(_THRESHOLD_KEY)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# ----------------------------------------------------------------------------- writers
def _unaliased_state_dict(model: DUSt3R, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in sd.items()
        if ".dpt.scratch.layer_rn." not in k
    }


def save_model(model: DUSt3R, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write pointmap's own format: one ``.safetensors`` file, config in its metadata (atomic)."""
    from safetensors.torch import save

    from ..io_utils import atomic_write_bytes

    path = Path(path)
    meta = {_FORMAT_KEY: json.dumps(model.config.to_dict()), "format": "pt"}
    if model.recommended_conf_threshold != 3.0:
        meta[_THRESHOLD_KEY] = repr(float(model.recommended_conf_threshold))
    atomic_write_bytes(path, save(_unaliased_state_dict(model, dtype), metadata=meta))
    return path


def save_reference_pth(model: DUSt3R, path: str | os.PathLike) -> Path:
    """Write the reference ``.pth`` layout (``model`` + ``args.model`` constructor string)."""
    import io

    from ..io_utils import atomic_write_bytes

    buf = io.BytesIO()
    args = argparse.Namespace(model=config_to_constructor_string(model.config))
    torch.save({"model": model.state_dict(), "args": args}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
