"""Pair datasets of training views: the base class of readers on disk and the adapter of datasets
that already yield final view dicts. Items are ``(view1, view2)`` view dicts
(:mod:`pointmap.train.views`) indexed by a :data:`~pointmap.train.batching.SampleKey`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset

from ..batching import SampleKey, parse_key
from ..color import ColorJitter
from ..views import RESOLUTIONS_224, RawView, Resolution, crop_resize, finalize_view, transpose_to_landscape

__all__ = ["PairViewDataset", "ViewDictPairDataset"]


class PairViewDataset(Dataset):
    """Base class of pair datasets read from disk: subclasses implement :meth:`__len__` and
    :meth:`get_raw_pair`; items are ``(view1, view2)`` dicts cropped to the key's resolution.

    Args:
        resolutions: landscape ``(W, H)`` targets, indexed by the sample key's aspect-ratio index.
        aug_crop: random crop jitter (pixels, see :func:`~pointmap.train.views.crop_resize`).
        color_jitter: apply :class:`~pointmap.train.color.ColorJitter` (reference parameters) per view.
        orientation: ``"landscape"`` (every view landscape, what a plain model needs) or ``"auto"``
            (reference orientation choice; portrait views stored transposed, see
            :func:`~pointmap.train.views.transpose_to_landscape`, for a model that handles ``landscape_only``).
        seed: base seed of the per-item generators.
    """

    def __init__(self, resolutions: Sequence[Resolution] = RESOLUTIONS_224, aug_crop: int = 0,
                 color_jitter: bool = False, orientation: str = "landscape", seed: int = 0) -> None:
        self.resolutions = [tuple(int(x) for x in r) for r in resolutions]
        self.aug_crop = int(aug_crop)
        self.jitter = ColorJitter() if color_jitter else None
        self.orientation = orientation
        self.seed = int(seed)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_raw_pair(self, index: int, rng: np.random.Generator) -> tuple[RawView, RawView]:
        """The two raw views of pair ``index``; ``rng`` for any random choice."""
        raise NotImplementedError

    def item_rng(self, key: SampleKey) -> np.random.Generator:
        """The generator of one item, seeded by ``(seed, epoch, index, aspect-ratio index)``."""
        idx, ar, epoch = key
        return np.random.default_rng([self.seed, epoch, idx, ar])

    def __getitem__(self, key: int | Sequence[int]) -> tuple[dict, dict]:
        key = parse_key(key)
        rng = self.item_rng(key)
        raw = self.get_raw_pair(key[0], rng)
        res = self.resolutions[key[1] % len(self.resolutions)]
        views = []
        for v in raw:
            v = crop_resize(v, res, rng, self.aug_crop, self.orientation)
            views.append(transpose_to_landscape(finalize_view(v, rng, self.jitter)))
        return views[0], views[1]


def _view_dict_to_raw(view: dict[str, Any]) -> RawView:
    img = torch.as_tensor(view["img"]).float()
    arr = ((img.clamp(-1, 1) * 0.5 + 0.5) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return RawView(PIL.Image.fromarray(arr), torch.as_tensor(view["depthmap"]).float().numpy(),
                   torch.as_tensor(view["camera_intrinsics"]).double().numpy(),
                   torch.as_tensor(view["camera_pose"]).double().numpy(),
                   str(view.get("instance", "")), str(view.get("dataset", "")), str(view.get("label", "")))


class ViewDictPairDataset(PairViewDataset):
    """Adapter for datasets that already yield final ``(view1, view2)`` dicts (e.g. the synthetic
    engine): views already at the requested resolution pass through unchanged (unless colour jitter or
    crop jitter is asked for); others are re-cropped/resized exactly (image re-quantised to uint8)."""

    def __init__(self, base: Dataset, pass_aspect_ratio: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.base = base
        self.pass_aspect_ratio = pass_aspect_ratio

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | Sequence[int]) -> tuple[dict, dict]:
        key = parse_key(key)
        pair = self.base[(key[0], key[1])] if self.pass_aspect_ratio else self.base[key[0]]
        res = self.resolutions[key[1] % len(self.resolutions)]
        rng = self.item_rng(key)
        out = []
        for v in pair:
            H, W = (int(x) for x in torch.as_tensor(v["true_shape"]).reshape(-1)[:2])
            if (W, H) == tuple(res) and self.aug_crop <= 1 and self.jitter is None:
                out.append(v)
                continue
            raw = crop_resize(_view_dict_to_raw(v), res, rng, self.aug_crop, self.orientation)
            out.append(transpose_to_landscape(finalize_view(raw, rng, self.jitter)))
        return out[0], out[1]

