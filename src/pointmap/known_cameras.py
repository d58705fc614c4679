"""Known cameras and masks from files, matched to the loaded images by file name.

Camera files read by :func:`read_cameras` (a file, or a folder holding one of them):

* pointmap's own ``cameras.json`` (``K_original`` and ``cam2world`` per image; images written
  with ``"placed": false`` are ignored);
* a nerfstudio / instant-ngp ``transforms.json`` (``transform_matrix`` in OpenGL camera axes,
  ``fl_x fl_y cx cy w h`` per frame or at the top level, or ``camera_angle_x``);
* a COLMAP sparse model, binary (``cameras.bin`` + ``images.bin``) or text (``cameras.txt`` +
  ``images.txt``); a folder such as ``sparse/0`` or pointmap's own ``colmap/sparse/0``.

Every reader returns, per file name, a :class:`CameraPrior` in **original image pixels** and
pointmap's conventions: pixel centres at integer coordinates (COLMAP and nerfstudio put them at
``+0.5``), camera-to-world poses in OpenCV axes. Lens distortion is not modelled: non-zero
distortion coefficients are reported with a warning and ignored.

:func:`camera_inputs` maps the priors onto the network images (intrinsics through
:meth:`pointmap.images.ImageMeta.intrinsics_to_network`) in the form
:func:`pointmap.align.global_align` accepts; :func:`load_masks` does the same for mask images
(:meth:`~pointmap.images.ImageMeta.map_to_network`).

The files are read by the format modules (:mod:`pointmap.formats.colmap`,
:mod:`pointmap.formats.nerfstudio`, each beside its writer), which convert them to pointmap's
conventions; this module turns their records into priors and matches them to the images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import FormatError, ImageLoadError, PointmapError
from .formats.cameras_json import read_cameras_json
from .formats.colmap import camera_intrinsics, camera_to_world, read_colmap_model
from .formats.common import read_json
from .formats.nerfstudio import read_transforms
from .geometry.camera import rescale_intrinsics
from .images import DEFAULT_MAX_PIXELS, LoadedImage, open_image

__all__ = [
    "CameraFileError",
    "CameraPrior",
    "alignment_priors",
    "camera_inputs",
    "load_masks",
    "match_by_name",
    "read_cameras",
    "read_colmap_cameras",
    "read_nerfstudio_cameras",
    "read_pointmap_cameras",
]

log = logging.getLogger(__name__)

class CameraFileError(PointmapError):
    """A camera or mask file is missing, unreadable or does not match the images."""


@dataclass
class CameraPrior:
    """What is known about one image's camera, in original image pixels.

    Attributes:
        K: ``(3, 3)`` intrinsics (pixels, pixel centres at integers), or ``None``.
        cam2world: ``(4, 4)`` camera-to-world pose in OpenCV axes (x right, y down, z forward),
            or ``None``.
        size: ``(W, H)`` of the image ``K`` refers to, when the file says it (``K`` is rescaled
            to the actual image when they differ by a uniform factor).
        fov_x: horizontal field of view (radians), when the file gives it instead of ``K``.
        K_network: ``(3, 3)`` intrinsics at the network resolution, when the file gives them
            (pointmap's ``cameras.json``: ``K``, exactly as written).
    """

    K: np.ndarray | None = None
    cam2world: np.ndarray | None = None
    size: tuple[int, int] | None = None
    fov_x: float | None = None
    K_network: np.ndarray | None = None


# ----------------------------------------------------------------------------- readers
@contextmanager
def _as_camera_file_error() -> Iterator[None]:
    """A format module's :class:`~pointmap.errors.FormatError` as a :class:`CameraFileError`."""
    try:
        yield
    except FormatError as exc:
        raise CameraFileError(str(exc)) from None


def read_pointmap_cameras(path: str | os.PathLike) -> dict[str, CameraPrior]:
    """Priors from pointmap's ``cameras.json`` (:func:`pointmap.formats.cameras_json.read_cameras_json`:
    ``K_original``, ``cam2world``, ``width``, ``height``; ``K`` as :attr:`CameraPrior.K_network`),
    placed images only, in the file's order."""
    with _as_camera_file_error():
        entries = read_cameras_json(path)
    return {e.file: CameraPrior(K=e.K_original, cam2world=e.cam2world, size=e.size, K_network=e.K)
            for e in entries if e.placed}


def read_nerfstudio_cameras(path: str | os.PathLike) -> dict[str, CameraPrior]:
    """Priors from a nerfstudio / instant-ngp ``transforms.json``
    (:func:`pointmap.formats.nerfstudio.read_transforms`: ``transform_matrix`` in OpenGL axes,
    converted to OpenCV; ``fl_x``/``fl_y``/``cx``/``cy`` per frame or at the top level, with pixel
    centres at ``+0.5``, or ``camera_angle_x``)."""
    with _as_camera_file_error():
        frames, distorted = read_transforms(path)
    if distorted:
        log.warning("%s: lens distortion coefficients are ignored (pointmap models pinhole cameras)", path)
    return {fr.file_path: CameraPrior(K=fr.K, cam2world=fr.cam2world, size=fr.size, fov_x=fr.fov_x)
            for fr in frames}


def read_colmap_cameras(folder: str | os.PathLike) -> dict[str, CameraPrior]:
    """Priors from a COLMAP sparse model folder, binary preferred when both are present
    (:func:`pointmap.formats.colmap.read_colmap_model`); the pinhole part of each camera."""
    folder = Path(folder)
    out: dict[str, CameraPrior] = {}
    distorted = False
    with _as_camera_file_error():
        model = read_colmap_model(folder, points=False)
        for im in model.images:
            if im.camera_id not in model.cameras:
                raise CameraFileError(f"{folder}: image {im.name} refers to camera {im.camera_id}, "
                                      "which is not in the model")
            cam = model.cameras[im.camera_id]
            K, dist = camera_intrinsics(cam, f"{folder}, camera {im.camera_id}")
            distorted |= dist
            out[im.name] = CameraPrior(K=K, cam2world=camera_to_world(im.qvec, im.tvec),
                                       size=(int(cam.width), int(cam.height)))
    if distorted:
        log.warning("%s: lens distortion of the COLMAP cameras is ignored (pointmap models pinhole "
                    "cameras; undistort the images for exact results)", folder)
    return out


def read_cameras(path: str | os.PathLike) -> dict[str, CameraPrior]:
    """Priors by image file name from a camera file or a folder holding one (module docstring).

    A folder is searched for, in order: ``cameras.json``, ``transforms.json``, a COLMAP model in
    the folder itself, in ``sparse/0`` or in ``colmap/sparse/0``, then its only ``.json`` file.

    Raises:
        CameraFileError: nothing readable at ``path``, or a malformed file.
    """
    path = Path(path)
    if not path.exists():
        raise CameraFileError(f"camera file or folder {path} not found")
    if path.is_file():
        if path.name in ("cameras.bin", "images.bin", "cameras.txt", "images.txt", "points3D.bin",
                         "points3D.txt"):
            return read_colmap_cameras(path.parent)
        with _as_camera_file_error():
            data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("frames"), list):
            return read_nerfstudio_cameras(path)
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            return read_pointmap_cameras(path)
        raise CameraFileError(f"{path} is neither a pointmap cameras.json nor a transforms.json")
    if (path / "cameras.json").is_file():
        return read_pointmap_cameras(path / "cameras.json")
    if (path / "transforms.json").is_file():
        return read_nerfstudio_cameras(path / "transforms.json")
    for sub in (path, path / "sparse" / "0", path / "colmap" / "sparse" / "0"):
        if any((sub / f).is_file() for f in ("cameras.bin", "cameras.txt")):
            return read_colmap_cameras(sub)
    jsons = [p for p in path.glob("*.json") if p.is_file()]
    if len(jsons) == 1:  # one JSON file under another name: read it by its content
        return read_cameras(jsons[0])
    raise CameraFileError(
        f"{path} holds no camera file: expected cameras.json, transforms.json or a COLMAP model "
        "(cameras.bin + images.bin, or .txt), in the folder or in sparse/0"
    )


