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
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..arrays import to_numpy
from ..workers import MAX_WORKERS, map_items as map_images, one_torch_thread, workers_for as export_workers
from ..errors import PointmapError
from ..io_utils import atomic_write
from ..geometry.camera import depth_to_world, opencv_opengl_flip, pixels_to_world
from ..images import open_image
from ..scene import Scene

__all__ = [
    "CAM_PALETTE",
    "OPENCV_TO_OPENGL",
    "MAX_WORKERS",
    "copy_image",
    "export_workers",
    "image_colours",
    "image_file_names",
    "image_mask",
    "image_points",
    "is_metric",
    "map_images",
    "one_torch_thread",
    "masked_points",
    "original_pixels",
    "point_budget",
    "original_colours",
    "original_intrinsics",
    "original_size",
    "rgb_uint8",
    "sampled_pixels",
    "scene_masks",
    "single_image_scene",
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


def image_mask(scene: Scene, k: int, mask: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` bool validity of image ``k``: ``scene.masks[k]`` (or ``mask`` when given),
    and-ed with ``scene.placed[k]`` and with finite, positive depth."""
    d = to_numpy(scene.depths[k], np.float64)
    m = to_numpy(scene.masks[k] if mask is None else mask).astype(bool)
    if m.shape != d.shape:
        raise PointmapError(f"mask {k} has shape {m.shape} but image {k} has depth shape {d.shape}")
    return m & np.isfinite(d) & (d > 0) & bool(scene.placed[k])


def scene_masks(
    scene: Scene, mask: Sequence[torch.Tensor | np.ndarray] | None = None, workers: int | None = 1
) -> list[np.ndarray]:
    """Per image :func:`image_mask` (``mask[k]`` instead of ``scene.masks[k]`` when given), on
    ``workers`` threads (:func:`map_images`)."""
    if mask is not None and len(mask) != len(scene):
        raise PointmapError(f"mask has {len(mask)} entries for a scene of {len(scene)} images")
    return map_images(lambda k: image_mask(scene, k, None if mask is None else mask[k]), len(scene), workers)


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


def image_points(scene: Scene, k: int, idx: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 3)`` float64 world points of image ``k`` (one image at a time: exporters never
    hold every image's points at once); with ``idx`` ``(P,)`` flat (row-major) pixel indices,
    ``(P, 3)`` the points of those pixels alone, the same values."""
    depth, K, pose = scene.depths[k].double(), scene.intrinsics[k].double(), scene.poses[k].double()
    if idx is None:
        return to_numpy(depth_to_world(depth, K, pose))
    W = depth.shape[1]
    flat = torch.from_numpy(np.asarray(idx, np.int64))
    uv = torch.stack([flat % W, flat // W], -1).to(depth)
    return to_numpy(pixels_to_world(uv, depth.reshape(-1)[flat], K, pose))


def image_colours(scene: Scene, k: int, idx: np.ndarray) -> np.ndarray:
    """``(P, 3)`` uint8 RGB (:func:`rgb_uint8`) of image ``k`` at flat pixel indices ``idx`` ``(P,)``."""
    return rgb_uint8(to_numpy(scene.imgs[k]).reshape(-1, 3)[idx])


def masked_points(
    scene: Scene,
    mask: Sequence[torch.Tensor | np.ndarray] | None = None,
    max_points: int | None = None,
    seed: int = 0,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valid world points of all images, concatenated in image then row-major pixel order.

    Args:
        max_points: keep at most this many, sampled at random (seeded) from every image in
            proportion to its valid points (:func:`point_budget`); ``None`` keeps all.
        workers: threads for the per-image work (:func:`map_images`; the result does not depend
            on it).

    Returns:
        points ``(M, 3)`` float64 world coordinates (scene units), colours ``(M, 3)`` uint8 RGB,
        confidence ``(M,)`` float32 raw confidence.
    """
    masks = scene_masks(scene, mask, workers)
    budget = point_budget(masks, max_points)

    def one(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if budget[k] == 0 or not masks[k].any():
            return None
        idx = sampled_pixels(masks[k], budget[k], seed + k)
        return (image_points(scene, k, idx), image_colours(scene, k, idx),
                to_numpy(scene.confidence[k], np.float32).reshape(-1)[idx])

    parts = [p for p in map_images(one, len(scene), workers) if p is not None]
    if not parts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros((0,), np.float32)
    return tuple(np.concatenate(a) for a in zip(*parts))  # type: ignore[return-value]


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


def single_image_scene(scene: Scene, k: int) -> Scene:
    """Image ``k`` of ``scene`` alone (the same tensors, its pose, meta, placement and units), e.g.
    for :meth:`Scene.to_original` on one image at a time."""
    return Scene(
        imgs=[scene.imgs[k]], poses=scene.poses[k : k + 1], intrinsics=scene.intrinsics[k : k + 1],
        depths=[scene.depths[k]], confidence=[scene.confidence[k]], masks=[scene.masks[k]],
        conf_threshold=scene.conf_threshold, placed=scene.placed[k : k + 1], metas=[scene.metas[k]],
        names=[scene.names[k]], units=scene.units,
    )


def original_colours(scene: Scene, k: int) -> torch.Tensor:
    """``(H0, W0, 3)`` colours of image ``k`` resampled onto its original pixel grid (nearest), via
    :meth:`Scene.to_original` on that image alone."""
    return single_image_scene(scene, k).to_original().imgs[0]


def copy_image(
    src: Path | None, dst: Path, fallback: torch.Tensor | np.ndarray | None = None
) -> None:
    """Copy an image file to ``dst`` atomically, baking in any EXIF orientation (so the copy's
    pixel grid is the one pointmap worked on; without one, the file's bytes, nothing decoded);
    without ``src``, write ``fallback`` ``(H, W, 3)`` float colours in ``[0, 1]`` as PNG."""
    if src is None:
        if fallback is None:
            raise PointmapError(f"no source image for {dst.name}")
        with atomic_write(dst) as f:
            Image.fromarray(rgb_uint8(fallback)).save(f, format="PNG", compress_level=1)
        return
    if not src.is_file():
        raise PointmapError(f"source image {src} not found; pass image_paths= with its location")
    with open_image(src, max_pixels=None) as im:  # checked against the bound when it was loaded
        orientation = _exif_orientation(im, src)
        if orientation in (None, 1):
            with open(src, "rb") as fin, atomic_write(dst) as fout:
                shutil.copyfileobj(fin, fout)
            return
        fmt = im.format or "PNG"
        upright = ImageOps.exif_transpose(im)
        with atomic_write(dst) as f:
            upright.save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _exif_orientation(im: Image.Image, src: Path) -> int | None:
    """The EXIF orientation of the opened image ``im`` of the file ``src``, as ``im.getexif()``
    reads it. Pillow decodes a whole PNG to look for metadata after its pixel data: a PNG with
    nothing but pixel data there (:func:`_png_chunks_after_pixels`) is not decoded, the metadata
    read when it was opened being all it has."""
    if im.format == "PNG" and not _png_chunks_after_pixels(src):
        return Image.Image.getexif(im).get(0x0112, 1)
    return im.getexif().get(0x0112, 1)


def _png_chunks_after_pixels(path: Path) -> bool:
    """Whether the PNG file ``path`` has a chunk other than ``IDAT`` between its first ``IDAT``
    and its ``IEND`` (or is not walked to ``IEND``): reads the chunk headers only."""
    with open(path, "rb") as f:
        f.seek(8)  # the PNG signature
        in_pixels = False
        while len(head := f.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                return False
            if kind == b"IDAT":
                in_pixels = True
            elif in_pixels:
                return True
            f.seek(length + 4, os.SEEK_CUR)  # the chunk's data and CRC
    return True
