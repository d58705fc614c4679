"""Per-image depth and confidence maps: 16-bit PNG, ``.npy`` and colour-mapped previews.

Files per image (``<stem>`` from the image file name), in one folder:

* ``<stem>_depth.png``: uint16, ``png = round(depth * scale)``, ``0`` = invalid (masked out / no
  data). ``scale = 65535 / max valid depth`` per image, stored in the PNG ``tEXt`` chunk
  ``depth_scale`` and in ``depth.json``; decode with :func:`read_depth_png`. Quantisation error is at
  most ``0.5 / scale`` scene units. Every PNG here is compressed at zlib level 1 (speed over size).
* ``<stem>_depth.npy``: float32 ``(H, W)`` z-depth in scene units (unmasked).
* ``<stem>_conf.npy``: float32 ``(H, W)`` the scene's confidence: the network's raw confidence
  ``1 + exp(x)`` (always > 1), except ``0`` where a clean-up removed the point (the occlusion
  clean-up, ``--no-clean`` turns it off, or sky masking). ``<stem>_mask.png``: uint8 0/255 validity
  (points kept: confidence above the threshold, placed image, valid depth).
* ``<stem>_depth_preview.png`` and ``<stem>_conf_preview.png``: RGB previews with OpenCV's turbo
  colour map, normalised between the 2nd and 98th percentiles of the valid pixels (near = red, far =
  blue; confidence on a log scale, high = red); invalid pixels are black.
* ``depth.json``: the sidecar with every image's files, size and scale, and the length unit of the
  depths (``"units"``: ``"metres"`` for a metric scene, else ``"scene"``, arbitrary; ``"metric"``;
  ``"units_note"``); the PNG ``tEXt`` chunk ``depth_unit`` holds the same ``"units"`` value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from ..arrays import to_numpy
from ..errors import PointmapError
from ..io_utils import atomic_write, write_json
from ..scene import Scene
from .common import image_file_names, image_mask, map_images, single_image_scene, units_fields

__all__ = [
    "CONF_NOTE", "SIDE_CAR", "colorize", "depth_scale_for", "export_depth", "read_depth_maps",
    "read_depth_png", "read_depth_sidecar",
]

SIDE_CAR = "depth.json"
CONF_NOTE = ("conf_npy holds the raw network confidence 1 + exp(x) (always > 1); 0 marks a point "
             "that a clean-up removed (occlusion clean-up or sky masking)")
"""What ``depth.json`` says about the values of ``<stem>_conf.npy``."""
_U16_MAX = 65535


def depth_scale_for(depth: np.ndarray, valid: np.ndarray) -> float:
    """Scale (PNG units per scene unit) so the largest valid depth maps to 65535 (1.0 if none)."""
    d = depth[valid]
    dmax = float(d.max()) if d.size else 0.0
    return _U16_MAX / dmax if dmax > 0 and np.isfinite(dmax) else 1.0


def colorize(values: np.ndarray, valid: np.ndarray, invert: bool = False,
             percentiles: tuple[float, float] = (2.0, 98.0)) -> np.ndarray:
    """Map ``(H, W)`` values to ``(H, W, 3)`` uint8 RGB with the turbo colour map.

    Values are normalised between the given percentiles of the valid pixels (robust to outliers);
    ``invert`` flips the map (low values red); invalid pixels are black.
    """
    out = np.zeros((*values.shape, 3), np.uint8)
    v = values[valid]
    if v.size == 0:
        return out
    lo, hi = np.percentile(v, percentiles)
    t = np.clip((v - lo) / (hi - lo) if hi > lo else np.full(v.shape, 0.5), 0, 1)
    if invert:
        t = 1.0 - t
    out[valid] = _TURBO_RGB[np.round(t * 255).astype(np.uint8)]
    return out


_TURBO_RGB = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1].copy()
"""``(256, 3)`` uint8 RGB of OpenCV's turbo colour map, by its 8-bit input (the map is this table)."""


_FAST = 1
"""zlib level of every PNG written here (depth, masks, previews): level 1 encodes the 16-bit depth
about four times faster than Pillow's default 6 for files about 10% larger; the pixels read back
are the same at any level."""


def _save_png(path: Path, arr: np.ndarray, text: dict[str, str] | None = None) -> None:
    info = PngImagePlugin.PngInfo()
    for key, val in (text or {}).items():
        info.add_text(key, val)
    with atomic_write(path) as f:
        Image.fromarray(arr).save(f, format="PNG", pnginfo=info, compress_level=_FAST)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, arr)


