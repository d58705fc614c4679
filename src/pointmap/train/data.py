"""Training data pipeline: views, exact crop/resize, colour jitter, datasets, sampling, batching.

Conventions
-----------
A *raw view* (:class:`RawView`) is what a reader returns: a PIL RGB image, a depth map ``(H, W)``
float32 in scene units (0 = invalid), OpenCV intrinsics ``(3, 3)`` (pixel centres at integer
coordinates) and a camera-to-world pose ``(4, 4)``.

A *view* is the dict a dataset item holds (one per image of a pair; an item is ``(view1, view2)``)::

    img               (3, H, W)  float32 in [-1, 1]
    depthmap          (H, W)     float32, 0 = invalid
    camera_pose       (4, 4)     float32 camera-to-world
    camera_intrinsics (3, 3)     float32
    pts3d             (H, W, 3)  float32 world points unprojected from depth
    valid_mask        (H, W)     bool, depth > 0 and finite
    true_shape        (2,)       int32 (H, W)
    instance, dataset, label     str

:func:`collate_pairs` stacks items into ``(view1, view2)`` batches (tensors gain a leading ``B``,
strings become lists) and :func:`symmetrize_batch` interleaves every pair with its reverse.

Sampling follows the reference: a :class:`BatchedRandomSampler` draws one aspect ratio per batch and
yields sample keys ``(index, aspect_ratio_index, epoch)``; every random choice of an item (crop
jitter, orientation, colour jitter, reader randomness) comes from a generator seeded by
``(dataset seed, epoch, index, aspect_ratio_index)``, so items do not depend on worker layout, rank or
on how many batches were drawn before (this is what makes resumed runs exact).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DatasetError

__all__ = [
    "Resolution",
    "RESOLUTIONS_512",
    "RESOLUTIONS_224",
    "RawView",
    "SampleKey",
    "crop_view",
    "rescale_view",
    "crop_resize",
    "unproject_depthmap",
    "ColorJitter",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "finalize_view",
    "transpose_to_landscape",
    "PairViewDataset",
    "ViewDictPairDataset",
    "MixtureDataset",
    "BatchedRandomSampler",
    "collate_pairs",
    "symmetrize_batch",
    "DatasetSpec",
    "build_dataset",
    "build_mixture",
    "resolutions_for",
]

Resolution = tuple[int, int]
"""``(W, H)`` in pixels, landscape (``W >= H``)."""

RESOLUTIONS_512: list[Resolution] = [(512, 384), (512, 336), (512, 288), (512, 256), (512, 160)]
RESOLUTIONS_224: list[Resolution] = [(224, 224)]

SampleKey = tuple[int, int, int]
"""``(sample index, aspect-ratio index, epoch)`` as yielded by :class:`BatchedRandomSampler`."""


def resolutions_for(size: int | Sequence[Any]) -> list[Resolution]:
    """Resolution list from a config value: ``512`` -> the reference's five 512 ratios, ``224`` ->
    ``[(224, 224)]``, or an explicit list of ``(W, H)`` pairs (landscape, multiples of 16)."""
    if isinstance(size, int):
        if size == 512:
            return list(RESOLUTIONS_512)
        if size == 224:
            return list(RESOLUTIONS_224)
        return [(size, size)]
    out = []
    for r in size:
        if isinstance(r, int):
            out.extend(resolutions_for(r))
            continue
        w, h = (int(x) for x in r)
        if w < h:
            raise ValueError(f"training resolutions are landscape (W >= H); got {(w, h)}")
        out.append((w, h))
    if not out:
        raise ValueError("empty resolution list")
    return out


# ----------------------------------------------------------------------------------------------
# Raw views and exact crop / resize
# ----------------------------------------------------------------------------------------------


@dataclass
class RawView:
    """One image with depth and camera before crop/resize (see the module docstring)."""

    image: PIL.Image.Image
    depthmap: np.ndarray  # (H, W) float32, 0 = invalid
    camera_intrinsics: np.ndarray  # (3, 3) float64
    camera_pose: np.ndarray  # (4, 4) float64 camera-to-world
    instance: str = ""
    dataset: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        self.image = self.image.convert("RGB") if self.image.mode != "RGB" else self.image
        self.depthmap = np.asarray(self.depthmap, dtype=np.float32)
        self.camera_intrinsics = np.asarray(self.camera_intrinsics, dtype=np.float64)
        self.camera_pose = np.asarray(self.camera_pose, dtype=np.float64)
        W, H = self.image.size
        if self.depthmap.shape != (H, W):
            raise DatasetError(
                f"depth map of {self.instance or 'a view'} has shape {self.depthmap.shape}, "
                f"image is {H}x{W}"
            )

    @property
    def size(self) -> Resolution:
        """``(W, H)``."""
        return self.image.size


def crop_view(view: RawView, box: tuple[int, int, int, int]) -> RawView:
    """Crop ``(left, top, right, bottom)`` (integers, right/bottom exclusive); shifts the
    principal point by ``(-left, -top)``."""
    left, top, right, bottom = (int(b) for b in box)
    K = view.camera_intrinsics.copy()
    K[0, 2] -= left
    K[1, 2] -= top
    return RawView(view.image.crop((left, top, right, bottom)), view.depthmap[top:bottom, left:right],
                   K, view.camera_pose, view.instance, view.dataset, view.label)


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel for a centre-aligned nearest-neighbour resize: output
    centre ``i`` sits at source coordinate ``(i + 0.5) * n_in / n_out - 0.5``."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def rescale_view(view: RawView, size: Resolution) -> RawView:
    """Resize to ``size`` = ``(W', H')``: the image with LANCZOS when shrinking (BICUBIC when
    enlarging), the depth with centre-aligned nearest neighbour, and the intrinsics exactly with the
    pixel-centre convention (``u' = (u + 0.5) * W'/W - 0.5``, per axis)."""
    W, H = view.size
    Wn, Hn = int(size[0]), int(size[1])
    sx, sy = Wn / W, Hn / H
    filt = PIL.Image.LANCZOS if max(sx, sy) < 1 else PIL.Image.BICUBIC
    image = view.image.resize((Wn, Hn), resample=filt)
    depth = view.depthmap[_nearest_indices(H, Hn)][:, _nearest_indices(W, Wn)]
    S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
    return RawView(image, depth, S @ view.camera_intrinsics, view.camera_pose, view.instance,
                   view.dataset, view.label)


def crop_resize(
    view: RawView,
    resolution: Resolution,
    rng: np.random.Generator,
    aug_crop: int = 0,
    orientation: str = "auto",
) -> RawView:
    """The reference crop/resize with exact intrinsics.

    1. Crop the largest window centred on the rounded principal point.
    2. Orientation: with ``"auto"`` a portrait window (``H > 1.1 W``) uses the transposed target, a
       near-square one (``0.9 < H/W < 1.1``) picks one at random for non-square targets; with
       ``"landscape"`` the target is always ``resolution``.
    3. Jitter: if ``aug_crop > 1`` one random integer in ``[0, aug_crop)`` is added to both target sides.
    4. Rescale by ``s = max(target / size) + 1e-8`` to ``floor(size * s)`` (:func:`rescale_view`).
    5. Centred crop to the exact (un-jittered) resolution.

    Args:
        resolution: ``(W, H)`` landscape target.
        rng: generator for the orientation and jitter draws.

    Returns:
        A view of exactly ``resolution`` (or its transpose).

    Raises:
        DatasetError: the principal point is too close to the border (< 1/5 of the image side).
    """
    W, H = view.size
    cx, cy = (int(np.round(c)) for c in view.camera_intrinsics[:2, 2])
    mx, my = min(cx, W - cx), min(cy, H - cy)
    if mx <= W / 5 or my <= H / 5:
        raise DatasetError(
            f"principal point ({view.camera_intrinsics[0, 2]:.1f}, {view.camera_intrinsics[1, 2]:.1f}) "
            f"of {view.instance or 'a view'} ({W}x{H}) is too close to the image border"
        )
    view = crop_view(view, (cx - mx, cy - my, cx + mx, cy + my))
    W, H = view.size
    tw, th = int(resolution[0]), int(resolution[1])
    if tw < th:
        raise ValueError(f"crop_resize expects a landscape resolution, got {resolution}")
    if orientation == "auto":
        if H > 1.1 * W:
            tw, th = th, tw
        elif 0.9 < H / W < 1.1 and tw != th and rng.integers(2):
            tw, th = th, tw
    elif orientation != "landscape":
        raise ValueError(f"orientation must be 'auto' or 'landscape', not {orientation!r}")
    jitter = int(rng.integers(0, aug_crop)) if aug_crop > 1 else 0
    s = max((tw + jitter) / W, (th + jitter) / H) + 1e-8
    view = rescale_view(view, (math.floor(W * s), math.floor(H * s)))
    W, H = view.size
    left, top = (W - tw) // 2, (H - th) // 2
    return crop_view(view, (left, top, left + tw, top + th))


def unproject_depthmap(depth: np.ndarray, K: np.ndarray, cam2world: np.ndarray) -> np.ndarray:
    """World points ``(H, W, 3)`` float64 of a depth map ``(H, W)`` (z-depth) with intrinsics
    ``K`` ``(3, 3)`` and pose ``cam2world`` ``(4, 4)``; pixel ``(u, v)`` -> ray ``K^-1 (u, v, 1)``."""
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    rays = pix @ np.linalg.inv(K).T
    pts_cam = rays / rays[..., 2:3] * depth[..., None].astype(np.float64)
    return pts_cam @ cam2world[:3, :3].T + cam2world[:3, 3]


# ----------------------------------------------------------------------------------------------
# Colour jitter (torchvision-like, pure torch)
# ----------------------------------------------------------------------------------------------


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = rgb.unbind(0)
    maxc, _ = rgb.max(dim=0)
    minc, _ = rgb.min(dim=0)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    d = delta.clamp(min=1e-12)
    h = torch.where(maxc == r, ((g - b) / d) % 6,
                    torch.where(maxc == g, (b - r) / d + 2, (r - g) / d + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h)) % 1.0
    return torch.stack([h, s, maxc])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: ``(3, H, W)`` HSV in [0, 1] -> RGB in [0, 1]."""
    h, s, v = hsv.unbind(0)
    h6 = (h % 1.0) * 6
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    table = torch.stack([
        torch.stack([v, q, p, p, t, v]),
        torch.stack([t, v, v, q, p, p]),
        torch.stack([p, p, t, v, v, q]),
    ])  # (3, 6, H, W)
    return table.gather(1, i[None, None].expand(3, 1, *i.shape)).squeeze(1)


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    return (0.2989 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None]


