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

The module is long because it holds one short reader per camera format (three of them) next to the
matching by file name that they all feed.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import PointmapError
from .geometry.camera import rescale_intrinsics
from .images import LoadedImage

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

#: ``cam2world_cv = cam2world_gl @ _GL_TO_CV`` (flip the y and z camera axes; its own inverse).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


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
    """

    K: np.ndarray | None = None
    cam2world: np.ndarray | None = None
    size: tuple[int, int] | None = None
    fov_x: float | None = None


# ----------------------------------------------------------------------------- readers
def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CameraFileError(f"cannot read camera file {path}: {exc}") from None


def _matrix(value: object, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != shape or not np.isfinite(arr).all():
        raise CameraFileError(f"{where}: expected a finite {shape[0]}x{shape[1]} matrix")
    return arr


def read_pointmap_cameras(path: str | os.PathLike) -> dict[str, CameraPrior]:
    """Priors from pointmap's ``cameras.json`` (``K_original``, ``cam2world``, ``width``, ``height``)."""
    path = Path(path)
    data = _json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CameraFileError(f"{path} is not a pointmap cameras.json (no 'images' list)")
    out: dict[str, CameraPrior] = {}
    for k, im in enumerate(data["images"]):
        where = f"{path}, image {k}"
        if not isinstance(im, dict) or not isinstance(im.get("file", im.get("name")), str):
            raise CameraFileError(f"{where}: expected an object with a 'file' name")
        if im.get("placed") is False:
            continue
        prior = CameraPrior()
        if im.get("K_original") is not None:
            prior.K = _matrix(im["K_original"], (3, 3), f"{where}, K_original")
            if isinstance(im.get("width"), int) and isinstance(im.get("height"), int):
                prior.size = (im["width"], im["height"])
        if im.get("cam2world") is not None:
            prior.cam2world = _matrix(im["cam2world"], (4, 4), f"{where}, cam2world")
        out[im.get("file") or im["name"]] = prior
    return out


_NS_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def read_nerfstudio_cameras(path: str | os.PathLike) -> dict[str, CameraPrior]:
    """Priors from a nerfstudio / instant-ngp ``transforms.json``.

    ``transform_matrix`` is camera-to-world in OpenGL axes (converted to OpenCV); intrinsics come
    from the frame or the top level (``fl_x``/``fl_y``/``cx``/``cy``, ``cx``/``cy`` with pixel
    centres at ``+0.5``, or ``camera_angle_x``).
    """
    path = Path(path)
    data = _json(path)
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise CameraFileError(f"{path} is not a transforms.json (no 'frames' list)")
    out: dict[str, CameraPrior] = {}
    distorted = False
    for k, fr in enumerate(data["frames"]):
        where = f"{path}, frame {k}"
        if not isinstance(fr, dict) or not isinstance(fr.get("file_path"), str):
            raise CameraFileError(f"{where}: expected an object with a 'file_path'")
        get = lambda key: fr.get(key, data.get(key))  # noqa: E731  (per frame, else shared)
        prior = CameraPrior()
        if fr.get("transform_matrix") is not None:
            prior.cam2world = _matrix(fr["transform_matrix"], (4, 4), f"{where}, transform_matrix") @ _GL_TO_CV
        if get("fl_x") is not None:
            try:
                fx = float(get("fl_x"))
                fy = float(get("fl_y") if get("fl_y") is not None else fx)
                w, h = get("w"), get("h")
                cx = float(get("cx")) - 0.5 if get("cx") is not None else (float(w) - 1) / 2
                cy = float(get("cy")) - 0.5 if get("cy") is not None else (float(h) - 1) / 2
            except (TypeError, ValueError):
                raise CameraFileError(f"{where}: fl_x, fl_y, cx, cy, w, h must be numbers") from None
            prior.K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            if w is not None and h is not None:
                prior.size = (int(w), int(h))
        elif get("camera_angle_x") is not None:
            prior.fov_x = float(get("camera_angle_x"))
            if get("w") is not None and get("h") is not None:
                prior.size = (int(get("w")), int(get("h")))
        distorted |= any(float(get(key) or 0.0) != 0.0 for key in ("k1", "k2", "k3", "k4", "p1", "p2"))
        out[fr["file_path"]] = prior
    if distorted:
        log.warning("%s: lens distortion coefficients are ignored (pointmap models pinhole cameras)", path)
    return out


