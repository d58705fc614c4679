"""Training views: raw views as readers return them, the exact crop/resize, and the final view dict.

A *raw view* (:class:`RawView`) is what a reader returns: a PIL RGB image, a depth map ``(H, W)``
float32 in scene units (0 = invalid), OpenCV intrinsics ``(3, 3)`` (pixel centres at integer
coordinates) and a camera-to-world pose ``(4, 4)``.

A *view* is the dict a dataset item holds (one per image of a pair; an item is ``(view1, view2)``),
made by :func:`finalize_view`::

    img               (3, H, W)  float32 in [-1, 1]
    depthmap          (H, W)     float32, 0 = invalid
    camera_pose       (4, 4)     float32 camera-to-world
    camera_intrinsics (3, 3)     float32
    pts3d             (H, W, 3)  float32 world points unprojected from depth
    valid_mask        (H, W)     bool, depth > 0 and finite
    true_shape        (2,)       int32 (H, W)
    instance, dataset, label     str
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch

from ..errors import DatasetError
from ..geometry import depth_to_world
from .color import ColorJitter

__all__ = [
    "Resolution",
    "RESOLUTIONS_512",
    "RESOLUTIONS_224",
    "resolutions_for",
    "RawView",
    "crop_view",
    "rescale_view",
    "crop_resize",
    "world_points",
    "finalize_view",
    "transpose_to_landscape",
]


Resolution = tuple[int, int]
"""``(W, H)`` in pixels, landscape (``W >= H``)."""

RESOLUTIONS_512: list[Resolution] = [(512, 384), (512, 336), (512, 288), (512, 256), (512, 160)]
RESOLUTIONS_224: list[Resolution] = [(224, 224)]

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


def world_points(depth: np.ndarray, K: np.ndarray, cam2world: np.ndarray) -> np.ndarray:
    """World points ``(H, W, 3)`` float64 of a z-depth map ``(H, W)`` seen with intrinsics ``K``
    ``(3, 3)`` from pose ``cam2world`` ``(4, 4)``: the NumPy face of
    :func:`pointmap.geometry.depth_to_world`."""
    d, k, t = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (depth, K, cam2world))
    return depth_to_world(d, k, t).numpy()


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
    pts = world_points(depth, view.camera_intrinsics, view.camera_pose)
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


