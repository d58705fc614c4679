"""Image loading and the reference DUSt3R preprocessing.

Every loaded image remembers its original size and the resize/crop applied, so results computed at
the network resolution can be mapped back to original pixels (see
:class:`~pointmap.image_meta.ImageMeta`, re-exported here).

Pixel convention used throughout pointmap: pixel centres sit at integer coordinates (OpenCV), so the
pixel ``(u, v)`` covers ``[u - 0.5, u + 0.5] x [v - 0.5, v + 0.5]``.

The module is long because decoding (HEIF, high bit depths, large JPEGs decoded reduced, the pixel
bound) sits next to the reference preprocessing whose exact sizes it must match.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError, install_hint
from .image_meta import ImageMeta
from .workers import map_items

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageMeta",
    "LoadedImage",
    "IMAGE_EXTENSIONS",
    "HEIF_EXTENSIONS",
    "load_images",
    "load_image_arrays",
    "preprocess_image",
    "list_image_files",
    "open_image",
]

PathLike = str | os.PathLike[str]

#: Extensions read from a folder (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: Extensions read only when the optional ``pillow_heif`` package is importable.
HEIF_EXTENSIONS: tuple[str, ...] = (".heic", ".heif")

#: The largest image (width x height, in pixels) the loaders decode unless told otherwise: a guard
#: of memory against decompression bombs. A full decode takes 3 bytes a pixel (0.75 GB at this
#: bound); a 200-megapixel phone photo passes. JPEGs this large are decoded reduced (see
#: :data:`REDUCED_DECODE_ABOVE`) and take far less.
DEFAULT_MAX_PIXELS = 250_000_000

#: JPEGs above this many pixels (Pillow's own default guard, above which the reference refuses or
#: warns) are decoded reduced by 2, 4 or 8 per side in the JPEG decoder itself, to no less than
#: twice the working size, then resized to it; smaller images decode in full, exactly as the
#: reference does.
REDUCED_DECODE_ABOVE = 89_478_485

_SKIP_HINT = "remove it, or skip such images (--skip-bad on the command line, skip_bad=True in Python)"


@dataclass
class LoadedImage:
    """One preprocessed image.

    Attributes:
        img: ``(3, H, W)`` float32 in ``[-1, 1]``.
        true_shape: ``(H, W)``.
        meta: provenance, for mapping back to original pixels.
    """

    img: torch.Tensor
    true_shape: tuple[int, int]
    meta: ImageMeta

    @property
    def rgb(self) -> torch.Tensor:
        """``(H, W, 3)`` float32 colours in ``[0, 1]``."""
        return (self.img.permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1)


# --------------------------------------------------------------------------------------------------
# Decoding: any Pillow image -> 8-bit RGB
# --------------------------------------------------------------------------------------------------

_HEIF_REGISTERED = False


def _heif_available() -> bool:
    """Register the HEIC/HEIF opener of ``pillow_heif`` on first use; ``False`` if not installed."""
    global _HEIF_REGISTERED
    if not _HEIF_REGISTERED:
        try:
            import pillow_heif  # type: ignore[import-not-found]
        except ImportError:
            return False
        pillow_heif.register_heif_opener()
        _HEIF_REGISTERED = True
    return True


def _high_bit_to_uint8(img: Image.Image) -> np.ndarray:
    """``(H, W)`` uint8 from a 16-bit / 32-bit integer or float single-channel image, by scaling.

    ``I;16*`` modes map ``[0, 65535]`` to ``[0, 255]``. Mode ``I`` is read as 8-bit when its values
    fit in ``[0, 255]`` and as 16-bit otherwise; mode ``F`` as ``[0, 1]`` when its values fit there,
    else like ``I``. Pillow's own ``convert("RGB")`` would clip these instead of scaling them.
    """
    arr = np.nan_to_num(np.asarray(img).astype(np.float64))
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if img.mode.startswith("I;16"):
        arr = arr / 257.0
    elif img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        arr = arr * 255.0
    elif not (lo >= 0.0 and hi <= 255.0):
        arr = np.clip(arr, 0.0, 65535.0) / 257.0
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB, as the reference's ``convert('RGB')`` (alpha dropped, palette/CMYK/grey expanded).

    High-bit-depth single-channel images are scaled to 8 bits rather than clipped.
    """
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return Image.fromarray(_high_bit_to_uint8(img), "L").convert("RGB")
    return img.convert("RGB")


