"""CO3Dv2 in the reference's preprocessed layout.

Layout::

    root/
      selected_seqs_{split}.json      {category: {sequence: [frame numbers, ...]}}
      {category}/{sequence}/
        images/frame000001.jpg        RGB
        images/frame000001.npz        camera_pose (4, 4) cam2world, camera_intrinsics (3, 3),
                                      maximum_depth (scalar)
        depths/frame000001.jpg.geometric.png   uint16; depth = value / 65535 * maximum_depth
        masks/frame000001.png         uint8 object mask; foreground = value / 255 > 0.1

Pairs (as in the reference): for every sequence, frame positions ``i < j`` in ``range(num_frames)``
(100) with ``j - i`` in ``{5, 10, ..., 30}``; each position is jittered by an integer in ``[-4, 4]``
and clipped to the sequence's frame list. A frame without valid depth is replaced by the nearest
valid one in a random direction. ``mask_bg`` (``True``, ``False`` or ``"rand"``: 50 %) zeroes the depth
outside the object mask.
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

__all__ = ["Co3dDataset"]


class Co3dDataset(PairViewDataset):
    """Pairs of the preprocessed CO3Dv2 layout (module docstring).

    Args:
        root: the preprocessed dataset folder.
        split: selects ``selected_seqs_{split}.json``.
        mask_bg: ``True`` / ``False`` / ``"rand"``.
        num_frames: frames per sequence the pair offsets are designed for (reference: 100).
        **kw: :class:`~pointmap.train.datasets.PairViewDataset` options.
    """

    def __init__(self, root: str | Path, split: str = "train", mask_bg: bool | str = True,
                 num_frames: int = 100, **kw: Any) -> None:
        super().__init__(**kw)
        self.root = Path(root)
        if mask_bg not in (True, False, "rand"):
            raise ValueError(f"mask_bg must be True, False or 'rand', not {mask_bg!r}")
        self.mask_bg = mask_bg
        path = self.root / f"selected_seqs_{split}.json"
        try:
            seqs = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"cannot read the CO3D sequence list {path}: {exc}") from exc
        self.scenes: list[tuple[str, str, list[int]]] = [
            (cat, seq, [int(f) for f in frames])
            for cat, by_seq in sorted(seqs.items()) for seq, frames in sorted(by_seq.items()) if frames
        ]
        if not self.scenes:
            raise DatasetError(f"{path} lists no sequence with frames")
        self.combinations = [(i, j) for i in range(num_frames) for j in range(i + 1, num_frames)
                             if (j - i) <= 30 and (j - i) % 5 == 0]
        self._invalid: dict[tuple[int, int, bool], bool] = {}

    def __len__(self) -> int:
        return len(self.scenes) * len(self.combinations)

    def _frame_path(self, cat: str, seq: str, frame: int) -> Path:
        return self.root / cat / seq / "images" / f"frame{frame:06d}.jpg"

    def load_view(self, scene_idx: int, pos: int, mask_bg: bool) -> RawView:
        """Read the frame at position ``pos`` of sequence ``scene_idx``."""
        cat, seq, frames = self.scenes[scene_idx]
        img_path = self._frame_path(cat, seq, frames[pos])
        try:
            meta = np.load(img_path.with_suffix(".npz"))
            image = PIL.Image.open(img_path).convert("RGB")
            depth_png = np.asarray(PIL.Image.open(
                img_path.parent.parent / "depths" / (img_path.name + ".geometric.png")))
            max_depth = float(np.nan_to_num(meta["maximum_depth"]))
            depth = depth_png.astype(np.float32) / 65535.0 * max_depth
            if mask_bg:
                mask = np.asarray(PIL.Image.open(
                    img_path.parent.parent / "masks" / f"frame{frames[pos]:06d}.png"))
                if mask.ndim == 3:
                    mask = mask[..., 0]
                depth = depth * ((mask.astype(np.float32) / 255.0) > 0.1)
            pose = meta["camera_pose"]
            K = meta["camera_intrinsics"]
        except (OSError, KeyError, ValueError) as exc:
            raise DatasetError(f"cannot read CO3D frame {img_path}: {exc}") from exc
        return RawView(image, depth, K, pose, instance=img_path.name, dataset="Co3d_v2",
                       label=f"{cat}/{seq}")

    def get_raw_pair(self, index: int, rng: np.random.Generator) -> tuple[RawView, RawView]:
        scene_idx = index // len(self.combinations)
        i, j = self.combinations[index % len(self.combinations)]
        n = len(self.scenes[scene_idx][2])
        mask_bg = self.mask_bg is True or (self.mask_bg == "rand" and bool(rng.integers(2)))
        jit = rng.integers(-4, 5, size=2)
        directions = 2 * rng.integers(2, size=2) - 1
        views = []
        for pos, direction in zip((int(np.clip(i + jit[0], 0, n - 1)), int(np.clip(j + jit[1], 0, n - 1))),
                                  directions):
            for step in range(n):
                p = (pos + direction * step) % n
                if self._invalid.get((scene_idx, p, mask_bg)):
                    continue
                view = self.load_view(scene_idx, p, mask_bg)
                if (view.depthmap > 0).any():
                    views.append(view)
                    break
                self._invalid[(scene_idx, p, mask_bg)] = True
            else:
                cat, seq, _ = self.scenes[scene_idx]
                raise DatasetError(f"CO3D sequence {cat}/{seq} has no frame with valid depth")
        return views[0], views[1]
