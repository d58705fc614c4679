"""Procedural tileable textures (noise, checkers, stripes, bricks, tiles, wood, marble, gradients,
dots, cells, facades) and plain nearly uniform surfaces, drawn from a generator.

Every texture is *tileable* (periodic over its unit square), ``(3, S, S)`` float32 in [0, 1], and
fully determined by the generator's state.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["Texture", "PROCEDURAL_KINDS", "make_plain_texture", "make_procedural_texture", "value_noise",
           "spectral_noise"]

Texture = torch.Tensor  # (3, S, S) float32 in [0, 1]


# ----------------------------------------------------------------------------------- helpers


def _random_color(rng: np.random.Generator, sat: tuple[float, float] = (0.1, 0.7),
                  val: tuple[float, float] = (0.25, 0.95)) -> torch.Tensor:
    """A random RGB colour ``(3,)`` in [0, 1] drawn in HSV space."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val))
    return torch.tensor(rgb, dtype=torch.float32)


def _palette(rng: np.random.Generator, n: int) -> torch.Tensor:
    """``n`` related colours ``(n, 3)``: one base hue with jittered hue, saturation and value."""
    h0 = rng.uniform()
    s0 = rng.uniform(0.05, 0.7)
    cols = []
    for _ in range(n):
        h = (h0 + rng.normal(0, 0.08) + (0.5 if rng.uniform() < 0.2 else 0.0)) % 1.0
        s = float(np.clip(s0 + rng.normal(0, 0.15), 0, 1))
        v = rng.uniform(0.2, 0.95)
        cols.append(colorsys.hsv_to_rgb(h, s, v))
    return torch.tensor(cols, dtype=torch.float32)