_PILLOW_GUARD = threading.Lock()


@contextlib.contextmanager
def open_image(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """``PIL.Image.open`` with pointmap's bound on the pixel count instead of Pillow's own.

    Args:
        path: the image file.
        max_pixels: the most pixels (width x height) accepted; ``None``: no bound.

    Raises:
        ImageLoadError: the image has more than ``max_pixels`` pixels (known from its header,
            before anything is decoded).
    """
    with _PILLOW_GUARD:  # Pillow's guard is a module global: lift it for this open only
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            src = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with src:
        w, h = src.size
        if max_pixels is not None and w * h > max_pixels:
            raise _bomb_error(Path(path), w * h, max_pixels)
        with warnings.catch_warnings():  # a frame or tile above Pillow's guard: warned, not refused
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield src


def _open_rgb(path: Path, size: int | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, tuple[int, int]]:
    """Open ``path``, apply its EXIF orientation and return an 8-bit RGB image (fully loaded) and
    the original ``(W, H)`` after orientation. With ``size``, a JPEG above
    :data:`REDUCED_DECODE_ABOVE` pixels comes back already resized for that preprocessing size."""
    if not path.exists():
        raise ImageLoadError(f"image not found: {path}")
    if path.is_dir():
        raise ImageLoadError(f"{path} is a folder; pass a folder on its own, not inside a list")
    is_heif = path.suffix.lower() in HEIF_EXTENSIONS
    if is_heif and not _heif_available():
        raise ImageLoadError(
            f"cannot read {path}: HEIC/HEIF images need the optional package pillow-heif "
            f"({install_hint('heic')})"
        )
    try:
        with open_image(path, max_pixels) as src:
            if size is not None and src.format == "JPEG" and src.width * src.height > REDUCED_DECODE_ABOVE:
                return _decode_reduced(src, size)
            img = _to_rgb(ImageOps.exif_transpose(src))
            return img, img.size
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise _bomb_error(path, int(m.group(1)) if m else None, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            f"cannot read {path}: not an image format Pillow recognises, or the file is corrupt; {_SKIP_HINT}"
        ) from exc
    except PermissionError as exc:
        raise ImageLoadError(f"cannot read {path}: permission denied") from exc
    except Exception as exc:  # truncated data, broken headers, unsupported modes...
        raise ImageLoadError(
            f"cannot decode {path}: the file is corrupt or truncated ({exc}); {_SKIP_HINT}"
        ) from exc


def _decode_reduced(src: Image.Image, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """A large JPEG decoded at 1/2, 1/4 or 1/8 scale by the decoder (``draft``) to at least twice
    the size :func:`preprocess_image` resizes it to, then resized to exactly that size over the
    region of the reduced image that covers the original; EXIF orientation applied last.
    Returns the image and the original ``(W, H)`` after orientation."""
    turned = src.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations that swap the axes
    W0, H0 = (src.height, src.width) if turned else src.size
    nw, nh = _resized_size(W0, H0, size)
    target = (nh, nw) if turned else (nw, nh)  # in the file's own orientation
    drafted = src.draft(None, (2 * target[0], 2 * target[1]))
    box = drafted[1] if drafted is not None else (0, 0, src.width, src.height)
    small = _to_rgb(src).resize(target, Image.Resampling.LANCZOS, box=box)
    if "exif" in src.info:
        small.info["exif"] = src.info["exif"]
    return ImageOps.exif_transpose(small), (W0, H0)


def _bomb_error(path: Path, pixels: int | None, limit: int | None) -> ImageLoadError:
    count = f"{pixels} pixels" if pixels is not None else "too many pixels"
    return ImageLoadError(
        f"refusing to decode {path}: {count}, above the limit of {limit} pixels (a guard of "
        "memory against decompression bombs); raise it only if you trust the file "
        "(--max-pixels on the command line, max_pixels= in Python)"
    )


# --------------------------------------------------------------------------------------------------
# The reference preprocessing
# --------------------------------------------------------------------------------------------------


def _check_sizes(size: int, patch_size: int) -> None:
    if not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise ImageLoadError(f"patch_size must be a positive integer, got {patch_size!r}")
    if not isinstance(size, (int, np.integer)) or size < patch_size:
        raise ImageLoadError(
            f"image size must be an integer of at least patch_size={patch_size}, got {size!r} "
            "(the released models use 224 or 512)"
        )


def _resized_size(W1: int, H1: int, size: int) -> tuple[int, int]:
    """``(W, H)`` the reference resizes a ``W1 x H1`` image to before its crop: the long side to
    ``size``, or for 224 the short side to 224 (the long side's length rounded first)."""
    L = round(size * max(W1 / H1, H1 / W1)) if size == 224 else size
    S = max(W1, H1)
    return int(round(W1 * L / S)), int(round(H1 * L / S))


def _crop_box(
    W: int, H: int, size: int, square_ok: bool, patch_size: int
) -> tuple[int, int, int, int]:
    """Reference crop of a ``W x H`` resized image: ``(left, top, right, bottom)`` in pixels."""
    cx, cy = W // 2, H // 2
    if size == 224:
        half = min(cx, cy)
        box: tuple[float, ...] = (cx - half, cy - half, cx + half, cy + half)
    else:
        halfw = ((2 * cx) // patch_size) * patch_size / 2
        halfh = ((2 * cy) // patch_size) * patch_size / 2
        if W == H and not square_ok:
            halfh = 3 * halfw / 4
        box = (cx - halfw, cy - halfh, cx + halfw, cy + halfh)
    # Pillow's Image.crop rounds a fractional box with Python's round(); do it up front.
    left, top, right, bottom = (int(round(v)) for v in box)
    return left, top, right, bottom


def preprocess_image(
    img: Image.Image,
    size: int = 512,
    square_ok: bool = False,
    patch_size: int = 16,
    path: str | None = None,
    original_size: tuple[int, int] | None = None,
) -> LoadedImage:
    """Resize, crop and normalise one image exactly as the reference ``load_images`` does.

    Args:
        img: a Pillow image, already EXIF-oriented; converted to RGB if it is not. With
            ``original_size``, it may instead be already resized to the size that preprocessing
            gives an image of ``original_size`` (a large photo decoded reduced).
        size: 224 (short side to 224, then a centre 224x224 crop) or anything else (long side to
            ``size``, then a centre crop to multiples of ``patch_size``; a square becomes 4:3
            landscape unless ``square_ok``).
        square_ok: keep square images square (only for ``size != 224``).
        patch_size: the network's patch size in pixels.
        path: recorded in the returned meta; also used in error messages.
        original_size: ``(W, H)`` of the original image (default: ``img.size``); the resize, the
            crop and ``meta`` follow from it.

    Returns:
        :class:`LoadedImage` with ``img`` ``(3, H, W)`` float32 in ``[-1, 1]`` and ``true_shape``
        ``(H, W)``; ``meta`` records the original size, the resized size and the crop box.

    Raises:
        ImageLoadError: the image is too small or too thin to give a grid of ``patch_size`` patches.
    """
    _check_sizes(size, patch_size)
    name = path if path is not None else "in-memory image"
    if img.mode != "RGB":
        img = _to_rgb(img)
    W1, H1 = original_size if original_size is not None else img.size
    if W1 < 1 or H1 < 1:
        raise ImageLoadError(f"{name} is empty ({W1}x{H1} pixels)")
    if W1 < patch_size or H1 < patch_size:  # upscaled, it would be a blur with no detail to match
        raise ImageLoadError(
            f"{name} ({W1}x{H1} pixels) is too small: less than one {patch_size}-px patch along a side; "
            f"it holds nothing to reconstruct: {_SKIP_HINT}"
        )
    new_size = _resized_size(W1, H1, size)
    if min(new_size) < 1:
        raise _too_small(name, (W1, H1), new_size, patch_size)
    if img.size == new_size and (W1, H1) != new_size:  # decoded reduced, already at this size
        resized = img
    else:
        resample = Image.Resampling.LANCZOS if max(W1, H1) > max(new_size) else Image.Resampling.BICUBIC
        resized = img.resize(new_size, resample)
    box = _crop_box(new_size[0], new_size[1], size, square_ok, patch_size)
    w, h = box[2] - box[0], box[3] - box[1]
    if w < patch_size or h < patch_size:
        raise _too_small(name, (W1, H1), (w, h), patch_size)
    if w % patch_size or h % patch_size:
        raise ImageLoadError(
            f"{name}: size={size} gives a {w}x{h} crop, not a multiple of the {patch_size}-px "
            "patch; "
            f"use square_ok=True or a size that is a multiple of {4 * patch_size}"
        )
    cropped = resized.crop(box)
    # ToTensor (uint8 / 255, CHW) then Normalize(0.5, 0.5), in float32 as the reference does.
    arr = torch.from_numpy(np.asarray(cropped, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    x = (arr.to(torch.float32).div(255) - 0.5) / 0.5
    meta = ImageMeta(path=path, original_size=(W1, H1), resized_size=new_size, crop_box=box)
    return LoadedImage(img=x, true_shape=(h, w), meta=meta)


def _too_small(
    name: str, orig: tuple[int, int], got: tuple[int, int], patch_size: int
) -> ImageLoadError:
    return ImageLoadError(
        f"{name} ({orig[0]}x{orig[1]} pixels) is too small or too elongated: preprocessing gives "
        f"{got[0]}x{got[1]} pixels, less than one {patch_size}-px patch along a side"
    )


# --------------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------------


def list_image_files(folder: PathLike) -> list[Path]:
    """Image files of ``folder``, sorted by name (Python string order), as the reference does.

    Only regular files whose extension is in :data:`IMAGE_EXTENSIONS` (or :data:`HEIF_EXTENSIONS`
    when ``pillow_heif`` is installed) are kept; hidden files (``.name``) and anything else are
    ignored. HEIC/HEIF files skipped for lack of ``pillow_heif`` are reported with a warning.
    """
    folder = Path(folder)
    exts = IMAGE_EXTENSIONS + (HEIF_EXTENSIONS if _heif_available() else ())
    files, heif_skipped = [], []
    for name in sorted(os.listdir(folder)):
        p = folder / name
        if name.startswith(".") or not p.is_file():
            continue
        ext = p.suffix.lower()
        if ext in exts:
            files.append(p)
        elif ext in HEIF_EXTENSIONS:
            heif_skipped.append(name)
    if heif_skipped:
        shown = ", ".join(heif_skipped[:5]) + (", ..." if len(heif_skipped) > 5 else "")
        log.warning(
            f"{folder}: skipping {len(heif_skipped)} HEIC/HEIF file(s) ({shown}); "
            "install pillow-heif "
            f"({install_hint('heic')}) to read them"
        )
    return files


def _resolve(paths_or_folder: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(paths_or_folder, (str, os.PathLike)):
        p = Path(paths_or_folder)
        if p.is_dir():
            files = list_image_files(p)
            if not files:
                raise ImageLoadError(
                    f"no images found in folder {p} (accepted extensions: "
                    f"{', '.join(IMAGE_EXTENSIONS + HEIF_EXTENSIONS)}; HEIC/HEIF need pillow-heif)"
                )
            return files
        if not p.exists():
            raise ImageLoadError(f"image or folder not found: {p}")
        return [p]
    paths = [Path(p) for p in paths_or_folder]
    if not paths:
        raise ImageLoadError("no images given: the list of image paths is empty")
    return paths


def load_images(
    paths_or_folder: PathLike | Sequence[PathLike],
    size: int = 512,
    square_ok: bool = False,
    patch_size: int = 16,
    skip_bad: bool = False,
    verbose: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[LoadedImage]:
    """Load images and preprocess them exactly as the reference DUSt3R ``load_images``.

    For each image: EXIF orientation, conversion to 8-bit RGB (alpha dropped; 16-bit grey scaled
    to 8 bits), resize (Python ``round`` of the new size, LANCZOS when shrinking, BICUBIC when
    enlarging), centre crop (see :func:`preprocess_image`), normalisation to ``[-1, 1]``.

    Args:
        paths_or_folder: one image path, a list of image paths (kept in the given order), or a
            folder (its image files sorted by name; other files are ignored).
        size: 224 or 512 for the released models (see :func:`preprocess_image`).
        square_ok: keep square images square instead of cropping them to 4:3.
        patch_size: the network's patch size in pixels.
        skip_bad: skip unreadable files with a warning naming each, instead of raising.
        verbose: print one line per image (original and network size).
        max_pixels: the largest image accepted, in pixels (width x height; ``None``: no bound);
            known from the header, before decoding. JPEGs above :data:`REDUCED_DECODE_ABOVE`
            pixels are decoded reduced towards the working size; ``meta`` keeps their original
            size, so every export is in original pixels.

    Returns:
        One :class:`LoadedImage` per image: ``img`` ``(3, H, W)`` float32 in ``[-1, 1]``,
        ``true_shape`` ``(H, W)``, ``meta`` to map results back to original pixels.

    Raises:
        ImageLoadError: a path is missing, not an image, corrupt, too large (decompression-bomb
            guard) or too small; a folder holds no images; or (with ``skip_bad``) nothing loaded.
    """
    _check_sizes(size, patch_size)
    paths = _resolve(paths_or_folder)
    if verbose:
        print(f">> Loading {len(paths)} image(s) at size {size}")
    def load(k: int) -> LoadedImage | ImageLoadError:
        try:
            img, original = _open_rgb(paths[k], size, max_pixels)
            return preprocess_image(img, size, square_ok, patch_size, path=str(paths[k]), original_size=original)
        except ImageLoadError as exc:
            if not skip_bad:
                raise
            return exc

    out: list[LoadedImage] = []
    for path, item in zip(paths, map_items(load, len(paths))):  # decoded side by side, kept in order
        if isinstance(item, ImageLoadError):
            log.warning(f"skipping {path}: {item}")
            continue
        if verbose:
            W1, H1 = item.meta.original_size
            print(f" - {path}: {W1}x{H1} -> {item.true_shape[1]}x{item.true_shape[0]}")
        out.append(item)
    if not out:
        raise ImageLoadError(
            f"none of the {len(paths)} image(s) could be loaded (all were skipped)"
        )
    return out


def _array_to_pil(a: np.ndarray, k: int) -> Image.Image:
    """``(H, W)`` or ``(H, W, 1|3|4)`` array (uint8, uint16, float in ``[0, 1]``) to Pillow."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageLoadError(
            f"array #{k} has shape {a.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.uint16:
        u8 = np.round(a / 257.0).astype(np.uint8)
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        u8 = np.clip(np.round(np.nan_to_num(a.astype(np.float64)) * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ImageLoadError(
            f"array #{k} has dtype {a.dtype}; expected uint8, uint16 or float in [0, 1]"
        )
    return Image.fromarray(np.ascontiguousarray(u8))


def load_image_arrays(
    arrays: Sequence[np.ndarray | Image.Image],
    size: int = 512,
    square_ok: bool = False,
    patch_size: int = 16,
) -> list[LoadedImage]:
    """Preprocess in-memory images like :func:`load_images` (``meta.path`` is ``None``).

    Args:
        arrays: Pillow images (EXIF orientation applied) or arrays ``(H, W)`` / ``(H, W, C)`` with
            ``C`` in 1, 3, 4 (alpha dropped), of dtype uint8, uint16 (scaled by 1/257) or float in
            ``[0, 1]``; RGB channel order.
        size, square_ok, patch_size: as in :func:`load_images`.

    Returns:
        One :class:`LoadedImage` per input, in order.
    """
    _check_sizes(size, patch_size)
    if len(arrays) == 0:
        raise ImageLoadError("no images given: the list of arrays is empty")
    out = []
    for k, a in enumerate(arrays):
        if isinstance(a, Image.Image):
            pil = _to_rgb(ImageOps.exif_transpose(a))
        elif isinstance(a, np.ndarray):
            pil = _array_to_pil(a, k)
        elif isinstance(a, torch.Tensor):
            raise ImageLoadError(
                f"item #{k} is a torch.Tensor; pass a NumPy array (H, W, 3) or a PIL image"
            )
        else:
            raise ImageLoadError(
                f"item #{k} has type {type(a).__name__}; expected a NumPy array or PIL image"
            )
        out.append(preprocess_image(pil, size, square_ok, patch_size, path=None))
    return out
