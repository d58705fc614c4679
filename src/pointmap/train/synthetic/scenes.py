"""Procedural scenes: analytic primitives (boxes, spheres, capped cylinders) with materials, and
the builder that layouts (:mod:`~pointmap.train.synthetic.layouts`) place them with.

World frame: metres, ``z`` up, the ground at ``z = 0``. Every primitive carries a material: a
texture index into a :class:`~pointmap.train.synthetic.textures.TextureBank`, a tile size in metres
along its two texture axes (negative ``v`` size flips the texture so it reads upright on walls),
a texture offset and an RGB tint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from .textures import TextureBank

__all__ = ["Scene", "SceneBuilder"]


@dataclass
class Scene:
    """Primitives of one scene (numpy, float32) plus hints for placing cameras.

    Box ``i``: points ``c + R @ x`` with ``|x_k| <= h_k``. Sphere ``i``: ``|p - c| <= r``.
    Cylinder ``i``: points ``c + R @ x`` with ``x_0^2 + x_1^2 <= r^2`` and ``|x_2| <= hh``.

    Attributes:
        box_c, box_R, box_h: ``(Nb, 3)``, ``(Nb, 3, 3)`` (world-from-local), ``(Nb, 3)`` half sizes.
        sph_c, sph_r: ``(Ns, 3)``, ``(Ns,)``.
        cyl_c, cyl_R, cyl_r, cyl_hh: ``(Nc, 3)``, ``(Nc, 3, 3)``, ``(Nc,)``, ``(Nc,)``.
        mat_tex: ``(N,)`` int64 texture indices for all primitives in the order boxes, spheres,
            cylinders (``N = Nb + Ns + Nc``).
        mat_scale: ``(N, 2)`` tile size in metres along (u, v).
        mat_offset: ``(N, 2)`` texture offset in tiles.
        mat_tint: ``(N, 3)`` RGB multiplier.
        layout: the layout name.
        cam_lo, cam_hi: ``(3,)`` bounds of the free space where camera centres may be placed.
        targets: ``(K, 3)`` points of interest cameras look at.
        light: ``(3,)`` position of the scene's point light.
        light_color: ``(3,)``; ambient: ambient fraction in [0, 1]; light_range: metres of falloff.
        blockers: indices of the boxes/cylinders/spheres camera centres must stay out of (all
            non-enclosing primitives), as ``(type, index)`` pairs.
    """

    box_c: np.ndarray
    box_R: np.ndarray
    box_h: np.ndarray
    sph_c: np.ndarray
    sph_r: np.ndarray
    cyl_c: np.ndarray
    cyl_R: np.ndarray
    cyl_r: np.ndarray
    cyl_hh: np.ndarray
    mat_tex: np.ndarray
    mat_scale: np.ndarray
    mat_offset: np.ndarray
    mat_tint: np.ndarray
    layout: str
    cam_lo: np.ndarray
    cam_hi: np.ndarray
    targets: np.ndarray
    light: np.ndarray
    light_color: np.ndarray
    ambient: float
    light_range: float
    enclosing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def thickness(self) -> np.ndarray:
        """``(N,)`` smallest full extent of each primitive in metres (boxes, spheres, cylinders)."""
        return np.concatenate([2 * self.box_h.min(axis=1), 2 * self.sph_r,
                               2 * np.minimum(self.cyl_r, self.cyl_hh)]).astype(np.float32)

    def extent(self) -> float:
        """Diagonal of the bounding box of all non-enclosing primitives, in metres."""
        pts = [self.box_c[~self.enclosing[: len(self.box_c)]], self.sph_c, self.cyl_c]
        pts = np.concatenate([p for p in pts if len(p)])
        return float(np.linalg.norm(pts.max(0) - pts.min(0)))

    def contains(self, p: np.ndarray, margin: float) -> np.ndarray:
        """``(M,)`` bool: whether points ``p`` ``(M, 3)`` lie within ``margin`` metres of a
        non-enclosing primitive (so a camera there would sit inside or against it)."""
        inside = np.zeros(len(p), dtype=bool)
        nb = len(self.box_c)
        for i in range(nb):
            if self.enclosing[i]:
                continue
            q = (p - self.box_c[i]) @ self.box_R[i]
            inside |= np.all(np.abs(q) <= self.box_h[i] + margin, axis=1)
        for c, r in zip(self.sph_c, self.sph_r):
            inside |= np.linalg.norm(p - c, axis=1) <= r + margin
        for c, rot, r, hh in zip(self.cyl_c, self.cyl_R, self.cyl_r, self.cyl_hh):
            q = (p - c) @ rot
            inside |= (np.linalg.norm(q[:, :2], axis=1) <= r + margin) & (np.abs(q[:, 2]) <= hh + margin)
        return inside


class SceneBuilder:
    """Accumulates primitives and their materials; :meth:`build` freezes them into a :class:`Scene`."""

    def __init__(self, rng: np.random.Generator, bank: TextureBank, photo_prob: float = 0.15,
                 plain_prob: float = 0.0) -> None:
        self.rng = rng
        self.bank = bank
        self.photo_prob = photo_prob
        self.plain_prob = plain_prob
        self.boxes: list[tuple] = []
        self.spheres: list[tuple] = []
        self.cyls: list[tuple] = []
        self._procedural = [i for i, k in enumerate(bank.kinds) if k not in ("photo", "plain")]
        self._photos = bank.indices_of("photo")
        self._plain = bank.indices_of("plain")

    # -- materials ------------------------------------------------------------------------
    def material(self, kinds: tuple[str, ...] | None = None, tile: float | None = None,
                 tint_strength: float = 0.25, photo: bool | None = None, max_saturation: float = 1.0) -> tuple:
        """A random material: texture of one of ``kinds`` (any procedural kind if ``None``) whose
        mean saturation is at most ``max_saturation``, or a photo with probability ``photo_prob``
        (``photo`` forces the choice); tile size in metres (random if ``None``). Unless a photo is
        forced, the texture is a nearly uniform ``"plain"`` one with probability ``plain_prob``
        (when the bank has some; no random number is drawn for it when ``plain_prob`` is 0)."""
        rng = self.rng
        if photo is not True and self.plain_prob > 0 and self._plain and rng.uniform() < self.plain_prob:
            tex = int(rng.choice(self._plain))
        elif ((rng.uniform() < self.photo_prob) if photo is None else photo) and self._photos:
            tex = int(rng.choice(self._photos))
        else:
            pool = [i for i in self._procedural if (kinds is None or self.bank.kinds[i] in kinds)
                    and self.bank.saturation[i] <= max_saturation]
            tex = int(rng.choice(pool or self._procedural))
        t = tile if tile is not None else float(np.exp(rng.uniform(np.log(0.2), np.log(2.5))))
        aspect = float(np.exp(rng.uniform(-0.2, 0.2)))
        scale = (t * aspect, -t / aspect)
        offset = tuple(rng.uniform(0, 1, size=2))
        tint = tuple(np.clip(1 + rng.normal(0, tint_strength, size=3) * 0.5, 0.4, 1.6))
        return tex, scale, offset, tint

    # -- primitives -----------------------------------------------------------------------
    def box(self, center, half, yaw: float = 0.0, rot: np.ndarray | None = None, mat: tuple | None = None,
            enclosing: bool = False) -> None:
        """Add a box with half sizes ``half`` (metres), rotated by ``yaw`` about z or by ``rot``."""
        rot = Rotation.from_euler("z", yaw).as_matrix() if rot is None else rot
        self.boxes.append((center, rot, half, mat or self.material(), enclosing))

    def sphere(self, center, radius: float, mat: tuple | None = None) -> None:
        self.spheres.append((center, radius, mat or self.material()))

    def cylinder(self, center, radius: float, half_height: float, rot: np.ndarray | None = None,
                 mat: tuple | None = None) -> None:
        """Add a capped cylinder whose axis is local z (vertical unless ``rot`` is given)."""
        self.cyls.append((center, np.eye(3) if rot is None else rot, radius, half_height,
                          mat or self.material()))

    def segment(self, a, b, radius: float, mat: tuple | None = None) -> None:
        """Add a thin cylinder (pole, stick, wire) from point ``a`` to point ``b``."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        axis = b - a
        length = float(np.linalg.norm(axis))
        rot = _rotation_z_to(axis / max(length, 1e-9))
        self.cylinder((a + b) / 2, radius, length / 2, rot, mat)

    def object_centres(self) -> np.ndarray:
        """``(M, 3)`` centres of the primitives added so far, enclosures excluded."""
        pts = [b[0] for b in self.boxes if not b[4]] + [s[0] for s in self.spheres] + [c[0] for c in self.cyls]
        return np.array(pts, dtype=float).reshape(-1, 3)

    # -- freeze ---------------------------------------------------------------------------
    def build(self, layout: str, cam_lo, cam_hi, targets, light, ambient: float,
              light_range: float) -> Scene:
        rng = self.rng
        f32 = np.float32

        def arr(items, k, shape):
            return np.array([it[k] for it in items], dtype=f32).reshape(shape)

        mats = [b[3] for b in self.boxes] + [s[2] for s in self.spheres] + [c[4] for c in self.cyls]
        temp = rng.uniform(-1, 1)
        light_color = np.array([1 + 0.12 * temp, 1.0, 1 - 0.12 * temp], dtype=f32) * rng.uniform(0.9, 1.15)
        return Scene(
            box_c=arr(self.boxes, 0, (-1, 3)), box_R=arr(self.boxes, 1, (-1, 3, 3)),
            box_h=arr(self.boxes, 2, (-1, 3)),
            sph_c=arr(self.spheres, 0, (-1, 3)), sph_r=arr(self.spheres, 1, (-1,)),
            cyl_c=arr(self.cyls, 0, (-1, 3)), cyl_R=arr(self.cyls, 1, (-1, 3, 3)),
            cyl_r=arr(self.cyls, 2, (-1,)), cyl_hh=arr(self.cyls, 3, (-1,)),
            mat_tex=np.array([m[0] for m in mats], dtype=np.int64),
            mat_scale=np.array([m[1] for m in mats], dtype=f32).reshape(-1, 2),
            mat_offset=np.array([m[2] for m in mats], dtype=f32).reshape(-1, 2),
            mat_tint=np.array([m[3] for m in mats], dtype=f32).reshape(-1, 3),
            layout=layout, cam_lo=np.asarray(cam_lo, f32), cam_hi=np.asarray(cam_hi, f32),
            targets=np.asarray(targets, f32).reshape(-1, 3), light=np.asarray(light, f32),
            light_color=light_color, ambient=float(ambient), light_range=float(light_range),
            enclosing=np.array([b[4] for b in self.boxes] + [False] * (len(self.spheres) + len(self.cyls)),
                               dtype=bool),
        )


def _rotation_z_to(axis: np.ndarray) -> np.ndarray:
    """A rotation matrix taking local +z to the unit vector ``axis``."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, axis)
    s, c = np.linalg.norm(v), float(np.dot(z, axis))
    if s < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    return Rotation.from_rotvec(v / s * math.atan2(s, c)).as_matrix()