def _mix(pattern: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """Map a scalar field ``(S, S)`` in [0, 1] through a piecewise-linear colour ramp ``(n, 3)``."""
    n = colors.shape[0]
    x = pattern.clamp(0, 1) * (n - 1)
    i0 = x.floor().long().clamp(max=n - 2)
    w = (x - i0).unsqueeze(0)
    return colors[i0].permute(2, 0, 1) * (1 - w) + colors[i0 + 1].permute(2, 0, 1) * w


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texel-centre coordinates ``(x, y)``, each ``(S, S)`` in [0, 1)."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(t, t, indexing="ij")
    return x, y


def _periodic_upsample(grid: torch.Tensor, size: int) -> torch.Tensor:
    """Smooth periodic interpolation of a ``(g, g)`` lattice of values to ``(S, S)`` texels."""
    g = grid.shape[-1]
    pos = (torch.arange(size, dtype=torch.float32) + 0.5) * g / size
    i0 = pos.floor().long()
    f = pos - i0
    f = f * f * (3 - 2 * f)  # smoothstep: value noise without lattice creases
    weights = torch.zeros(size, g)  # (S, g) interpolation matrix, wrapping at the border
    rows = torch.arange(size)
    weights.index_put_((rows, i0 % g), 1 - f, accumulate=True)
    weights.index_put_((rows, (i0 + 1) % g), f, accumulate=True)
    return weights @ grid @ weights.T


def value_noise(rng: np.random.Generator, size: int, base: int = 4, octaves: int = 5,
                persistence: float = 0.5) -> torch.Tensor:
    """Tileable fractal value noise ``(S, S)`` normalised to [0, 1] (``octaves`` lattices, base
    lattice ``base x base`` doubling each octave, amplitude times ``persistence`` per octave)."""
    out = torch.zeros(size, size)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        g = min(base * 2**o, size)
        lattice = torch.from_numpy(rng.uniform(size=(g, g)).astype(np.float32))
        out += amp * _periodic_upsample(lattice, size)
        total += amp
        amp *= persistence
    out = out / total
    return (out - out.min()) / (out.max() - out.min() + 1e-6)


def spectral_noise(rng: np.random.Generator, size: int, beta: float) -> torch.Tensor:
    """Tileable noise with power spectrum ``1/f^beta`` ``(S, S)`` in [0, 1], made by filtering white noise in Fourier space."""
    white = torch.from_numpy(rng.standard_normal((size, size)).astype(np.float32))
    fx = torch.fft.fftfreq(size)
    fr = torch.sqrt(fx[:, None] ** 2 + torch.fft.rfftfreq(size)[None, :] ** 2).clamp(min=1.0 / size)
    field = torch.fft.irfft2(torch.fft.rfft2(white) * fr ** (-beta / 2), s=(size, size))
    lo, hi = torch.quantile(field.flatten()[::7], torch.tensor([0.01, 0.99]))
    return ((field - lo) / (hi - lo + 1e-6)).clamp(0, 1)


# ------------------------------------------------------------------------- procedural kinds


def _tex_noise(rng: np.random.Generator, s: int) -> Texture:
    pat = value_noise(rng, s, base=int(rng.choice([2, 4, 8])), octaves=int(rng.integers(3, 7)),
                      persistence=rng.uniform(0.35, 0.7))
    return _mix(pat, _palette(rng, int(rng.integers(2, 5))))


def _tex_spectral(rng: np.random.Generator, s: int) -> Texture:
    return _mix(spectral_noise(rng, s, rng.uniform(2.0, 4.0)), _palette(rng, 3))


def _tex_checker(rng: np.random.Generator, s: int) -> Texture:
    x, y = _grid(s)
    n = int(rng.choice([2, 4, 6, 8, 12]))
    pat = ((x * n).floor() + (y * n).floor()) % 2
    c = torch.stack([_random_color(rng), _random_color(rng)])
    return _mix(pat, c) * (0.85 + 0.15 * value_noise(rng, s, 8, 4))


def _tex_stripes(rng: np.random.Generator, s: int) -> Texture:
    x, y = _grid(s)
    kx, ky = int(rng.integers(0, 6)), int(rng.integers(1, 12))
    if rng.uniform() < 0.5:
        kx, ky = ky, kx
    phase = 2 * math.pi * (kx * x + ky * y)
    wave = 0.5 + 0.5 * torch.sin(phase)
    if rng.uniform() < 0.5:
        wave = (wave > rng.uniform(0.3, 0.7)).float()
    return _mix(wave, _palette(rng, int(rng.integers(2, 4)))) * (0.9 + 0.1 * value_noise(rng, s))


def _tex_bricks(rng: np.random.Generator, s: int) -> Texture:
    x, y = _grid(s)
    rows = int(rng.choice([4, 6, 8, 12]))
    per_row = int(rng.choice([2, 3, 4, 6]))
    r = (y * rows).floor()
    xs = x * per_row + 0.5 * (r % 2)
    col = xs.floor() % per_row
    fx, fy = xs - xs.floor(), y * rows - r
    mortar_w = rng.uniform(0.03, 0.1)
    mortar = ((fx < mortar_w / 2 * rows / per_row) | (fy < mortar_w)).float()
    ids = (r * per_row + col).long()
    jitter = torch.from_numpy(rng.uniform(0, 1, size=rows * per_row).astype(np.float32))[ids]
    brick = _mix(jitter, _palette(rng, 2)) * (0.8 + 0.2 * value_noise(rng, s, 16, 4))
    mortar_col = _random_color(rng, (0, 0.1), (0.5, 0.9))[:, None, None]
    return brick * (1 - mortar) + mortar_col * mortar


def _tex_tiles(rng: np.random.Generator, s: int) -> Texture:
    x, y = _grid(s)
    n = int(rng.choice([2, 3, 4, 8]))
    fx, fy = x * n - (x * n).floor(), y * n - (y * n).floor()
    g = rng.uniform(0.02, 0.08)
    grout = ((fx < g) | (fy < g)).float()
    ids = ((y * n).floor() * n + (x * n).floor()).long()
    jitter = torch.from_numpy(rng.uniform(0, 1, size=n * n).astype(np.float32))[ids]
    tile = _mix(0.3 * jitter + 0.7 * value_noise(rng, s, 4, 5), _palette(rng, 2))
    return tile * (1 - grout) + _random_color(rng, (0, 0.2), (0.1, 0.8))[:, None, None] * grout


def _tex_wood(rng: np.random.Generator, s: int) -> Texture:
    x, y = _grid(s)
    k = int(rng.integers(3, 10))
    warp = value_noise(rng, s, 4, 4)
    rings = torch.frac(k * (y + rng.uniform(0.1, 0.4) * warp) + 0.3 * torch.sin(2 * math.pi * x))
    h = rng.uniform(0.04, 0.12)
    c = torch.tensor([colorsys.hsv_to_rgb(h, rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.5)),
                      colorsys.hsv_to_rgb(h, rng.uniform(0.3, 0.6), rng.uniform(0.55, 0.9))],
                     dtype=torch.float32)
    return _mix(rings**2, c)


def _tex_marble(rng: np.random.Generator, s: int) -> Texture:
    x, y = _grid(s)
    turb = value_noise(rng, s, 4, 6)
    k = int(rng.integers(1, 4))
    pat = 0.5 + 0.5 * torch.sin(2 * math.pi * (k * x + int(rng.integers(0, 3)) * y) + rng.uniform(4, 10) * turb)
    return _mix(pat, _palette(rng, 3))


def _tex_gradient(rng: np.random.Generator, s: int) -> Texture:
    x, y = _grid(s)
    a, b = int(rng.integers(0, 2)), int(rng.integers(1, 3))
    pat = 0.5 - 0.5 * torch.cos(2 * math.pi * (a * x + b * y))
    pat = 0.8 * pat + 0.2 * value_noise(rng, s, 8, 5)
    return _mix(pat, _palette(rng, 3))


