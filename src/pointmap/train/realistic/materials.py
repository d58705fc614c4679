"""Plausible surface materials made from the asset bank's photographs: painted and plastered walls,
wooden, tiled and carpeted floors, facades, asphalt and paving.

A photo crop becomes a material of a chosen colour as its luminance (the ``#gray`` texture key of
:class:`~pointmap.train.realistic.bank.AssetBank`) times ``target / mean luminance``: the surface
keeps the crop's fine variation (grain, plaster, stone) at the colour of the material. Crops are
chosen by the statistics of :func:`photo_stats`: little contrast for plaster, concrete, carpet and
tiles, streaks for wood (turned along the planks); the photographs themselves (landscapes,
flowers) only appear as pictures on walls and as views through windows. Floors of tiles and planks are laid as separate
quads (each its own offset into the texture and a slight tint) over a grout plane 3 mm below.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .bank import GRAY, AssetBank
from .meshes import Material, Mesh, SceneAssembler, quad_mesh

__all__ = ["MaterialPicker", "photo_stats"]

# target colours (linear-ish RGB in [0, 1]) of common materials
PAINT = np.array([[0.93, 0.92, 0.88], [0.95, 0.95, 0.95], [0.90, 0.86, 0.78], [0.85, 0.85, 0.83],
                  [0.80, 0.84, 0.80], [0.78, 0.83, 0.88], [0.92, 0.84, 0.74], [0.70, 0.72, 0.74],
                  [0.88, 0.80, 0.80], [0.60, 0.66, 0.62]])
WOOD = np.array([[0.72, 0.56, 0.38], [0.60, 0.42, 0.26], [0.45, 0.30, 0.19], [0.80, 0.68, 0.50],
                 [0.35, 0.22, 0.14], [0.66, 0.52, 0.40]])
TILE = np.array([[0.90, 0.90, 0.88], [0.75, 0.74, 0.72], [0.55, 0.55, 0.55], [0.82, 0.76, 0.66],
                 [0.70, 0.45, 0.32], [0.30, 0.30, 0.32], [0.85, 0.87, 0.90]])
CARPET = np.array([[0.55, 0.52, 0.48], [0.40, 0.42, 0.46], [0.62, 0.58, 0.50], [0.35, 0.30, 0.28],
                   [0.50, 0.55, 0.50]])
FACADE = np.array([[0.88, 0.84, 0.74], [0.80, 0.72, 0.58], [0.66, 0.36, 0.28], [0.72, 0.72, 0.70],
                   [0.90, 0.88, 0.84], [0.78, 0.62, 0.46], [0.55, 0.52, 0.50], [0.84, 0.78, 0.66]])
ASPHALT = np.array([[0.22, 0.22, 0.23], [0.30, 0.30, 0.30], [0.18, 0.18, 0.19]])
PAVING = np.array([[0.62, 0.61, 0.58], [0.70, 0.66, 0.60], [0.55, 0.55, 0.56], [0.60, 0.50, 0.45]])


@lru_cache(maxsize=8)
def _stats(root: str, keys: tuple[str, ...]) -> np.ndarray:
    bank = AssetBank.open(root)
    out = np.zeros((len(keys), 6), np.float32)
    for i, k in enumerate(keys):
        t = bank.texture(k, 32).numpy()
        mean = t.reshape(3, -1).mean(1)
        lum = 0.3 * t[0] + 0.59 * t[1] + 0.11 * t[2]
        sat = (mean.max() - mean.min()) / max(float(mean.max()), 1e-3)
        gy, gx = np.abs(np.diff(lum, axis=0)).mean(), np.abs(np.diff(lum, axis=1)).mean()
        out[i] = [*mean, sat, lum.std() / max(float(lum.mean()), 0.05), np.log(max(gy, 1e-4) / max(gx, 1e-4))]
    return out


def photo_stats(bank: AssetBank) -> np.ndarray:
    """``(P, 6)`` per photo crop: mean RGB in [0, 1], saturation of the mean colour
    (``(max - min) / max``), relative contrast (luminance std / mean) and grain (log of the mean
    vertical over the mean horizontal luminance gradient: > 0 for streaks along ``u``), at
    32 x 32 px; cached per bank."""
    return _stats(str(bank.root), tuple(bank.photo_key(i) for i in range(bank.n_photos)))


class MaterialPicker:
    """Draws plausible materials for one scene from ``bank`` with ``rng``."""

    def __init__(self, bank: AssetBank, rng: np.random.Generator) -> None:
        self.bank, self.rng = bank, rng
        self._last = -1
        st = photo_stats(bank)
        self.mean = st[:, :3]
        self.calm = np.flatnonzero(st[:, 4] < 0.15)
        self.smooth = np.flatnonzero(st[:, 4] < 0.07)
        self.grain = st[:, 5]
        streaky = np.flatnonzero((np.abs(st[:, 5]) > 0.4) & (st[:, 4] < 0.25))
        self.wood = streaky if len(streaky) >= 3 else self.calm

    def _pick(self, pool: np.ndarray) -> int | None:
        self._last = int(pool[int(self.rng.integers(len(pool)))]) if len(pool) else -1
        return None if self._last < 0 else self._last

    def colour(self, palette: np.ndarray, jitter: float = 0.04) -> np.ndarray:
        c = palette[int(self.rng.integers(len(palette)))] * self.rng.uniform(0.92, 1.06)
        return np.clip(c + self.rng.normal(0, jitter, 3), 0.05, 1.0)

    def tinted(self, pool: np.ndarray, target: np.ndarray) -> Material:
        """A crop of ``pool`` recoloured to ``target`` (plain ``target`` when the pool is empty)."""
        i = self._pick(pool)
        if i is None:
            return Material(None, tuple(float(c) for c in target))
        lum = float(np.dot(self.mean[i], [0.299, 0.587, 0.114]))
        gain = np.clip(target / max(lum, 0.05), 0.0, 4.0)
        return Material(self.bank.photo_key(i) + GRAY, tuple(float(c) for c in gain))

    def wall(self) -> Material:
        """Paint (plain, half of the walls) or plaster (a crop of little contrast, in the paint's colour)."""
        c = self.colour(PAINT, 0.02)
        u = self.rng.uniform()
        if u < 0.5:
            return Material(None, tuple(float(x) for x in c))
        return self.tinted(self.smooth if u < 0.85 else self.calm, c)

    def ceiling(self) -> Material:
        c = np.clip(self.colour(PAINT[:3], 0.01) * 1.02, 0, 1)
        return Material(None, tuple(float(x) for x in c)) if self.rng.uniform() < 0.7 else self.tinted(self.calm, c)

    def picture(self) -> Material:
        """Any photo crop as it is (pictures on walls, views through windows)."""
        return Material(self.bank.photo_key(int(self.rng.integers(self.bank.n_photos))))

    def facade(self) -> Material:
        return self.tinted(self.calm, self.colour(FACADE, 0.03))

    def floor(self, sa: SceneAssembler, x0: float, y0: float, lx: float, ly: float, z: float = 0.0) -> str:
        """Lay a floor over ``[x0, x0 + lx] x [y0, y0 + ly]`` at height ``z``: planks, tiles,
        carpet or concrete; returns the kind."""
        kind = str(self.rng.choice(["planks", "tiles", "carpet", "concrete"], p=[0.4, 0.3, 0.2, 0.1]))
        if kind == "planks":
            w = self.rng.uniform(0.1, 0.22)
            self.lay(sa, x0, y0, lx, ly, z, (self.rng.uniform(0.8, 2.0), w), self.wood, WOOD, 0.003, 0.5)
        elif kind == "tiles":
            s = float(self.rng.choice([0.2, 0.3, 0.4, 0.6]))
            self.lay(sa, x0, y0, lx, ly, z, (s, s), self.smooth, TILE, self.rng.uniform(0.003, 0.008), 0.0)
        else:
            mat = self.tinted(self.calm, self.colour(CARPET if kind == "carpet" else TILE[1:3]))
            t = self.rng.uniform(0.4, 1.2)
            sa.add(quad_mesh([x0, y0, z], [lx, 0, 0], [0, ly, 0], mat, (t, t), subdiv=2), blocker=False)
        return kind

    def lay(self, sa: SceneAssembler, x0: float, y0: float, lx: float, ly: float, z: float,
            piece: tuple[float, float], pool: np.ndarray, palette: np.ndarray, gap: float, stagger: float,
            along_y: bool | None = None) -> None:
        """Cover the rectangle with ``piece``-sized quads (``piece[0]`` along the rows) separated
        by ``gap`` metres of grout (a plane 3 mm below ``z``), rows offset by ``stagger`` of a piece."""
        if along_y is None:
            along_y = bool(self.rng.uniform() < 0.5)
        base = self.colour(palette)
        base_mat = self.tinted(pool, base)
        grout = Material(None, tuple(float(c) for c in np.clip(base * 0.55 + 0.12, 0, 1)))
        sa.add(quad_mesh([x0, y0, z - 0.003], [lx, 0, 0], [0, ly, 0], grout), blocker=False)
        L, W = (ly, lx) if along_y else (lx, ly)
        pl, pw = piece
        rows = np.arange(int(np.ceil(W / pw)))
        offs = -((rows * stagger) % 1.0) * pl if stagger else np.zeros(len(rows))
        n_along = int(np.ceil(L / pl)) + 1
        a = offs[:, None] + np.arange(n_along)[None] * pl  # (R, N) piece starts
        s0, s1 = np.maximum(a, 0.0), np.minimum(a + pl, L)
        w0 = np.broadcast_to((rows * pw)[:, None], a.shape)
        w1 = np.minimum(w0 + pw, W)
        keep = (s1 - s0 > gap * 2) & (w1 - w0 > gap * 2)
        s0, s1, w0, w1 = (v[keep] + d for v, d in ((s0, gap / 2), (s1, -gap / 2), (w0, gap / 2), (w1, -gap / 2)))
        Q = len(s0)
        if Q == 0:
            return
        # corners (s, w) in order (0,0), (1,0), (0,1), (1,1) as quad_mesh lays them out
        cs = np.stack([s0, s1, s0, s1], 1)
        cw = np.stack([w0, w0, w1, w1], 1)
        xy = (np.stack([cw, cs], -1) if along_y else np.stack([cs, cw], -1)) + np.array([x0, y0])
        verts = np.concatenate([xy, np.full((Q, 4, 1), z)], -1).reshape(-1, 3)
        t = max(pl, 0.6)
        uv = np.stack([(cs - s0[:, None]) / t, (cw - w0[:, None]) / t], -1) + self.rng.uniform(0, 1, (Q, 1, 2))
        if base_mat.texture is not None and self.grain[self._last] < 0:  # streaks along v: turn them along the piece
            uv = uv[..., ::-1]
        base4 = 4 * np.arange(Q)[:, None]
        faces = np.concatenate([base4 + [0, 1, 3], base4 + [0, 3, 2]], 1).reshape(-1, 3)
        k = 6
        tints = [Material(base_mat.texture, tuple(float(c) for c in np.clip(
            np.array(base_mat.color) * self.rng.uniform(0.9, 1.1) * (1 + self.rng.normal(0, 0.03, 3)), 0, 3)))
            for _ in range(k)]
        fm = np.repeat(self.rng.integers(0, k, Q), 2)
        sa.add(Mesh(verts.astype(np.float32), faces.astype(np.int64), uv.reshape(-1, 2).astype(np.float32), fm,
                    tints), blocker=False)