# ----------------------------------------------------------------------------- matching
def _names(images: Sequence[LoadedImage], names: Sequence[str] | None) -> list[str]:
    """The file name of each image: ``names`` when given, else the base name of ``meta.path``."""
    if names is not None:
        if len(names) != len(images):
            raise CameraFileError(f"{len(names)} names for {len(images)} images")
        return [Path(str(n)).name for n in names]
    return [Path(im.meta.path).name if im.meta.path else f"image_{k:04d}" for k, im in enumerate(images)]


def match_by_name(names: Sequence[str], keys: Sequence[str]) -> dict[int, str]:
    """``{image index: key}``: each image's file name matched to a key's base name, else to a key's
    stem (``images/frame_001`` matches ``frame_001.jpg``); case-sensitive, unambiguous matches only."""
    by_name: dict[str, list[str]] = {}
    by_stem: dict[str, list[str]] = {}
    for key in keys:
        base = key.replace("\\", "/").rsplit("/", 1)[-1]
        by_name.setdefault(base, []).append(key)
        by_stem.setdefault(Path(base).stem, []).append(key)
    out = {}
    for k, name in enumerate(names):
        hits = by_name.get(name) or by_stem.get(Path(name).stem) or []
        if len(hits) > 1:
            raise CameraFileError(f"image {name} matches several entries of the camera file: "
                                  f"{', '.join(hits[:4])}")
        if hits:
            out[k] = hits[0]
    return out