class ColorJitter:
    """Random brightness/contrast/saturation/hue jitter in a random order (like torchvision's).

    Factors: brightness, contrast, saturation uniform in ``[1 - x, 1 + x]``; hue shift uniform in
    ``[-hue, hue]`` turns. The reference uses ``(0.5, 0.5, 0.5, 0.1)``.
    """

    def __init__(self, brightness: float = 0.5, contrast: float = 0.5, saturation: float = 0.5,
                 hue: float = 0.1) -> None:
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], not {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    @staticmethod
    def adjust(img: torch.Tensor, op: str, factor: float) -> torch.Tensor:
        """Apply one adjustment to ``img`` ``(3, H, W)`` in [0, 1] (result clamped to [0, 1])."""
        if op == "brightness":
            return (img * factor).clamp(0, 1)
        if op == "contrast":
            mean = _gray(img).mean()
            return (factor * img + (1 - factor) * mean).clamp(0, 1)
        if op == "saturation":
            return (factor * img + (1 - factor) * _gray(img)).clamp(0, 1)
        if op == "hue":
            hsv = rgb_to_hsv(img)
            hsv = torch.stack([(hsv[0] + factor) % 1.0, hsv[1], hsv[2]])
            return hsv_to_rgb(hsv).clamp(0, 1)
        raise ValueError(f"unknown colour adjustment {op!r}")

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Jitter ``img`` ``(3, H, W)`` in [0, 1] with draws from ``rng``."""
        order = rng.permutation(4)
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        s = rng.uniform(1 - self.saturation, 1 + self.saturation)
        h = rng.uniform(-self.hue, self.hue)
        ops = [("brightness", b), ("contrast", c), ("saturation", s), ("hue", h)]
        for k in order:
            op, f = ops[k]
            img = self.adjust(img, op, float(f))
        return img


# ----------------------------------------------------------------------------------------------
# Final views
# ----------------------------------------------------------------------------------------------


def finalize_view(
    view: RawView, rng: np.random.Generator, jitter: ColorJitter | None = None
) -> dict[str, Any]:
    """Turn a raw view into the view dict of the module docstring (image normalised to [-1, 1],
    optional colour jitter, world points and validity mask from depth)."""
    img = torch.from_numpy(np.asarray(view.image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
    if jitter is not None:
        img = jitter(img, rng)
    depth = view.depthmap.astype(np.float32)
    finite = np.isfinite(depth)
    depth = np.where(finite, depth, 0).astype(np.float32)
    pts = unproject_depthmap(depth, view.camera_intrinsics, view.camera_pose)
    valid = (depth > 0) & finite & np.isfinite(pts).all(axis=-1)
    H, W = depth.shape
    return {
        "img": (img - 0.5) / 0.5,
        "depthmap": torch.from_numpy(depth),
        "camera_pose": torch.from_numpy(view.camera_pose.astype(np.float32)),
        "camera_intrinsics": torch.from_numpy(view.camera_intrinsics.astype(np.float32)),
        "pts3d": torch.from_numpy(np.nan_to_num(pts).astype(np.float32)),
        "valid_mask": torch.from_numpy(valid),
        "true_shape": torch.tensor([H, W], dtype=torch.int32),
        "instance": view.instance,
        "dataset": view.dataset,
        "label": view.label,
    }


def transpose_to_landscape(view: dict[str, Any]) -> dict[str, Any]:
    """Store a portrait view transposed (the reference ManyAR convention): image, depth, points and
    mask get their two pixel axes swapped; intrinsics rows are reordered ``[1, 0, 2]``; ``true_shape``
    keeps the real (portrait) shape. Landscape views are returned unchanged."""
    H, W = view["depthmap"].shape
    if W >= H:
        return view
    out = dict(view)
    out["img"] = view["img"].transpose(1, 2).contiguous()
    out["depthmap"] = view["depthmap"].T.contiguous()
    out["pts3d"] = view["pts3d"].transpose(0, 1).contiguous()
    out["valid_mask"] = view["valid_mask"].T.contiguous()
    out["camera_intrinsics"] = view["camera_intrinsics"][[1, 0, 2]]
    return out


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------


def _parse_key(key: int | Sequence[int]) -> SampleKey:
    if isinstance(key, (int, np.integer)):
        return int(key), 0, 0
    k = tuple(int(x) for x in key)
    return (k + (0, 0))[:3] if len(k) < 3 else k[:3]  # type: ignore[return-value]


class PairViewDataset(Dataset):
    """Base class of pair datasets read from disk: subclasses implement :meth:`__len__` and
    :meth:`get_raw_pair`; items are ``(view1, view2)`` dicts cropped to the key's resolution.

    Args:
        resolutions: landscape ``(W, H)`` targets, indexed by the sample key's aspect-ratio index.
        aug_crop: random crop jitter (pixels, see :func:`crop_resize`).
        color_jitter: apply :class:`ColorJitter` (reference parameters) per view.
        orientation: ``"landscape"`` (every view landscape, what a plain model needs) or ``"auto"``
            (reference orientation choice; portrait views stored transposed, see
            :func:`transpose_to_landscape`, for a model that handles ``landscape_only``).
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
        key = _parse_key(key)
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
        key = _parse_key(key)
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


class MixtureDataset(Dataset):
    """Weighted mixture: component ``c`` contributes ``num_pairs[c]`` items per epoch (the reference
    ``N @ dataset``), drawn from a permutation of that dataset seeded by ``seed + epoch`` and cycled
    when ``N`` exceeds its size; ``None`` takes the dataset as is.

    Keys are :data:`SampleKey`; the aspect-ratio index and epoch are passed on to the component.
    """

    def __init__(self, parts: Sequence[tuple[Dataset, int | None]], seed: int = 777) -> None:
        if not parts:
            raise ValueError("a dataset mixture needs at least one dataset")
        self.datasets = [d for d, _ in parts]
        self.sizes = [len(d) if n is None else int(n) for d, n in parts]
        for d, n in zip(self.datasets, self.sizes):
            if len(d) == 0 and n > 0:
                raise DatasetError(f"dataset {type(d).__name__} is empty but {n} pairs were requested")
        self.offsets = np.cumsum([0] + self.sizes).tolist()
        self.fixed = [n is None for _, n in parts]
        self.seed = seed
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _perm(self, c: int, epoch: int) -> np.ndarray:
        key = (c, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 64:
                self._perm_cache.clear()
            self._perm_cache[key] = np.random.default_rng(self.seed + epoch).permutation(len(self.datasets[c]))
        return self._perm_cache[key]

    def locate(self, key: SampleKey) -> tuple[int, int]:
        """``(component, index in that component)`` of a mixture key."""
        idx, _, epoch = key
        if not 0 <= idx < len(self):
            raise IndexError(f"mixture index {idx} out of range [0, {len(self)})")
        c = bisect.bisect_right(self.offsets, idx) - 1
        j = idx - self.offsets[c]
        if self.fixed[c]:
            return c, j
        perm = self._perm(c, epoch)
        return c, int(perm[j % len(perm)])

    def __getitem__(self, key: int | Sequence[int]) -> tuple[dict, dict]:
        key = _parse_key(key)
        c, j = self.locate(key)
        return self.datasets[c][(j, key[1], key[2])]


# ----------------------------------------------------------------------------------------------
# Sampling and batching
# ----------------------------------------------------------------------------------------------


class BatchedRandomSampler(Sampler):
    """Batch sampler: shuffles ``num_samples`` with ``seed + epoch``, cuts global batches of
    ``batch_size * world_size`` (incomplete last batch dropped), draws one aspect-ratio index per global
    batch, and gives rank ``r`` the slice ``[r * batch_size, (r + 1) * batch_size)`` of each.

    Yields lists of :data:`SampleKey`. :meth:`set_epoch` selects the epoch; ``start_batch`` skips the
    first batches of the epoch (resume).
    """

    def __init__(self, num_samples: int, batch_size: int, num_resolutions: int = 1,
                 world_size: int = 1, rank: int = 0, seed: int = 777) -> None:
        if batch_size < 1 or num_resolutions < 1:
            raise ValueError("batch_size and num_resolutions must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.num_resolutions, self.world_size, self.rank = num_resolutions, world_size, rank
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        if len(self) == 0:
            raise DatasetError(
                f"{num_samples} pairs per epoch are fewer than one global batch "
                f"({batch_size} x {world_size} processes)"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and the first batch to yield."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self) -> int:
        """Batches per epoch (per rank), including the skipped ones."""
        return self.num_samples // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        perm = rng.permutation(self.num_samples)
        n = len(self)
        ars = rng.integers(self.num_resolutions, size=n)
        gb = self.batch_size * self.world_size
        for b in range(self.start_batch, n):
            base = b * gb + self.rank * self.batch_size
            yield [(int(perm[base + k]), int(ars[b]), self.epoch) for k in range(self.batch_size)]


def collate_pairs(items: Sequence[tuple[dict, dict]]) -> tuple[dict, dict]:
    """Stack a list of ``(view1, view2)`` items into batched ``(view1, view2)``: tensors and arrays
    gain a leading batch axis (``true_shape`` -> int32 ``(B, 2)``), other values become lists."""
    out = []
    for i in range(2):
        views = [it[i] for it in items]
        batch: dict[str, Any] = {}
        common = [k for k in views[0] if all(k in v for v in views[1:])]
        for k in common:
            vals = [v[k] for v in views]
            if isinstance(vals[0], (torch.Tensor, np.ndarray)):
                batch[k] = torch.stack([torch.as_tensor(x) for x in vals])
            elif isinstance(vals[0], (int, float, bool)) and not isinstance(vals[0], str):
                batch[k] = torch.tensor(vals)
            else:
                batch[k] = list(vals)
        if "true_shape" in batch:
            batch["true_shape"] = torch.as_tensor(batch["true_shape"]).to(torch.int32).reshape(-1, 2)
        out.append(batch)
    return out[0], out[1]


def _interleave(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.stack([a, b], dim=1).flatten(0, 1)
    return [x for pair in zip(a, b) for x in pair]


def symmetrize_batch(view1: dict, view2: dict) -> tuple[dict, dict]:
    """Feed every pair in both orders: batches ``(B, ...)`` become ``(2B, ...)`` with
    ``view1 = [a0, b0, a1, b1, ...]`` and ``view2 = [b0, a0, b1, a1, ...]``."""
    v1 = {k: _interleave(view1[k], view2[k]) for k in view1 if k in view2}
    v2 = {k: _interleave(view2[k], view1[k]) for k in view1 if k in view2}
    return v1, v2


# ----------------------------------------------------------------------------------------------
# Typed dataset specs ("N @ dataset")
# ----------------------------------------------------------------------------------------------


@dataclass
class DatasetSpec:
    """One term of a training mixture, the typed form of the reference ``N @ Dataset(...)``.

    Attributes:
        kind: ``"scene_folder"``, ``"co3d"``, ``"synthetic"`` (pairs rendered per item, in the
            data-loader workers) or ``"synthetic_pool"`` (views rendered on the training device and
            kept in a :class:`~pointmap.train.synthetic.pool.SyntheticViewPool`; must be the only
            train set; ``num_pairs`` is then the epoch length).
        num_pairs: pairs per epoch drawn from this dataset (``None``: all of it, in order).
        root: dataset folder (readers on disk).
        split: split name (``"train"``, ``"test"`` …) where the reader has splits.
        aug_crop: crop jitter in pixels (reference: 16 or 256).
        color_jitter: per-view colour jitter (train sets: on; test sets: off).
        options: reader-specific keyword arguments (e.g. ``{"mask_bg": "rand"}`` for CO3D,
            ``{"max_gap": 3}`` for scene folders, the synthetic engine's config fields, plus the
            ``PoolConfig`` fields for ``synthetic_pool``).
    """

    kind: str
    num_pairs: int | None = None
    root: str | None = None
    split: str = "train"
    aug_crop: int = 0
    color_jitter: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetSpec":
        """Build from a YAML mapping; unknown keys raise ``ValueError``."""
        known = {f for f in cls.__dataclass_fields__}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown dataset spec fields {bad}; known: {sorted(known)}")
        if "kind" not in d:
            raise ValueError(f"dataset spec {d} has no 'kind'")
        return cls(**d)


def build_dataset(spec: DatasetSpec, resolutions: Sequence[Resolution], seed: int = 0,
                  orientation: str = "landscape") -> PairViewDataset:
    """Instantiate the reader of one :class:`DatasetSpec` at the given resolutions."""
    common = dict(resolutions=resolutions, aug_crop=spec.aug_crop, color_jitter=spec.color_jitter,
                  orientation=orientation, seed=seed)
    if spec.kind in ("scene_folder", "co3d"):
        if not spec.root:
            raise DatasetError(f"dataset kind {spec.kind!r} needs a 'root' folder")
        from .datasets import Co3dDataset, SceneFolderDataset

        cls = SceneFolderDataset if spec.kind == "scene_folder" else Co3dDataset
        return cls(spec.root, split=spec.split, **spec.options, **common)
    if spec.kind == "synthetic":
        from .datasets import make_synthetic_dataset

        length = spec.num_pairs or 1000
        opts = dict(spec.options)
        opts.setdefault("resolution", [tuple(r) for r in resolutions])
        opts.setdefault("split", spec.split if spec.split in ("train", "val") else "train")
        base = make_synthetic_dataset(opts, length, seed)
        return ViewDictPairDataset(base, pass_aspect_ratio=True, **common)
    if spec.kind == "synthetic_pool":
        raise ValueError("dataset kind 'synthetic_pool' serves batches on the training device: it can only be "
                         "the single train_data entry (use 'synthetic' for test sets and mixtures)")
    raise ValueError(f"unknown dataset kind {spec.kind!r}: use 'scene_folder', 'co3d', 'synthetic' or "
                     "'synthetic_pool'")


def build_pool(spec: DatasetSpec, resolutions: Sequence[Resolution], seed: int, rank: int, world: int,
               device: torch.device, progress: bool = False) -> Any:
    """The :class:`~pointmap.train.synthetic.pool.SyntheticViewPool` of a ``synthetic_pool`` spec
    (not yet filled: call ``fill()`` or ``load_state_dict()``)."""
    from dataclasses import fields as dc_fields

    from .synthetic import SyntheticConfig
    from .synthetic.pool import PoolConfig, SyntheticViewPool

    pool_keys = {f.name for f in dc_fields(PoolConfig)}
    opts = dict(spec.options)
    pool_opts = {k: opts.pop(k) for k in list(opts) if k in pool_keys}
    opts.setdefault("resolution", tuple(resolutions[0]))
    opts.setdefault("split", spec.split if spec.split in ("train", "val") else "train")
    opts.setdefault("seed", seed)
    try:
        cfg = SyntheticConfig(**opts)
        pcfg = PoolConfig(**pool_opts)
    except TypeError as exc:
        raise DatasetError(f"synthetic_pool options {spec.options}: {exc}") from None
    return SyntheticViewPool(cfg, pcfg, device=device, rank=rank, world=world, seed=seed, progress=progress,
                             fill=False)


def build_mixture(specs: Sequence[DatasetSpec], resolutions: Sequence[Resolution], seed: int = 0,
                  orientation: str = "landscape", mixture_seed: int = 777) -> MixtureDataset:
    """A :class:`MixtureDataset` of :func:`build_dataset` readers."""
    parts = [(build_dataset(s, resolutions, seed, orientation), s.num_pairs) for s in specs]
    return MixtureDataset(parts, seed=mixture_seed)
