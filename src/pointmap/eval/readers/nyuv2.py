"""NYU Depth v2 frames with a ``test_annotations.json`` (Metric3D / BTS "sync" export).

Depth PNGs are 16-bit with ``depth_m = value / 1000`` (the JSON's ``depth_scale``), 0 invalid.
``K`` comes from ``cam_in = [fx, fy, cx, cy]`` in the JSON (standard NYUv2:
518.86, 519.47, 325.58, 253.74). No poses. The Eigen evaluation crop is not applied here.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._annotations import ANNOTATIONS, read_annotations
from .base import SceneData

__all__ = ["read_nyuv2", "detect"]


def detect(path: Path) -> bool:
    ann = path / ANNOTATIONS
    if not ann.is_file():
        return False
    try:
        return float(json.loads(ann.read_text())["files"][0].get("depth_scale", 1000)) != 256.0
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def read_nyuv2(path: str | Path) -> SceneData:
    """Read an NYUv2 folder with ``test_annotations.json`` (see module docstring)."""
    return read_annotations(Path(path), "nyuv2", 1000.0)