def _intrinsics_for(prior: CameraPrior, im: LoadedImage, name: str) -> torch.Tensor | None:
    """The prior's intrinsics at the image's original size (rescaled from ``prior.size``)."""
    W0, H0 = im.meta.original_size
    if prior.K is None:
        if prior.fov_x is None:
            return None
        f = 0.5 * W0 / np.tan(0.5 * prior.fov_x)
        return torch.tensor([[f, 0.0, (W0 - 1) / 2], [0.0, f, (H0 - 1) / 2], [0.0, 0.0, 1.0]],
                            dtype=torch.float64)
    K = torch.as_tensor(prior.K, dtype=torch.float64).clone()
    if prior.size is not None and tuple(prior.size) != (W0, H0):
        w, h = prior.size
        sx, sy = W0 / w, H0 / h
        if abs(sx / sy - 1) > 0.01:
            raise CameraFileError(
                f"the camera file gives {name} as {w}x{h} pixels but the image is {W0}x{H0}: not the "
                "same aspect ratio (was it cropped or rotated?)"
            )
        K = rescale_intrinsics(K, sx, sy)
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise CameraFileError(f"the camera file gives {name} a focal length that is not positive")
    return K


def camera_inputs(
    images: Sequence[LoadedImage], priors: dict[str, CameraPrior], *, poses: bool = True,
    intrinsics: bool = True, source: str = "the camera file", names: Sequence[str] | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Known poses and intrinsics for :func:`pointmap.align.global_align`, matched by file name.

    Args:
        images: the loaded images (their ``meta`` maps original pixels to network pixels).
        priors: from :func:`read_cameras`.
        poses, intrinsics: which of the two to use.
        source: how to name the priors' origin in messages.
        names: file names to match, per image (default: the base name of ``meta.path``).

    Returns:
        ``({index: (4, 4) cam2world}, {index: (3, 3) network-pixel intrinsics})``, float32.

    Raises:
        CameraFileError: no image matches any entry, or an entry does not fit its image.
    """
    names = _names(images, names)
    matched = match_by_name(names, list(priors))
    if not matched:
        shown = ", ".join(list(priors)[:3]) + (", ..." if len(priors) > 3 else "")
        raise CameraFileError(
            f"none of the {len(images)} images matches an entry of {source} by file name "
            f"(images: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}; entries: {shown or 'none'})"
        )
    known_poses: dict[int, torch.Tensor] = {}
    known_K: dict[int, torch.Tensor] = {}
    for k, key in matched.items():
        prior = priors[key]
        if poses and prior.cam2world is not None:
            known_poses[k] = torch.as_tensor(prior.cam2world, dtype=torch.float64).float()
        if intrinsics:
            K = _intrinsics_for(prior, images[k], names[k])
            if K is not None:
                known_K[k] = images[k].meta.intrinsics_to_network(K).float()
    log.info("%s: known poses for %d and intrinsics for %d of %d images", source, len(known_poses),
             len(known_K), len(images))
    return known_poses, known_K


def load_masks(
    images: Sequence[LoadedImage], folder: str | os.PathLike, names: Sequence[str] | None = None,
    allow_missing: bool = False,
) -> list[torch.Tensor | None]:
    """Per image ``(H, W)`` bool masks at network resolution from mask images in ``folder``.

    The mask of ``photo.jpg`` is the first of ``photo.jpg``, ``photo.png``, ``photo_mask.png``,
    ``photo.jpg.png`` found in ``folder``; it has the original image's size (or the same aspect
    ratio, then it is resampled); non-zero pixels are kept, zero pixels are excluded. ``names``:
    file names per image (default: the base name of ``meta.path``).

    Args:
        allow_missing: images without a mask file get ``None`` (everything kept) instead of
            making the call fail.

    Raises:
        CameraFileError: ``folder`` is not a folder, no image has a mask, some images have none
            (naming them; unless ``allow_missing``), or a mask is unreadable or does not fit its
            image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CameraFileError(f"mask folder {folder} not found (--masks takes a folder of mask images)")
    names = _names(images, names)
    paths = [_mask_file(folder, name) for name in names]
    missing = [name for name, path in zip(names, paths) if path is None]
    if len(missing) == len(names):
        raise CameraFileError(f"no mask in {folder} matches an image by file name (for photo.jpg: "
                              "photo.jpg, photo.png, photo_mask.png or photo.jpg.png)")
    if missing and not allow_missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise CameraFileError(
            f"mask folder {folder} has no mask for {len(missing)} of {len(names)} images: {shown} "
            "(for photo.jpg: photo.jpg, photo.png, photo_mask.png or photo.jpg.png); add one for "
            "each (all white keeps every pixel)")
    return [None if path is None else _read_mask(path, im, name)
            for im, name, path in zip(images, names, paths)]


