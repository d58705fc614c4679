"""Evaluation: metrics, dataset readers and report writers."""

from . import metrics, readers
from .readers import SceneData, Frame, detect_layout, read_dataset

__all__ = ["metrics", "readers", "SceneData", "Frame", "detect_layout", "read_dataset"]
