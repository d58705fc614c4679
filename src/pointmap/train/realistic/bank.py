"""The asset bank: real-photo texture crops and real textured 3D models in one portable folder.

Layout of a bank folder (written by :mod:`pointmap.train.realistic.build_bank`)::

    manifest.json          # every asset with its source package, path and licence
    photos/000000.jpg ...  # square photo crops (at most 512 px, JPEG)
    models/000000.npz ...  # one decimated mesh per model (metres, z up, base on z = 0)
    models/000000_0.jpg    # the model's textures (at most 512 px, JPEG)

``manifest.json``::

    {"format": 1,
     "sources": [{"id", "package", "path", "license"}],      # the photographs crops come from
     "photos": [{"file", "source", "crop": [x, y, side]}],    # crop of a source, pixels
     "models": [{"file", "name", "category", "package", "path", "license",
                 "size": [x, y, z], "textures": [file, ...]}]}

A model ``.npz`` holds ``vertices`` ``(N, 3)`` float16 metres (x, y on the ground, z up, centred on
x/y, bottom at z = 0), ``faces`` ``(F, 3)`` int32, ``uv`` ``(N, 2)`` float32, ``normals`` ``(N, 3)``
int8 (x 127), ``face_mat`` ``(F,)`` int16 and ``mat_color`` ``(M, 3)`` uint8, ``mat_tex`` ``(M,)``
int16 (index into the model's ``textures``, -1 for none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import PointmapError
from .meshes import Material, Mesh

__all__ = ["AssetBank", "BankError", "FREE_LICENSES", "GRAY", "MANIFEST", "save_model"]

MANIFEST = "manifest.json"

#: Suffix of a texture key asking for the file's luminance (grey) instead of its colours.
GRAY = "#gray"

#: Licence identifiers (Debian short names) accepted into a bank.
FREE_LICENSES: tuple[str, ...] = ("CC0", "CC0-1.0", "public-domain", "CC-BY-3.0", "CC-BY-3.0-USA", "CC-BY-4.0",
                                  "CC-BY-SA-3.0", "CC-BY-SA-4.0", "GPL-2+", "GPL-3+", "LGPL-2.1+", "LGPL-3+",
                                  "Expat", "MIT", "BSD-3-clause")


class BankError(PointmapError):
    """An asset bank that is missing, incomplete or unreadable."""


def save_model(path: Path, mesh: Mesh, texture_files: list[str]) -> None:
    """Write ``mesh`` to ``path`` (``.npz``) in the bank's model format; its materials' textures
    are the files ``texture_files`` (``Material.texture`` is an index into it, as a string)."""
    mat_tex = np.array([-1 if m.texture is None else int(m.texture) for m in mesh.materials], np.int16)
    mat_color = np.clip(np.array([m.color for m in mesh.materials]) * 255 + 0.5, 0, 255).astype(np.uint8)
    normals = mesh.normals if mesh.normals is not None else np.zeros_like(mesh.vertices)
    np.savez_compressed(path, vertices=mesh.vertices.astype(np.float16), faces=mesh.faces.astype(np.int32),
                        uv=mesh.uv.astype(np.float32), normals=np.round(normals * 127).astype(np.int8),
                        face_mat=mesh.face_mat.astype(np.int16), mat_color=mat_color.reshape(-1, 3),
                        mat_tex=mat_tex, n_textures=np.int64(len(texture_files)))


@dataclass
class AssetBank:
    """A bank folder opened for reading.

    Attributes:
        root: the folder. manifest: its parsed ``manifest.json``.
    """

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | Path) -> AssetBank:
        """Open the bank at ``root`` (raises :class:`BankError` naming the build command if absent)."""
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise BankError(f"no asset bank at {str(root)!r} ({MANIFEST} missing); build one with "
                            f"`python scripts/build_asset_bank.py -o {root}`")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise BankError(f"cannot read {str(path)!r}: {e}; rebuild the bank") from e
        if manifest.get("format") != 1:
            raise BankError(f"{str(path)!r} has format {manifest.get('format')!r}, expected 1; rebuild the bank")
        return cls(root, manifest)

    @property
    def n_photos(self) -> int:
        return len(self.manifest["photos"])

    @property
    def n_models(self) -> int:
        return len(self.manifest["models"])

    def photo_key(self, i: int) -> str:
        """Texture key of photo crop ``i`` (for :class:`~pointmap.train.realistic.meshes.Material`)."""
        return self.manifest["photos"][i]["file"]

    def models_where(self, categories: tuple[str, ...] | None = None, max_size: float | None = None,
                     min_size: float = 0.0) -> list[int]:
        """Indices of models whose category is one of ``categories`` (all if ``None``) and whose
        largest extent (metres) lies in ``[min_size, max_size]``."""
        out = []
        for i, m in enumerate(self.manifest["models"]):
            ext = max(m["size"])
            if categories is not None and m.get("category") not in categories:
                continue
            if ext < min_size or (max_size is not None and ext > max_size):
                continue
            out.append(i)
        return out

    def model(self, i: int) -> Mesh:
        """Model ``i`` as a :class:`Mesh` (materials' textures are bank texture keys)."""
        return _load_model(str(self.root), self.manifest["models"][i]["file"],
                           tuple(self.manifest["models"][i]["textures"]), self.manifest["models"][i]["name"])

    def texture(self, key: str, size: int = 256) -> torch.Tensor:
        """The texture file ``key`` (relative to the bank) as ``(3, size, size)`` float32 in [0, 1]
        (stretched to a square: texture coordinates address the whole image either way); a key
        ending in ``#gray`` gives the file's luminance in all three channels."""
        return _load_texture(str(self.root), key, size).float() / 255.0


@lru_cache(maxsize=4096)
def _load_model(root: str, file: str, textures: tuple[str, ...], name: str) -> Mesh:
    try:
        with np.load(Path(root) / file) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as e:
        raise BankError(f"cannot read model {str(Path(root) / file)!r}: {e}; rebuild the bank") from e
    mats = [Material(None if t < 0 else textures[int(t)], tuple(float(c) / 255 for c in col))
            for t, col in zip(d["mat_tex"], d["mat_color"])]
    normals = d["normals"].astype(np.float32) / 127.0
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-6)
    return Mesh(d["vertices"].astype(np.float32), d["faces"].astype(np.int64), d["uv"].astype(np.float32),
                d["face_mat"].astype(np.int64), mats, normals, name=file)


@lru_cache(maxsize=4096)
def _load_texture(root: str, key: str, size: int) -> torch.Tensor:
    """``(3, size, size)`` uint8 (cached: 4096 textures of 256 px take 0.8 GB)."""
    gray = key.endswith(GRAY)
    path = Path(root) / (key[: -len(GRAY)] if gray else key)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L").convert("RGB") if gray else im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise BankError(f"cannot read texture {str(path)!r}: {e}; rebuild the bank") from e
    t = torch.from_numpy(arr).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
