"""Generic scene folders: images, depth maps and cameras described by a ``cameras.json``.

Layout of one scene::

    scene/
      cameras.json
      images/0000.jpg  ...           (any PIL-readable RGB image)
      depth/0000.png   ...           (16-bit PNG: depth = value * depth_scale; 0 = invalid)
      depth/0001.npy   ...           (or float32 .npy in scene units; 0, NaN or inf = invalid)

``cameras.json`` schema::

    {
      "depth_scale": 0.001,             # optional (default 0.001): scene units per PNG depth unit
      "frames": [
        {
          "image": "images/0000.jpg",   # path relative to the scene folder
          "depth": "depth/0000.png",    # optional; default depth/<image stem>.png, else .npy
          "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   # OpenCV intrinsics of the stored image,
                                                        # pixel centres at integer coordinates
          "cam2world": [[r00, r01, r02, tx], [r10, r11, r12, ty], [r20, r21, r22, tz], [0, 0, 0, 1]]
        },
        ...
      ],
      "pairs": [[0, 1], [0, 2]]         # optional frame index pairs; default: every (i, j) with
                                        # 0 < j - i <= max_gap
    }

Depth is z-depth (distance along the optical axis), in the same unit as the pose translations.
``root`` is either one scene folder (holding ``cameras.json``) or a folder of scene folders; in the
latter case an optional ``<root>/<split>.txt`` lists the scene folder names of a split (one per line),
otherwise every sub-folder with a ``cameras.json`` is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from ...errors import DatasetError
from ..views import RawView
from .base import PairViewDataset

__all__ = ["SceneFolderDataset", "read_scene_cameras"]


def read_scene_cameras(scene: Path) -> dict[str, Any]:
    """Parse and validate ``scene/cameras.json``; returns the dict with ``K``/``cam2world`` as arrays."""
    path = scene / "cameras.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{path} has no non-empty 'frames' list")
    for i, fr in enumerate(frames):
        for key in ("image", "K", "cam2world"):
            if key not in fr:
                raise DatasetError(f"frame {i} of {path} lacks '{key}'")
        K = np.asarray(fr["K"], dtype=np.float64)
        T = np.asarray(fr["cam2world"], dtype=np.float64)
        if K.shape != (3, 3) or T.shape != (4, 4):
            raise DatasetError(f"frame {i} of {path}: K must be 3x3 and cam2world 4x4")
        fr["K"], fr["cam2world"] = K, T
    return meta


class SceneFolderDataset(PairViewDataset):
    """Pairs of frames from one or many scene folders (layout in the module docstring).

    Args:
        root: a scene folder or a folder of scene folders.
        split: split name selecting ``<root>/<split>.txt`` when that file exists.
        max_gap: default pairs join frames at most ``max_gap`` apart in the frame list.
        **kw: :class:`~pointmap.train.datasets.PairViewDataset` options (resolutions, aug_crop …).
    """

    def __init__(self, root: str | Path, split: str = "train", max_gap: int = 3, **kw: Any) -> None:
        super().__init__(**kw)
        root = Path(root)
        if (root / "cameras.json").is_file():
            scenes = [root]
        elif (root / f"{split}.txt").is_file():
            names = [n.strip() for n in (root / f"{split}.txt").read_text().splitlines() if n.strip()]
            scenes = [root / n for n in names]
        elif root.is_dir():
            scenes = sorted(p for p in root.iterdir() if (p / "cameras.json").is_file())
        else:
            raise DatasetError(f"scene folder {root} does not exist")
        if not scenes:
            raise DatasetError(f"no scene folder with a cameras.json under {root}")
        self.scenes = scenes
        self.meta = [read_scene_cameras(s) for s in scenes]
        self.pairs: list[tuple[int, int, int]] = []
        for si, meta in enumerate(self.meta):
            n = len(meta["frames"])
            if "pairs" in meta:
                for i, j in meta["pairs"]:
                    if not (0 <= i < n and 0 <= j < n):
                        raise DatasetError(f"pair {(i, j)} of {scenes[si]}/cameras.json is out of range")
                    self.pairs.append((si, int(i), int(j)))
            else:
                self.pairs += [(si, i, j) for i in range(n) for j in range(i + 1, min(n, i + max_gap + 1))]

    def __len__(self) -> int:
        return len(self.pairs)

    def _depth_path(self, scene: Path, frame: dict[str, Any]) -> Path:
        if "depth" in frame:
            return scene / frame["depth"]
        stem = Path(frame["image"]).stem
        for ext in (".png", ".npy"):
            p = scene / "depth" / f"{stem}{ext}"
            if p.is_file():
                return p
        raise DatasetError(f"no depth map for {frame['image']} in {scene / 'depth'} (.png or .npy)")

    def load_view(self, scene_idx: int, frame_idx: int) -> RawView:
        """Read frame ``frame_idx`` of scene ``scene_idx`` as a :class:`RawView`."""
        scene, meta = self.scenes[scene_idx], self.meta[scene_idx]
        frame = meta["frames"][frame_idx]
        img_path = scene / frame["image"]
        try:
            image = PIL.Image.open(img_path).convert("RGB")
        except OSError as exc:
            raise DatasetError(f"cannot read image {img_path}: {exc}") from exc
        dpath = self._depth_path(scene, frame)
        try:
            if dpath.suffix == ".npy":
                depth = np.load(dpath).astype(np.float32)
            else:
                raw = np.asarray(PIL.Image.open(dpath))
                if raw.dtype not in (np.uint16, np.int32, np.uint8):
                    raise DatasetError(f"depth PNG {dpath} is not an integer image")
                depth = raw.astype(np.float32) * float(meta.get("depth_scale", 0.001))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read depth map {dpath}: {exc}") from exc
        depth[~np.isfinite(depth)] = 0
        return RawView(image, depth, frame["K"], frame["cam2world"], instance=str(frame["image"]),
                       dataset="scene_folder", label=scene.name)

    def get_raw_pair(self, index: int, rng: np.random.Generator) -> tuple[RawView, RawView]:
        si, i, j = self.pairs[index]
        return self.load_view(si, i), self.load_view(si, j)