def read_depth_png(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a ``*_depth.png``: ``(H, W)`` float32 depth in scene units (0 = invalid) and its scale."""
    with Image.open(path) as im:
        scale = im.text.get("depth_scale") if hasattr(im, "text") else None
        if scale is None:
            raise PointmapError(f"{path} has no depth_scale text chunk; not a pointmap depth PNG")
        raw = np.array(im).astype(np.float64)
    return (raw / float(scale)).astype(np.float32), float(scale)


def read_depth_sidecar(folder: str | os.PathLike) -> dict[str, Any]:
    """Read the ``depth.json`` of a folder :func:`export_depth` wrote (see the module docstring).

    Raises:
        PointmapError: no readable sidecar, or one without an ``images`` object.
    """
    path = Path(folder) / SIDE_CAR
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PointmapError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise PointmapError(f"{path} is not a pointmap depth.json (no 'images' object)")
    return data


def read_depth_maps(folder: str | os.PathLike, entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(depth (H, W), confidence (H, W))`` float32 of one image of ``depth.json`` (an entry of its
    ``images``): the ``<stem>_depth.npy`` and ``<stem>_conf.npy`` files.

    Raises:
        PointmapError: a file is missing or unreadable, or the two shapes differ.
    """
    folder = Path(folder)
    maps = []
    for key in ("depth_npy", "conf_npy"):
        path = folder / str(entry.get(key))
        try:
            maps.append(np.load(path, allow_pickle=False).astype(np.float32))
        except (OSError, ValueError) as exc:
            raise PointmapError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if maps[0].ndim != 2 or maps[0].shape != maps[1].shape:
        raise PointmapError(f"{folder / str(entry.get('depth_npy'))} and its confidence are not two "
                            "maps of one (H, W) shape")
    return maps[0], maps[1]


def _stems(names: Sequence[str]) -> list[str]:
    stems, seen = [], set()
    for k, name in enumerate(names):
        stem = Path(name).stem
        if stem.lower() in seen:
            stem = f"{stem}_{k:04d}"
        seen.add(stem.lower())
        stems.append(stem)
    return stems


def _write_image_maps(
    scene: Scene, k: int, folder: Path, stem: str, original: bool, masked: bool, previews: bool, write: bool = True,
) -> dict:
    """Write the files of image ``k`` (module docstring; none unless ``write``); its ``depth.json`` entry."""
    src = single_image_scene(scene, k).to_original() if original else single_image_scene(scene, k)
    depth = to_numpy(src.depths[0], np.float32)
    conf = to_numpy(src.confidence[0], np.float32)
    valid = image_mask(src, 0)
    png_valid = valid if masked else (np.isfinite(depth) & (depth > 0))
    scale = depth_scale_for(depth.astype(np.float64), png_valid)
    q = np.where(png_valid, np.round(depth.astype(np.float64) * scale), 0)
    q = np.clip(q, 0, _U16_MAX).astype(np.uint16)
    files = {
        "depth_png": f"{stem}_depth.png", "depth_npy": f"{stem}_depth.npy",
        "conf_npy": f"{stem}_conf.npy", "mask_png": f"{stem}_mask.png",
    }
    if previews:
        files["depth_preview"] = f"{stem}_depth_preview.png"
        files["conf_preview"] = f"{stem}_conf_preview.png"
    entry = {"name": scene.names[k], **files, "scale": scale, "width": int(depth.shape[1]),
             "height": int(depth.shape[0]), "placed": bool(scene.placed[k])}
    if not write:
        return entry
    _save_png(folder / files["depth_png"], q, {"depth_scale": repr(scale), "depth_unit": scene.units})
    _save_npy(folder / files["depth_npy"], depth)
    _save_npy(folder / files["conf_npy"], conf)
    _save_png(folder / files["mask_png"], valid.astype(np.uint8) * 255)
    if previews:
        _save_png(folder / files["depth_preview"], colorize(depth, valid, invert=True))
        logc = np.log(np.maximum(conf, 1e-12))
        _save_png(folder / files["conf_preview"], colorize(logc, np.isfinite(logc) & (conf > 0)))
    return entry


def export_depth(
    scene: Scene,
    folder: str | os.PathLike,
    resolution: Literal["network", "original"] = "network",
    masked: bool = True,
    previews: bool = True,
    image_names: Sequence[str] | None = None,
    workers: int | None = None,
    done: Callable[[], None] | None = None,
    skip: Collection[int] = (),
) -> Path:
    """Write depth/confidence maps of every image into ``folder`` (see the module docstring).

    Args:
        scene: the reconstruction.
        folder: output folder (created if needed).
        resolution: ``"network"`` (exact network maps) or ``"original"`` (nearest-resampled onto
            the original pixel grid with :meth:`Scene.to_original`, zero outside the crop; one
            image at a time).
        masked: write ``0`` in the depth PNG where the mask is ``False``.
        previews: also write the colour-mapped previews.
        image_names: file names of the images (default :func:`image_file_names`).
        workers: threads writing the images' files
            (:func:`~pointmap.export.common.map_images`; the files do not depend on it).
        done: called once per image written (a progress bar).
        skip: images whose files are not written (the folder's caller has them already); their
            entries of ``depth.json`` are.

    Returns:
        the path of the ``depth.json`` sidecar.
    """
    if resolution not in ("network", "original"):
        raise PointmapError(f"resolution must be 'network' or 'original', got {resolution!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stems = _stems(image_names if image_names is not None else image_file_names(scene))
    entries = map_images(
        lambda k: _write_image_maps(scene, k, folder, stems[k], resolution == "original", masked, previews,
                                    k not in skip),
        len(scene), workers, done)
    sidecar = {
        "encoding": "depth = depth_png / scale (scene units, z-depth); depth_png == 0 means invalid",
        "resolution": resolution,
        "confidence": CONF_NOTE,
        "conf_threshold": float(scene.conf_threshold),
        **units_fields(scene),
        "images": dict(zip(stems, entries)),
    }
    path = folder / SIDE_CAR
    write_json(path, sidecar)
    return path
