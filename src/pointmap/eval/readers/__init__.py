"""Dataset readers: one module per native layout, all returning :class:`SceneData`.

``read_dataset(path)`` detects the layout (``detect_layout``) and calls its reader;
``read_dataset(path, layout="tum", K=...)`` forces one and passes reader options through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ...errors import DatasetError
from . import (
    co3d,
    dtu,
    generic,
    kitti,
    middlebury2014,
    middlebury_mview,
    nyuv2,
    realestate10k,
    scannet,
    sevenscenes,
    strecha,
    superglue_pairs,
    tum,
)
from .base import Frame, PairRecord, SceneData

__all__ = ["Frame", "PairRecord", "SceneData", "LAYOUTS", "detect_layout", "read_dataset"]

# name -> (detector, reader), in detection order (most specific first).
LAYOUTS: dict[str, tuple[Callable[[Path], bool], Callable[..., SceneData]]] = {
    "generic": (generic.detect, generic.read_generic),
    "superglue_pairs": (superglue_pairs.detect, superglue_pairs.read_superglue_pairs),
    "middlebury_mview": (middlebury_mview.detect, middlebury_mview.read_middlebury_mview),
    "middlebury2014": (middlebury2014.detect, middlebury2014.read_middlebury2014),
    "strecha": (strecha.detect, strecha.read_strecha),
    "dtu": (dtu.detect, dtu.read_dtu),
    "7scenes": (sevenscenes.detect, sevenscenes.read_7scenes),
    "scannet": (scannet.detect, scannet.read_scannet),
    "tum": (tum.detect, tum.read_tum),
    "co3d": (co3d.detect, co3d.read_co3d),
    "kitti": (kitti.detect, kitti.read_kitti),
    "nyuv2": (nyuv2.detect, nyuv2.read_nyuv2),
    "realestate10k": (realestate10k.detect, realestate10k.read_realestate10k),
}


def detect_layout(path: str | Path) -> str:
    """Name of the layout of ``path`` (a folder, or a file for pair lists / camera files).

    Raises DatasetError when the path is missing or matches no known layout.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist")
    for name, (detect, _) in LAYOUTS.items():
        if detect(path):
            return name
    raise DatasetError(f"cannot recognise the dataset layout of {path}; known layouts: {', '.join(LAYOUTS)} "
                       f"(pass layout= to force one)")


def read_dataset(path: str | Path, layout: str | None = None, **options: Any) -> SceneData:
    """Read a dataset scene, detecting its layout unless ``layout`` is given.

    Args:
        path: scene folder or file.
        layout: one of :data:`LAYOUTS` (``None``: detect).
        options: passed to the layout's reader (e.g. ``K=`` for ``tum``).
    """
    if layout is None:
        layout = detect_layout(path)
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout '{layout}'; known layouts: {', '.join(LAYOUTS)}")
    return LAYOUTS[layout][1](Path(path), **options)