def _tex_dots(rng: np.random.Generator, s: int) -> Texture:
    x, y = _grid(s)
    n = int(rng.choice([3, 4, 6, 8]))
    fx, fy = x * n - (x * n).floor() - 0.5, y * n - (y * n).floor() - 0.5
    dot = ((fx**2 + fy**2).sqrt() < rng.uniform(0.15, 0.4)).float()
    bg = _random_color(rng)[:, None, None] * (0.9 + 0.1 * value_noise(rng, s))
    return bg * (1 - dot) + _random_color(rng)[:, None, None] * dot


def _tex_cells(rng: np.random.Generator, s: int) -> Texture:
    """Periodic Voronoi cells (cobblestones, pebbles)."""
    x, y = _grid(s)
    n = int(rng.integers(12, 48))
    pts = torch.from_numpy(rng.uniform(size=(n, 2)).astype(np.float32))
    dx = (x[..., None] - pts[:, 0]).abs()
    dy = (y[..., None] - pts[:, 1]).abs()
    d = torch.minimum(dx, 1 - dx) ** 2 + torch.minimum(dy, 1 - dy) ** 2  # (S, S, n), wrapped
    d2, ids = d.topk(2, dim=-1, largest=False)
    edge = ((d2[..., 1].sqrt() - d2[..., 0].sqrt()) * math.sqrt(n)).clamp(0, 1)
    shade = torch.from_numpy(rng.uniform(size=n).astype(np.float32))[ids[..., 0]]
    stone = _mix(shade, _palette(rng, 3)) * (0.85 + 0.15 * value_noise(rng, s, 16, 3))
    return stone * (edge.clamp(0, 0.3) / 0.3)


def _tex_facade(rng: np.random.Generator, s: int) -> Texture:
    """A wall (plaster or brick) with one window per tile: the tile is one storey by one bay."""
    wall = _tex_bricks(rng, s) if rng.uniform() < 0.4 else _tex_noise(rng, s)
    x, y = _grid(s)
    x0, x1 = sorted(rng.uniform(0.15, 0.85, size=2))
    x0, x1 = min(x0, 0.35), max(x1, 0.65)
    y0, y1 = rng.uniform(0.15, 0.35), rng.uniform(0.65, 0.85)
    win = ((x > x0) & (x < x1) & (y > y0) & (y < y1)).float()
    frame_w = 0.03
    inner = ((x > x0 + frame_w) & (x < x1 - frame_w) & (y > y0 + frame_w) & (y < y1 - frame_w)).float()
    glass = _mix(0.6 * y + 0.4 * value_noise(rng, s, 8, 3),
                 torch.stack([_random_color(rng, (0.1, 0.5), (0.05, 0.3)),
                              _random_color(rng, (0.0, 0.3), (0.3, 0.7))]))
    frame = _random_color(rng, (0, 0.3), (0.1, 0.95))[:, None, None]
    return wall * (1 - win) + win * (frame * (1 - inner) + glass * inner)


#: Procedural generators by name: each maps (rng, size) to a tileable (3, S, S) texture in [0, 1].
PROCEDURAL_KINDS: dict[str, Callable[[np.random.Generator, int], Texture]] = {
    "noise": _tex_noise,
    "spectral": _tex_spectral,
    "checker": _tex_checker,
    "stripes": _tex_stripes,
    "bricks": _tex_bricks,
    "tiles": _tex_tiles,
    "wood": _tex_wood,
    "marble": _tex_marble,
    "gradient": _tex_gradient,
    "dots": _tex_dots,
    "cells": _tex_cells,
    "facade": _tex_facade,
}


def make_plain_texture(rng: np.random.Generator, size: int = 256) -> Texture:
    """A nearly uniform, tileable surface ``(3, size, size)`` in [0, 1]: painted walls, doors,
    cabinets, plaster. One colour (mostly desaturated, sometimes a strong paint) with a faint
    large-scale shade variation (1 to 4 %) and a fainter grain (under 1 %)."""
    sat = (0.0, 0.25) if rng.uniform() < 0.7 else (0.3, 0.85)
    color = _random_color(rng, sat, (0.2, 0.95))
    shade = (value_noise(rng, size, 2, 3) - 0.5) * rng.uniform(0.02, 0.08)
    grain = (value_noise(rng, size, 32, 2) - 0.5) * rng.uniform(0.0, 0.015)
    return (color[:, None, None] * (1.0 + shade + grain)).clamp(0, 1).float().contiguous()


def make_procedural_texture(kind: str, rng: np.random.Generator, size: int = 256) -> Texture:
    """One tileable texture ``(3, size, size)`` float32 in [0, 1] of the given ``kind``
    (a key of :data:`PROCEDURAL_KINDS`), fully determined by ``rng``'s state."""
    return PROCEDURAL_KINDS[kind](rng, size).clamp(0, 1).float().contiguous()