def _mask_file(folder: Path, name: str) -> Path | None:
    """The mask file of image ``name`` in ``folder`` (see :func:`load_masks`), or ``None``."""
    stem = Path(name).stem
    cands = [folder / name, folder / f"{stem}.png", folder / f"{stem}_mask.png", folder / f"{name}.png"]
    return next((c for c in cands if c.is_file()), None)


def _read_mask(path: Path, im: LoadedImage, name: str) -> torch.Tensor:
    """The mask in ``path`` for image ``im`` (named ``name``), ``(H, W)`` bool at network pixels."""
    W0, H0 = im.meta.original_size
    try:
        with open_image(path, max(DEFAULT_MAX_PIXELS, W0 * H0)) as src:  # as large as its photo
            m = src.convert("L")
    except (OSError, UnidentifiedImageError, ImageLoadError) as exc:
        raise CameraFileError(f"cannot read mask {path}: {exc}") from None
    if m.size != (W0, H0):
        if abs(m.size[0] * H0 - m.size[1] * W0) > max(W0, H0):
            raise CameraFileError(
                f"mask {path} is {m.size[0]}x{m.size[1]} pixels but {name} is {W0}x{H0}: not the "
                "same aspect ratio"
            )
        m = m.resize((W0, H0), Image.Resampling.NEAREST)
    return im.meta.map_to_network(torch.from_numpy(np.asarray(m) > 0))


def alignment_priors(
    images: Sequence[LoadedImage],
    cameras: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, object]:
    """Keyword arguments for :func:`pointmap.reconstruct_images` / :func:`pointmap.global_align`
    (``known_poses``, ``known_intrinsics``, ``masks``) from a camera file or folder
    (:func:`read_cameras`) and a mask folder (:func:`load_masks`); either may be ``None``.
    ``names``: the file names to match, per image (default: the base name of ``meta.path``)."""
    out: dict[str, object] = {}
    if cameras is not None:
        poses, Ks = camera_inputs(images, read_cameras(cameras), source=str(cameras), names=names)
        out["known_poses"] = poses or None
        out["known_intrinsics"] = Ks or None
    if masks is not None:
        out["masks"] = load_masks(images, masks, names)
    return out