# COLMAP camera models: id -> (name, number of parameters); the pinhole part is read from them.
_COLMAP_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
}
_COLMAP_BY_NAME = {name: (mid, n) for mid, (name, n) in _COLMAP_MODELS.items()}
_FISHEYE = {"OPENCV_FISHEYE", "FOV", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE", "THIN_PRISM_FISHEYE"}


def _colmap_K(model: str, params: Sequence[float], where: str) -> tuple[np.ndarray, bool]:
    """Pinhole intrinsics (pointmap pixel convention) and whether distortion is non-zero."""
    if model in _FISHEYE:
        raise CameraFileError(f"{where}: camera model {model} is a fisheye model; undistort the "
                              "images (colmap image_undistorter) and pass the undistorted model")
    p = [float(x) for x in params]
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy, rest = p[1], p[2], p[3:]
    else:  # PINHOLE, OPENCV, FULL_OPENCV
        fx, fy, cx, cy, rest = p[0], p[1], p[2], p[3], p[4:]
    K = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])
    return K, any(x != 0.0 for x in rest)


def _qvec_to_rotmat(q: Sequence[float]) -> np.ndarray:
    """Rotation ``(3, 3)`` of a unit quaternion ``(w, x, y, z)`` (COLMAP's order)."""
    import roma

    w, x, y, z = (float(v) for v in q)
    return roma.unitquat_to_rotmat(torch.tensor([x, y, z, w], dtype=torch.float64)).numpy()


def _colmap_pose(q: Sequence[float], t: Sequence[float]) -> np.ndarray:
    R = _qvec_to_rotmat(np.asarray(q, np.float64) / np.linalg.norm(q))
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ np.asarray(t, np.float64)
    return c2w


