"""The DUSt3R network and its weights."""

from .checkpoint import load_model, load_weights, read_checkpoint, save_model, save_reference_pth
from .config import ModelConfig, parse_constructor_string
from .network import DUSt3R, Encoded

__all__ = [
    "DUSt3R",
    "Encoded",
    "ModelConfig",
    "parse_constructor_string",
    "load_model",
    "load_weights",
    "read_checkpoint",
    "save_model",
    "save_reference_pth",
]
