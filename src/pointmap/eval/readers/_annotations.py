"""The ``test_annotations.json`` layout of the Metric3D demos (used for NYUv2 and KITTI).

``{"files": [{"rgb": path, "depth": path, "cam_in": [fx, fy, cx, cy], "depth_scale": s}, ...]}``
with ``depth_m = raw / depth_scale``. Paths may carry a prefix from the original repository
(``data/nyu_demo/rgb/...``); leading components are dropped until the file exists under the
folder of the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import DatasetError
from .base import Frame, SceneData, image_size, parse_floats, require_dir

ANNOTATIONS = "test_annotations.json"


def resolve(root: Path, rel: str) -> Path:
    parts = Path(rel).parts
    for k in range(len(parts)):
        cand = root.joinpath(*parts[k:])
        if cand.is_file():
            return cand
    raise DatasetError(f"missing file {rel} (looked under {root})")


def read_annotations(path: Path, layout: str, default_scale: float) -> SceneData:
    folder = require_dir(path, f"{layout} folder")
    ann = folder / ANNOTATIONS
    if not ann.is_file():
        raise DatasetError(f"missing {ann}")
    try:
        data = json.loads(ann.read_text())
        entries = data["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{ann} is not a {{'files': [...]}} annotation file: {exc}") from exc
    frames = []
    for k, e in enumerate(entries):
        where = f"{ann} entry {k}"
        for key in ("rgb", "cam_in"):
            if key not in e:
                raise DatasetError(f"{where} has no '{key}'")
        cam = parse_floats([str(v) for v in e["cam_in"]], where)
        if len(cam) != 4:
            raise DatasetError(f"{where}: cam_in must be [fx, fy, cx, cy], found {len(cam)} values")
        fx, fy, cx, cy = cam
        img = resolve(folder, e["rgb"])
        w, h = image_size(img)
        depth = resolve(folder, e["depth"]) if e.get("depth") else None
        frames.append(Frame(name=img.stem, image_path=img, K=np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]),
                            width=w, height=h, depth_path=depth,
                            depth_scale=float(e.get("depth_scale", default_scale))))
    frames.sort(key=lambda f: f.name)
    return SceneData(name=folder.name, layout=layout, root=folder, frames=frames, extras={"units": "m"})