def _read_colmap_text(folder: Path) -> tuple[dict[int, tuple], list[tuple]]:
    def lines(name: str) -> list[str]:
        try:
            text = (folder / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CameraFileError(f"cannot read {folder / name}: {exc}") from None
        return [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]

    cams = {}
    for ln in lines("cameras.txt"):
        tok = ln.split()
        if not tok:
            continue
        if len(tok) < 4 or tok[1] not in _COLMAP_BY_NAME:
            raise CameraFileError(f"{folder / 'cameras.txt'}: cannot read camera line {ln!r}")
        try:
            cams[int(tok[0])] = (tok[1], int(tok[2]), int(tok[3]), [float(x) for x in tok[4:]])
        except ValueError:
            raise CameraFileError(f"{folder / 'cameras.txt'}: cannot read camera line {ln!r}") from None
    images = []
    rows = lines("images.txt")
    k = 0
    while k < len(rows):
        tok = rows[k].split()
        k += 1
        if not tok:
            continue
        try:  # IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, then one line of 2-D points (skipped)
            images.append(([float(x) for x in tok[1:5]], [float(x) for x in tok[5:8]], int(tok[8]),
                           " ".join(tok[9:])))
        except (ValueError, IndexError):
            raise CameraFileError(f"{folder / 'images.txt'}: cannot read image line {rows[k - 1]!r}") from None
        if len(tok) < 10:
            raise CameraFileError(f"{folder / 'images.txt'}: cannot read image line {rows[k - 1]!r}")
        k += 1
    return cams, images


def _read_colmap_binary(folder: Path) -> tuple[dict[int, tuple], list[tuple]]:
    try:
        cam_bytes = (folder / "cameras.bin").read_bytes()
        img_bytes = (folder / "images.bin").read_bytes()
    except OSError as exc:
        raise CameraFileError(f"cannot read the COLMAP model in {folder}: {exc}") from None
    try:
        cams, off = {}, 8
        for _ in range(struct.unpack_from("<Q", cam_bytes, 0)[0]):
            cid, mid, w, h = struct.unpack_from("<iiQQ", cam_bytes, off)
            off += 24
            if mid not in _COLMAP_MODELS:
                raise CameraFileError(f"{folder / 'cameras.bin'}: unknown camera model id {mid}")
            name, n = _COLMAP_MODELS[mid]
            cams[cid] = (name, w, h, list(struct.unpack_from(f"<{n}d", cam_bytes, off)))
            off += 8 * n
        images, off = [], 8
        for _ in range(struct.unpack_from("<Q", img_bytes, 0)[0]):
            vals = struct.unpack_from("<I7dI", img_bytes, off)
            off += 64
            end = img_bytes.index(b"\x00", off)
            name = img_bytes[off:end].decode("utf-8")
            n_pts = struct.unpack_from("<Q", img_bytes, end + 1)[0]
            off = end + 9 + 24 * n_pts
            images.append((list(vals[1:5]), list(vals[5:8]), vals[8], name))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise CameraFileError(f"the COLMAP model in {folder} is truncated or corrupt ({exc})") from None
    return cams, images


def read_colmap_cameras(folder: str | os.PathLike) -> dict[str, CameraPrior]:
    """Priors from a COLMAP sparse model folder (binary preferred when both are present)."""
    folder = Path(folder)
    if (folder / "cameras.bin").is_file() and (folder / "images.bin").is_file():
        cams, images = _read_colmap_binary(folder)
    elif (folder / "cameras.txt").is_file() and (folder / "images.txt").is_file():
        cams, images = _read_colmap_text(folder)
    else:
        raise CameraFileError(f"{folder} holds no COLMAP model (cameras.bin + images.bin or "
                              "cameras.txt + images.txt)")
    out: dict[str, CameraPrior] = {}
    distorted = False
    for q, t, cid, name in images:
        if cid not in cams:
            raise CameraFileError(f"{folder}: image {name} refers to camera {cid}, which is not in the model")
        model, w, h, params = cams[cid]
        _, n = _COLMAP_BY_NAME[model]
        if len(params) != n:
            raise CameraFileError(f"{folder}: camera {cid} ({model}) has {len(params)} parameters, expected {n}")
        K, dist = _colmap_K(model, params, f"{folder}, camera {cid}")
        distorted |= dist
        out[name] = CameraPrior(K=K, cam2world=_colmap_pose(q, t), size=(int(w), int(h)))
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
        data = _json(path)
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
    images: Sequence[LoadedImage], folder: str | os.PathLike, names: Sequence[str] | None = None
) -> list[torch.Tensor | None]:
    """Per image ``(H, W)`` bool masks at network resolution from mask images in ``folder``.

    The mask of ``photo.jpg`` is the first of ``photo.jpg``, ``photo.png``, ``photo_mask.png``,
    ``photo.jpg.png`` found in ``folder``; it has the original image's size (or the same aspect
    ratio, then it is resampled); non-zero pixels are kept, zero pixels are excluded. Images
    without a mask file get ``None`` (everything kept). ``names``: file names per image (default:
    the base name of ``meta.path``).

    Raises:
        CameraFileError: ``folder`` is not a folder, no image has a mask, or a mask is unreadable or
            does not fit its image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CameraFileError(f"mask folder {folder} not found (--masks takes a folder of mask images)")
    out: list[torch.Tensor | None] = []
    for im, name in zip(images, _names(images, names)):
        stem = Path(name).stem
        cands = [folder / name, folder / f"{stem}.png", folder / f"{stem}_mask.png", folder / f"{name}.png"]
        path = next((c for c in cands if c.is_file()), None)
        if path is None:
            out.append(None)
            continue
        try:
            with Image.open(path) as src:
                m = src.convert("L")
        except (OSError, UnidentifiedImageError) as exc:
            raise CameraFileError(f"cannot read mask {path}: {exc}") from None
        W0, H0 = im.meta.original_size
        if m.size != (W0, H0):
            if abs(m.size[0] * H0 - m.size[1] * W0) > max(W0, H0):
                raise CameraFileError(
                    f"mask {path} is {m.size[0]}x{m.size[1]} pixels but {name} is {W0}x{H0}: not the "
                    "same aspect ratio"
                )
            m = m.resize((W0, H0), Image.Resampling.NEAREST)
        arr = torch.from_numpy(np.asarray(m) > 0)
        out.append(im.meta.map_to_network(arr))
    if all(m is None for m in out):
        raise CameraFileError(f"no mask in {folder} matches an image by file name (for photo.jpg: "
                              "photo.jpg, photo.png, photo_mask.png or photo.jpg.png)")
    return out


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
