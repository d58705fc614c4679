"""Texture atlases: procedural (:mod:`~pointmap.train.synthetic.patterns`) and photographic
textures, stored as one mip-mapped atlas for per-pixel sampling.

Every procedural texture is *tileable* (periodic over its unit square), so surfaces can repeat it
without seams. Texture coordinates are measured in tiles: ``(u, v) = (0.25, 0.5)`` is a quarter of
the way across the tile horizontally and halfway down, and ``(1.25, 0.5)`` is the same texel.

Photographic textures are crops of real photographs that installed packages ship for their own
examples (matplotlib's public-domain ``grace_hopper.jpg``) or that the caller points to; nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .patterns import PROCEDURAL_KINDS, Texture, make_plain_texture, make_procedural_texture

__all__ = [
    "PROCEDURAL_KINDS",
    "TextureBank",
    "build_texture_bank",
    "find_packaged_photos",
    "make_photo_texture",
    "make_plain_texture",
    "make_procedural_texture",
    "pack_textures",
]


# ---------------------------------------------------------------------------------- photos


def find_packaged_photos() -> list[Path]:
    """Photographs shipped inside installed packages as example data (public domain).

    Currently matplotlib's ``mpl-data/sample_data/grace_hopper.jpg`` when matplotlib is installed
    (the ``train`` extra). Returns an empty list when none is found.
    """
    found: list[Path] = []
    try:
        import matplotlib
    except ImportError:
        return found
    sample = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    for name in ("grace_hopper.jpg",):
        if (sample / name).is_file():
            found.append(sample / name)
    return found


def _load_photo(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:  # missing file, not an image, truncated data
        raise ValueError(f"cannot read texture photo {str(path)!r} (photo_paths): {e}") from e
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def make_photo_texture(photo: torch.Tensor, rng: np.random.Generator, size: int = 256) -> Texture:
    """A random square crop of ``photo`` ``(3, H, W)`` in [0, 1], resized to ``(3, size, size)``,
    randomly mirrored and colour-shifted. Not tileable (a seam shows where it repeats)."""
    _, h, w = photo.shape
    side = int(min(h, w) * rng.uniform(0.3, 1.0))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo[:, top:top + side, left:left + side][None]
    tex = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    if rng.uniform() < 0.5:
        tex = tex.flip(-1)
    gain = torch.from_numpy(rng.uniform(0.8, 1.2, size=3).astype(np.float32))[:, None, None]
    return (tex * gain).clamp(0, 1).contiguous()


# ------------------------------------------------------------------------------------ bank


@dataclass
class TextureBank:
    """A stack of ``T`` square textures with their mip pyramids, flattened for gathering.

    Attributes:
        texels: ``(N, 3)`` float16: every level of every texture, level-major
            (level ``l`` holds ``T * S_l * S_l`` texels, ``S_l = size >> l``, row-major per texture).
        level_offsets: ``(L,)`` int64 start of each level in ``texels``.
        size: ``S``, the side of level 0 (a power of two).
        n_levels: ``L`` (down to 4 x 4 texels).
        kinds: the kind of each texture (``"photo"``, ``"plain"`` or a key of :data:`PROCEDURAL_KINDS`).
        saturation: mean HSV saturation of each texture (to pick greyish ones, e.g. for roads).
    """

    texels: torch.Tensor
    level_offsets: torch.Tensor
    size: int
    n_levels: int
    kinds: list[str]
    saturation: list[float]

    @property
    def n_textures(self) -> int:
        return len(self.kinds)

    def to(self, device: torch.device | str) -> TextureBank:
        return TextureBank(self.texels.to(device), self.level_offsets.to(device), self.size,
                           self.n_levels, self.kinds, self.saturation)

    def indices_of(self, kind: str) -> list[int]:
        """Indices of the textures of one kind."""
        return [i for i, k in enumerate(self.kinds) if k == kind]

    def sample(self, tex: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
               texel_footprint: torch.Tensor) -> torch.Tensor:
        """Trilinear (mip-mapped, wrapping) lookup.

        Args:
            tex: ``(...)`` int64 texture indices.
            u, v: ``(...)`` coordinates in tiles (any real value; the texture repeats).
            texel_footprint: ``(...)`` size of one pixel's footprint in level-0 texels; selects
                the mip level (``log2`` of it).
        Returns:
            ``(..., 3)`` float32 colours in [0, 1].
        """
        level = torch.log2(texel_footprint.clamp(min=1.0)).clamp(max=self.n_levels - 1 - 1e-4)
        l0 = level.floor().long()
        w = (level - l0).unsqueeze(-1)
        c0 = self._bilinear(tex, u, v, l0)
        c1 = self._bilinear(tex, u, v, (l0 + 1).clamp(max=self.n_levels - 1))
        return c0 * (1 - w) + c1 * w

    def _bilinear(self, tex: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                  level: torch.Tensor) -> torch.Tensor:
        side = torch.div(self.size, 2**level, rounding_mode="floor")  # (...) int64
        base = self.level_offsets[level] + tex * side * side
        x = torch.frac(torch.frac(u) + 1.0) * side - 0.5
        y = torch.frac(torch.frac(v) + 1.0) * side - 0.5
        x0f, y0f = x.floor(), y.floor()
        fx, fy = (x - x0f).unsqueeze(-1), (y - y0f).unsqueeze(-1)
        x0 = torch.remainder(x0f.long(), side)
        y0 = torch.remainder(y0f.long(), side)
        x1 = torch.remainder(x0 + 1, side)
        y1 = torch.remainder(y0 + 1, side)

        def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
            return self.texels[base + yy * side + xx].float()

        top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
        bot = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
        return top * (1 - fy) + bot * fy


def pack_textures(textures: Sequence[Texture], kinds: list[str]) -> TextureBank:
    """A :class:`TextureBank` (on the CPU) of ``textures``, each ``(3, S, S)`` float32 in [0, 1] with
    one power-of-two ``S``, labelled ``kinds``."""
    stack = torch.stack(list(textures))  # (T, 3, S, S)
    size = stack.shape[-1]
    levels, offsets, total = [], [], 0
    cur = stack
    while True:
        offsets.append(total)
        flat = cur.permute(0, 2, 3, 1).reshape(-1, 3)
        levels.append(flat)
        total += flat.shape[0]
        if cur.shape[-1] <= 4:
            break
        cur = F.avg_pool2d(cur, 2)
    mx, mn = stack.amax(1), stack.amin(1)
    saturation = ((mx - mn) / mx.clamp(min=1e-3)).mean((1, 2)).tolist()
    return TextureBank(torch.cat(levels).to(torch.float16), torch.tensor(offsets, dtype=torch.int64),
                       size, len(levels), kinds, saturation)


_BANK_CACHE: dict[tuple, TextureBank] = {}


def build_texture_bank(seed: int, n_procedural: int = 96, n_photo: int = 16, size: int = 256,
                       photo_paths: Sequence[str | Path] = (), use_packaged_photos: bool = True,
                       device: torch.device | str = "cpu", n_plain: int = 0) -> TextureBank:
    """Build (or fetch from a per-process cache) a deterministic texture bank.

    Args:
        seed: determines every texture.
        n_procedural: procedural textures, cycling through :data:`PROCEDURAL_KINDS`.
        n_photo: photo crops (only if at least one photo is available).
        size: side ``S`` of each texture in texels (power of two).
        photo_paths: extra photographs (any format PIL reads) to crop textures from.
        use_packaged_photos: also use :func:`find_packaged_photos`.
        device: where the bank lives (the renderer samples it there).
        n_plain: nearly uniform textures (kind ``"plain"``, :func:`make_plain_texture`), after
            the photo crops; the other textures do not depend on it.
    """
    if size & (size - 1) or size < 8:
        raise ValueError(f"texture size must be a power of two >= 8, got {size}")
    photos = [Path(p) for p in photo_paths] + (find_packaged_photos() if use_packaged_photos else [])
    key = (seed, n_procedural, n_photo, size, tuple(str(p) for p in photos), str(torch.device(device)), n_plain)
    if key in _BANK_CACHE:
        return _BANK_CACHE[key]
    names = list(PROCEDURAL_KINDS)
    textures, kinds = [], []
    for i in range(n_procedural):
        kind = names[i % len(names)]
        rng = np.random.default_rng([seed, 1, i])
        textures.append(make_procedural_texture(kind, rng, size))
        kinds.append(kind)
    if photos and n_photo > 0:
        loaded = [_load_photo(p) for p in photos]
        for i in range(n_photo):
            rng = np.random.default_rng([seed, 2, i])
            textures.append(make_photo_texture(loaded[i % len(loaded)], rng, size))
            kinds.append("photo")
    for i in range(n_plain):
        textures.append(make_plain_texture(np.random.default_rng([seed, 3, i]), size))
        kinds.append("plain")
    bank = pack_textures(textures, kinds).to(device)
    _BANK_CACHE[key] = bank
    return bank
