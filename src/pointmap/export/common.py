"""Helpers shared by the exporters: masked points, file names, image copies, the length unit.

Frames used by the exporters (see :mod:`pointmap.scene`): world points and ``cam2world`` poses in
OpenCV camera axes (x right, y down, z forward); pixel centres at integer coordinates.

Units: every export says what its lengths are, from ``Scene.units``: metres when the network is
metric (MASt3R) and the scene kept its scale, else arbitrary scene units (never called metres).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..arrays import to_numpy
from ..errors import PointmapError
from ..io_utils import atomic_write
from ..geometry.camera import depth_to_world, opencv_opengl_flip
from ..images import open_image
from ..scene import Scene

__all__ = [
    "CAM_PALETTE",
    "OPENCV_TO_OPENGL",
    "copy_image",
    "image_file_names",
    "image_points",
    "is_metric",
    "masked_points",
    "original_pixels",
    "point_budget",
    "original_colours",
    "original_intrinsics",
    "original_size",
    "rgb_uint8",
    "sampled_pixels",
    "scene_masks",
    "source_image_path",
    "units_fields",
    "units_note",
    "warn_dropped_skew",
]

log = logging.getLogger(__name__)

#: Flips the y and z camera axes: OpenCV (x right, y down, z forward) <-> OpenGL (x right, y up,
#: z back). ``cam2world_gl = cam2world_cv @ OPENCV_TO_OPENGL``; it is its own inverse. The matrix
#: of :func:`pointmap.geometry.camera.opencv_opengl_flip`, for products with other transforms.
OPENCV_TO_OPENGL = opencv_opengl_flip(np.eye(4))

#: Camera colours (RGB, uint8) cycled over the views, as in the reference demo.
CAM_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (255, 204, 0), (0, 204, 204),
    (128, 255, 255), (255, 128, 255), (255, 255, 128), (0, 0, 0), (128, 128, 128),
)


def warn_dropped_skew(Ks: np.ndarray, fmt: str) -> None:
    """Log one warning when intrinsics ``(N, 3, 3)`` have a skew ``K[0, 1]`` that the format
    ``fmt`` cannot hold (its cameras are written without it): never dropped silently."""
    skewed = int((np.abs(Ks[:, 0, 1]) > 1e-9 * np.abs(Ks[:, 0, 0])).sum()) if len(Ks) else 0
    if skewed:
        log.warning("%s cannot hold a camera's skew: %d of %d cameras are written without it",
                    fmt, skewed, len(Ks))


def is_metric(scene: Scene) -> bool:
    """Whether the lengths of ``scene`` (depths, translations, points) are metres."""
    return scene.units == "metres"


def units_note(scene: Scene) -> str:
    """One line (ASCII) stating the length unit of ``scene``, for the comments of the exports
    (PLY header, COLMAP text headers): metres for a metric scene, else arbitrary units; a scene
    that is not metric is never said to be in metres."""
    if is_metric(scene):
        return "units: metres (metric scale predicted by the network)"
    return "units: arbitrary scene units (the scale is unknown; not metric)"


def units_fields(scene: Scene) -> dict[str, object]:
    """The JSON fields stating the length unit of ``scene``: ``{"units": scene.units ("metres" or
    "scene"), "metric": bool, "units_note": units_note(scene)}``."""
    return {"units": scene.units, "metric": is_metric(scene), "units_note": units_note(scene)}


def original_pixels(scene: Scene, k: int, uv: np.ndarray | torch.Tensor) -> np.ndarray:
    """Network pixel coordinates ``(P, 2)`` ``(x, y)`` of image ``k`` to original ones, float64
    (pointmap convention, pixel centres at integers); unchanged for an image without a meta."""
    meta = scene.metas[k]
    uv = to_numpy(uv, np.float64)
    if meta is None:
        return uv
    # the map is affine per axis: read it off two points, apply it in numpy (fast for many points)
    ref = meta.to_original_pixels(torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)).numpy()
    return ref[0] + uv * (ref[1] - ref[0])


def scene_masks(
    scene: Scene, mask: Sequence[torch.Tensor | np.ndarray] | None = None
) -> list[np.ndarray]:
    """Per image ``(H, W)`` bool validity: ``scene.masks`` (or ``mask`` when given), and-ed with
    ``scene.placed`` and with finite, positive depth."""
    src = scene.masks if mask is None else mask
    if len(src) != len(scene):
        raise PointmapError(f"mask has {len(src)} entries for a scene of {len(scene)} images")
    out = []
    for k in range(len(scene)):
        d = to_numpy(scene.depths[k], np.float64)
        m = to_numpy(src[k]).astype(bool)
        if m.shape != d.shape:
            raise PointmapError(
                f"mask {k} has shape {m.shape} but image {k} has depth shape {d.shape}"
            )
        out.append(m & np.isfinite(d) & (d > 0) & bool(scene.placed[k]))
    return out


def point_budget(masks: Sequence[np.ndarray], max_points: int | None) -> list[int | None]:
    """How many of each image's valid points to keep so that all images together keep at most
    ``max_points`` (``None``: all), in proportion to their valid counts (largest remainders
    first)."""
    counts = np.array([int(m.sum()) for m in masks], dtype=np.int64)
    total = int(counts.sum())
    if max_points is None or total <= max_points:
        return [None] * len(masks)
    share = counts * (max_points / total)
    keep = np.floor(share).astype(np.int64)
    extra = int(max_points - keep.sum())
    if extra > 0:
        keep[np.argsort(-(share - keep), kind="stable")[:extra]] += 1
    return [int(k) for k in np.minimum(keep, counts)]


def sampled_pixels(mask: np.ndarray, keep: int | None, seed: int) -> np.ndarray:
    """Flat (row-major) indices of ``mask``'s true pixels: all of them, or a random ``keep`` of
    them (seeded, in pixel order)."""
    idx = np.flatnonzero(mask.reshape(-1))
    if keep is not None and keep < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, keep, replace=False))
    return idx


def image_points(scene: Scene, k: int) -> np.ndarray:
    """``(H, W, 3)`` float64 world points of image ``k`` (one image at a time: exporters never
    hold every image's points at once)."""
    return to_numpy(depth_to_world(scene.depths[k].double(), scene.intrinsics[k].double(),
                                   scene.poses[k].double()))


def masked_points(
    scene: Scene,
    mask: Sequence[torch.Tensor | np.ndarray] | None = None,
    max_points: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valid world points of all images, concatenated in image then row-major pixel order.

    Args:
        max_points: keep at most this many, sampled at random (seeded) from every image in
            proportion to its valid points (:func:`point_budget`); ``None`` keeps all.

    Returns:
        points ``(M, 3)`` float64 world coordinates (scene units), colours ``(M, 3)`` uint8 RGB,
        confidence ``(M,)`` float32 raw confidence.
    """
    masks = scene_masks(scene, mask)
    budget = point_budget(masks, max_points)
    pts, cols, confs = [], [], []
    for k, m in enumerate(masks):
        if budget[k] == 0 or not m.any():
            continue
        idx = sampled_pixels(m, budget[k], seed + k)
        pts.append(image_points(scene, k).reshape(-1, 3)[idx])
        cols.append(rgb_uint8(scene.imgs[k]).reshape(-1, 3)[idx])
        confs.append(to_numpy(scene.confidence[k], np.float32).reshape(-1)[idx])
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros((0,), np.float32)
    return np.concatenate(pts), np.concatenate(cols), np.concatenate(confs)


def rgb_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float colours in ``[0, 1]`` to uint8 RGB."""
    return (np.clip(to_numpy(img, np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def source_image_path(
    scene: Scene, k: int, image_paths: Sequence[str | os.PathLike | None] | None = None
) -> Path | None:
    """The original file of image ``k``: ``image_paths[k]`` if given, else ``metas[k].path`` when
    that file exists (frames decoded from a video have a name but no file)."""
    if image_paths is not None:
        if len(image_paths) != len(scene):
            raise PointmapError(
                f"image_paths has {len(image_paths)} entries for a scene of {len(scene)} images"
            )
        if image_paths[k] is not None:
            return Path(image_paths[k])
    meta = scene.metas[k]
    if meta is None or not meta.path or not Path(meta.path).is_file():
        return None
    return Path(meta.path)


def image_file_names(
    scene: Scene, image_paths: Sequence[str | os.PathLike | None] | None = None
) -> list[str]:
    """Unique file names for the images of ``scene``: the source file's name when known, else
    ``<scene name>.png``; a repeated name gets ``_<index>`` appended to its stem."""
    names: list[str] = []
    seen: set[str] = set()
    for k in range(len(scene)):
        src = source_image_path(scene, k, image_paths)
        name = src.name if src is not None else f"{Path(scene.names[k]).name}.png"
        if name.lower() in seen:
            stem, ext = os.path.splitext(name)
            name = f"{stem}_{k:04d}{ext}"
        seen.add(name.lower())
        names.append(name)
    return names


def original_size(scene: Scene, k: int) -> tuple[int, int]:
    """``(W, H)`` of image ``k`` at original resolution (network resolution without a meta)."""
    meta = scene.metas[k]
    if meta is not None:
        return int(meta.original_size[0]), int(meta.original_size[1])
    H, W = scene.depths[k].shape
    return int(W), int(H)


def original_intrinsics(scene: Scene) -> np.ndarray:
    """``(N, 3, 3)`` float64 intrinsics at original resolution, as :meth:`Scene.to_original` computes
    them (network intrinsics for images without a meta), without resampling any map."""
    out = []
    for k in range(len(scene)):
        K = scene.intrinsics[k].detach().cpu().double()
        meta = scene.metas[k]
        out.append((meta.intrinsics_to_original(K) if meta is not None else K).numpy())
    return np.stack(out) if out else np.zeros((0, 3, 3))


def original_colours(scene: Scene, k: int) -> torch.Tensor:
    """``(H0, W0, 3)`` colours of image ``k`` resampled onto its original pixel grid (nearest), via
    :meth:`Scene.to_original` on that image alone."""
    one = Scene(
        imgs=[scene.imgs[k]], poses=scene.poses[k : k + 1], intrinsics=scene.intrinsics[k : k + 1],
        depths=[scene.depths[k]], confidence=[scene.confidence[k]], masks=[scene.masks[k]],
        metas=[scene.metas[k]], names=[scene.names[k]],
    )
    return one.to_original().imgs[0]


def copy_image(
    src: Path | None, dst: Path, fallback: torch.Tensor | np.ndarray | None = None
) -> None:
    """Copy an image file to ``dst`` atomically, baking in any EXIF orientation (so the copy's
    pixel grid is the one pointmap worked on); without ``src``, write ``fallback`` ``(H, W, 3)``
    float colours in ``[0, 1]`` as PNG."""
    if src is None:
        if fallback is None:
            raise PointmapError(f"no source image for {dst.name}")
        with atomic_write(dst) as f:
            Image.fromarray(rgb_uint8(fallback)).save(f, format="PNG", compress_level=1)
        return
    if not src.is_file():
        raise PointmapError(f"source image {src} not found; pass image_paths= with its location")
    with open_image(src, max_pixels=None) as im:  # checked against the bound when it was loaded
        orientation = im.getexif().get(0x0112, 1)
        if orientation in (None, 1):
            with open(src, "rb") as fin, atomic_write(dst) as fout:
                shutil.copyfileobj(fin, fout)
            return
        fmt = im.format or "PNG"
        upright = ImageOps.exif_transpose(im)
        with atomic_write(dst) as f:
            upright.save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
