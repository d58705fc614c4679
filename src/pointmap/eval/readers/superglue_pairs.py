"""SuperGlue-style two-view pair lists (e.g. ``scannet_test_pairs_with_gt.txt``).

One pair per line, 38 columns: ``name0 name1 rot0 rot1 K0 (9) K1 (9) T_0to1 (16)``, with image
paths relative to an image root, ``rot0 / rot1`` the number of 90-degree rotations the benchmark
applies to each image, ``K`` row-major intrinsics of the image files and ``T_0to1`` the row-major
4x4 transform from camera-0 to camera-1 coordinates (metres for ScanNet). Frames carry no absolute
pose (``cam2world = None``); the GT is in :attr:`SceneData.pairs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DatasetError
from .base import Frame, PairRecord, SceneData, check_rotation, image_size, parse_floats, require_file

__all__ = ["read_superglue_pairs", "detect"]


def detect(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".txt"):
        return False
    with open(path, errors="replace") as f:
        first = f.readline().split()
    return len(first) == 38


def read_superglue_pairs(path: str | Path, image_root: str | Path | None = None) -> SceneData:
    """Read a pair list.

    Args:
        path: the ``.txt`` pair list.
        image_root: folder the image names are relative to (default: the list's folder).
    """
    path = require_file(Path(path), "pair list")
    root = Path(image_root) if image_root is not None else path.parent
    frames: list[Frame] = []
    index: dict[str, int] = {}
    pairs = []
    for k, ln in enumerate(path.read_text().splitlines(), start=1):
        tok = ln.split()
        if not tok:
            continue
        where = f"{path} line {k}"
        if len(tok) != 38:
            raise DatasetError(f"{where}: expected 38 columns (name0 name1 rot0 rot1 K0 K1 T_0to1), found {len(tok)}")
        v = parse_floats(tok[2:], where)
        K0, K1 = np.array(v[2:11]).reshape(3, 3), np.array(v[11:20]).reshape(3, 3)
        T = np.array(v[20:36]).reshape(4, 4)
        check_rotation(T[:3, :3], where)
        ids = []
        for name, K in ((tok[0], K0), (tok[1], K1)):
            if name not in index:
                img = root / name
                w, h = image_size(img)
                index[name] = len(frames)
                frames.append(Frame(name=name, image_path=img, K=K, width=w, height=h))
            ids.append(index[name])
        pairs.append(PairRecord(ids[0], ids[1], T, int(v[0]), int(v[1])))
    if not pairs:
        raise DatasetError(f"{path} lists no pairs")
    return SceneData(name=path.stem, layout="superglue_pairs", root=path, frames=frames, pairs=pairs)
