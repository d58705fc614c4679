"""Procedural scene layouts: rooms, turntables, streets and clutter from analytic primitives.

Layouts (``LAYOUTS``):

* ``room``: an enclosed room with tables (thin legs), shelves, cabinets, lamps on thin poles,
  pictures (photo textures) on the walls, balls and vases.
* ``turntable``: one composite object on a pedestal in the middle of a large backdrop room; the
  cameras orbit it (object-centric captures).
* ``street``: a long corridor of building facades with sidewalks, lamp posts, sign poles, cars
  and trees; open sky above (depth 0 there).
* ``clutter``: a walled yard full of randomly oriented primitives, sticks, wires and plates.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from .scenes import Scene, SceneBuilder
from .textures import TextureBank

__all__ = ["LAYOUTS", "make_scene"]

LAYOUTS: tuple[str, ...] = ("room", "turntable", "street", "clutter")


# ------------------------------------------------------------------------------ pieces


def _enclosure(sb: SceneBuilder, lx: float, ly: float, hz: float, floor_kinds=None, wall_kinds=None,
               ceiling: bool = True, t: float = 0.1) -> None:
    """Floor, four walls and (optionally) a ceiling around ``[-lx/2, lx/2] x [-ly/2, ly/2] x [0, hz]``."""
    fm = sb.material(floor_kinds or ("tiles", "wood", "checker", "cells", "noise", "marble"), photo=False)
    sb.box((0, 0, -t / 2), (lx / 2 + t, ly / 2 + t, t / 2), mat=fm, enclosing=True)
    if ceiling:
        cm = sb.material(("noise", "spectral", "tiles", "gradient"), tint_strength=0.1, photo=False)
        sb.box((0, 0, hz + t / 2), (lx / 2 + t, ly / 2 + t, t / 2), mat=cm, enclosing=True)
    same = sb.rng.uniform() < 0.5
    wm = sb.material(wall_kinds, photo=False)
    for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        m = wm if same else sb.material(wall_kinds, photo=False)
        if sx:
            sb.box((sx * (lx / 2 + t / 2), 0, hz / 2), (t / 2, ly / 2 + t, hz / 2), mat=m, enclosing=True)
        else:
            sb.box((0, sy * (ly / 2 + t / 2), hz / 2), (lx / 2 + t, t / 2, hz / 2), mat=m, enclosing=True)


def _table(sb: SceneBuilder, x: float, y: float, yaw: float) -> None:
    rng = sb.rng
    w, d, h = rng.uniform(0.5, 1.6), rng.uniform(0.4, 0.9), rng.uniform(0.45, 0.8)
    top_t = rng.uniform(0.02, 0.05)
    sb.box((x, y, h - top_t / 2), (w / 2, d / 2, top_t / 2), yaw, mat=sb.material(("wood", "marble", "noise")))
    leg_r = rng.uniform(0.012, 0.03)
    lm = sb.material(("noise", "wood", "gradient"))
    rot = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    for a, b in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        off = rot @ np.array([a * (w / 2 - 2 * leg_r), b * (d / 2 - 2 * leg_r)])
        if rng.uniform() < 0.5:
            sb.cylinder((x + off[0], y + off[1], (h - top_t) / 2), leg_r, (h - top_t) / 2, mat=lm)
        else:
            sb.box((x + off[0], y + off[1], (h - top_t) / 2), (leg_r, leg_r, (h - top_t) / 2), yaw, mat=lm)
    for _ in range(int(rng.integers(0, 4))):  # things on the table
        px, py = rot @ np.array([rng.uniform(-w / 3, w / 3), rng.uniform(-d / 3, d / 3)])
        s = rng.uniform(0.04, 0.15)
        if rng.uniform() < 0.4:
            sb.sphere((x + px, y + py, h + s), s)
        elif rng.uniform() < 0.5:
            sb.cylinder((x + px, y + py, h + s), s * 0.6, s)
        else:
            sb.box((x + px, y + py, h + s / 2), (s, s * 0.7, s / 2), rng.uniform(0, math.pi))


def _shelf(sb: SceneBuilder, x: float, y: float, yaw: float) -> None:
    rng = sb.rng
    w, d, h = rng.uniform(0.6, 1.8), rng.uniform(0.25, 0.45), rng.uniform(1.0, 2.2)
    t = rng.uniform(0.015, 0.03)
    m = sb.material(("wood", "noise", "gradient"))
    rot = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    for side in (-1, 1):
        ox, oy = rot @ np.array([side * (w / 2 - t / 2), 0])
        sb.box((x + ox, y + oy, h / 2), (t / 2, d / 2, h / 2), yaw, mat=m)
    n = int(rng.integers(2, 6))
    for k in range(n + 1):
        z = t / 2 + k * (h - t) / n
        sb.box((x, y, z), (w / 2, d / 2, t / 2), yaw, mat=m)
        if k < n:
            for _ in range(int(rng.integers(0, 4))):  # books / boxes
                ox, oy = rot @ np.array([rng.uniform(-w / 2.5, w / 2.5), 0])
                bh = rng.uniform(0.05, (h - t) / n * 0.8)
                sb.box((x + ox, y + oy, z + t / 2 + bh / 2), (rng.uniform(0.02, 0.12), d / 2.5, bh / 2), yaw)


def _lamp(sb: SceneBuilder, x: float, y: float, height: float) -> None:
    rng = sb.rng
    r = rng.uniform(0.008, 0.025)
    sb.cylinder((x, y, 0.01), rng.uniform(0.1, 0.2), 0.01)
    sb.segment((x, y, 0.02), (x, y, height), r)
    if rng.uniform() < 0.5:
        sb.sphere((x, y, height + 0.1), rng.uniform(0.08, 0.2))
    else:
        sb.cylinder((x, y, height + 0.08), rng.uniform(0.1, 0.25), rng.uniform(0.06, 0.15))


def _composite_object(sb: SceneBuilder, base: np.ndarray, size: float) -> float:
    """A stack of 2-6 random primitives standing at ``base``; returns its top height."""
    rng = sb.rng
    z = base[2]
    for _ in range(int(rng.integers(2, 7))):
        kind = rng.choice(["box", "sphere", "cyl", "ring"], p=[0.35, 0.25, 0.3, 0.1])
        s = size * rng.uniform(0.3, 0.8)
        dx, dy = rng.normal(0, size * 0.15, size=2)
        if kind == "box":
            h = np.array([s * rng.uniform(0.4, 1), s * rng.uniform(0.4, 1), s * rng.uniform(0.2, 1)]) / 2
            sb.box((base[0] + dx, base[1] + dy, z + h[2]), h, rng.uniform(0, math.pi))
            z += 2 * h[2]
        elif kind == "sphere":
            sb.sphere((base[0] + dx, base[1] + dy, z + s / 2), s / 2)
            z += s * 0.9
        elif kind == "cyl":
            hh = s * rng.uniform(0.2, 0.8)
            sb.cylinder((base[0] + dx, base[1] + dy, z + hh), s * rng.uniform(0.15, 0.5), hh)
            z += 2 * hh
        else:  # a handle / thin ring-like bar across the object
            a = np.array([base[0] - s, base[1] + dy, z + s * 0.3])
            b = np.array([base[0] + s, base[1] + dy, z + s * 0.3])
            sb.segment(a, b, s * rng.uniform(0.02, 0.06))
    return z


# ------------------------------------------------------------------------------ layouts


def _room(sb: SceneBuilder) -> Scene:
    rng = sb.rng
    lx, ly, hz = rng.uniform(3.5, 10), rng.uniform(3, 8), rng.uniform(2.4, 3.6)
    _enclosure(sb, lx, ly, hz, wall_kinds=("noise", "spectral", "stripes", "bricks", "tiles", "gradient",
                                           "dots", "marble", "wood"))
    margin = 0.3
    n_items = int(rng.integers(3, 10))
    for _ in range(n_items):
        kind = rng.choice(["table", "shelf", "cabinet", "lamp", "ball", "vase", "column"],
                          p=[0.25, 0.15, 0.2, 0.12, 0.1, 0.1, 0.08])
        x, y = rng.uniform(-lx / 2 + margin, lx / 2 - margin), rng.uniform(-ly / 2 + margin, ly / 2 - margin)
        if kind == "table":
            _table(sb, x, y, rng.uniform(0, math.pi))
        elif kind in ("shelf", "cabinet"):
            wall = int(rng.integers(4))
            yaw = [0, math.pi / 2, math.pi, -math.pi / 2][wall]
            d = 0.25
            pos = [(x, ly / 2 - d), (lx / 2 - d, y), (x, -ly / 2 + d), (-lx / 2 + d, y)][wall]
            if kind == "shelf":
                _shelf(sb, pos[0], pos[1], yaw)
            else:
                h = np.array([rng.uniform(0.3, 0.9), 0.22, rng.uniform(0.3, 1.0)])
                sb.box((pos[0], pos[1], h[2]), h, yaw)
        elif kind == "lamp":
            _lamp(sb, x, y, rng.uniform(1.2, 1.9))
        elif kind == "ball":
            r = rng.uniform(0.1, 0.4)
            sb.sphere((x, y, r), r)
        elif kind == "vase":
            hh = rng.uniform(0.15, 0.5)
            sb.cylinder((x, y, hh), rng.uniform(0.08, 0.25), hh)
        else:
            sb.cylinder((x, y, hz / 2), rng.uniform(0.08, 0.3), hz / 2)
    for _ in range(int(rng.integers(0, 4))):  # pictures on the walls (thin slabs)
        w, h = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.0)
        z = rng.uniform(1.2, hz - 0.5)
        t = 0.015
        wall = int(rng.integers(4))
        mat = sb.material(photo=True, tint_strength=0.05)
        mat = (mat[0], (2 * w / 2, -2 * h / 2), (0.0, 0.0), mat[3])
        if wall == 0:
            sb.box((rng.uniform(-lx / 3, lx / 3), ly / 2 - t, z), (w / 2, t, h / 2), mat=mat)
        elif wall == 1:
            sb.box((rng.uniform(-lx / 3, lx / 3), -ly / 2 + t, z), (w / 2, t, h / 2), mat=mat)
        elif wall == 2:
            sb.box((lx / 2 - t, rng.uniform(-ly / 3, ly / 3), z), (t, w / 2, h / 2), mat=mat)
        else:
            sb.box((-lx / 2 + t, rng.uniform(-ly / 3, ly / 3), z), (t, w / 2, h / 2), mat=mat)
    targets = np.column_stack([rng.uniform(-lx / 3, lx / 3, 2), rng.uniform(-ly / 3, ly / 3, 2),
                               rng.uniform(0.3, 1.5, 2)])
    furniture = sb.object_centres()
    if len(furniture):  # mostly look at the furniture, as people filming a room do
        targets = np.concatenate([targets, furniture[rng.choice(len(furniture), size=6)]])
    light = (rng.uniform(-lx / 3, lx / 3), rng.uniform(-ly / 3, ly / 3), hz - 0.3)
    return sb.build("room", (-lx / 2 + 0.4, -ly / 2 + 0.4, 0.8), (lx / 2 - 0.4, ly / 2 - 0.4, min(2.0, hz - 0.3)),
                    targets, light, rng.uniform(0.25, 0.5), max(lx, ly))


def _turntable(sb: SceneBuilder) -> Scene:
    rng = sb.rng
    size = rng.uniform(0.3, 1.2)
    room = rng.uniform(8, 16) * size + 4
    _enclosure(sb, room, room, room * 0.6, ceiling=True)
    ped_h = rng.uniform(0.0, 0.8) * size
    if ped_h > 0.05:
        if rng.uniform() < 0.5:
            sb.cylinder((0, 0, ped_h / 2), size * rng.uniform(0.5, 0.9), ped_h / 2)
        else:
            sb.box((0, 0, ped_h / 2), (size * 0.7, size * 0.7, ped_h / 2), rng.uniform(0, math.pi))
    top = _composite_object(sb, np.array([0.0, 0.0, ped_h]), size)
    for _ in range(int(rng.integers(0, 6))):  # distractors on the floor
        a, d = rng.uniform(0, 2 * math.pi), rng.uniform(1.5, 4) * size
        _composite_object(sb, np.array([d * math.cos(a), d * math.sin(a), 0.0]), size * rng.uniform(0.3, 0.7))
    centre = (0.0, 0.0, (ped_h + top) / 2)
    reach = 4 * size
    light = (rng.uniform(-1, 1) * reach, rng.uniform(-1, 1) * reach, top + rng.uniform(1, 3) * size)
    return sb.build("turntable", (-reach, -reach, ped_h * 0.5 + 0.2 * size), (reach, reach, top + 2 * size),
                    [centre], light, rng.uniform(0.3, 0.55), room)


def _street(sb: SceneBuilder) -> Scene:
    rng = sb.rng
    length = rng.uniform(60, 120)
    road_w = rng.uniform(5, 12)
    walk_w = rng.uniform(1.5, 4)
    half = road_w / 2 + walk_w
    road = sb.material(("noise", "spectral", "cells"), tile=rng.uniform(1, 4), photo=False, max_saturation=0.25)
    road = road[:3] + ((rng.uniform(0.3, 0.7),) * 3,)  # asphalt: a darkened grey
    sb.box((0, 0, -0.05), (length / 2, road_w / 2, 0.05), mat=road)
    for side in (-1, 1):
        sb.box((0, side * (road_w / 2 + walk_w / 2), 0.0), (length / 2, walk_w / 2, 0.12),
               mat=sb.material(("tiles", "cells", "bricks", "checker"), tile=rng.uniform(0.5, 2), photo=False,
                               max_saturation=0.4))
        x = -length / 2
        while x < length / 2:  # building facades
            w = rng.uniform(5, 16)
            h = rng.uniform(5, 25)
            depth = rng.uniform(6, 12)
            storey = rng.uniform(2.8, 3.6)
            mat = sb.material(("facade",), photo=False)
            mat = (mat[0], (storey * rng.uniform(0.6, 1.2), -storey), (0.0, 0.0), mat[3])
            setback = rng.uniform(0, 1.5) if rng.uniform() < 0.4 else 0.0
            sb.box((x + w / 2, side * (half + setback + depth / 2), h / 2), (w / 2, depth / 2, h / 2), mat=mat)
            x += w + (rng.uniform(0.5, 6) if rng.uniform() < 0.2 else 0.0)
        pole_gap = rng.uniform(6, 15)
        pm = sb.material(("noise", "gradient"), photo=False)
        for px in np.arange(-length / 2 + rng.uniform(0, pole_gap), length / 2, pole_gap):
            py = side * (road_w / 2 + 0.4)
            ph = rng.uniform(3.5, 7)
            sb.segment((px, py, 0), (px, py, ph), rng.uniform(0.04, 0.1), mat=pm)
            if rng.uniform() < 0.5:  # lamp arm
                sb.segment((px, py, ph), (px, py - side * rng.uniform(0.8, 2), ph + 0.2), 0.03, mat=pm)
            else:  # sign: a thin slab
                sb.box((px, py, ph * 0.6), (0.02, rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5)))
        for tx in np.arange(-length / 2 + rng.uniform(0, 10), length / 2, rng.uniform(8, 20)):
            if rng.uniform() < 0.6:
                ty = side * (road_w / 2 + walk_w * rng.uniform(0.4, 0.8))
                th = rng.uniform(2, 4)
                sb.segment((tx, ty, 0), (tx, ty, th), rng.uniform(0.08, 0.2),
                           mat=sb.material(("wood", "noise"), tile=0.5, photo=False))
                sb.sphere((tx, ty, th + rng.uniform(0.5, 1.2)), rng.uniform(1.0, 2.2),
                          mat=sb.material(("noise", "spectral", "cells"), tile=0.8, photo=False))
    for _ in range(int(rng.integers(0, 10))):  # cars
        cx = rng.uniform(-length / 2, length / 2)
        cy = rng.choice([-1, 1]) * rng.uniform(0.5, road_w / 2 - 1.0)
        L, W, H = rng.uniform(3.5, 5), rng.uniform(1.6, 2.0), rng.uniform(0.7, 1.0)
        m = sb.material(("gradient", "noise", "spectral"))
        sb.box((cx, cy, 0.3 + H / 2), (L / 2, W / 2, H / 2), mat=m)
        sb.box((cx, cy, 0.3 + H + 0.35), (L / 3.2, W / 2.2, 0.35), mat=sb.material(("gradient", "noise")))
        for a, b in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            sb.cylinder((cx + a * L / 3, cy + b * W / 2, 0.33), 0.33, 0.1, rot=Rotation.from_euler("x", 90, degrees=True).as_matrix(),
                        mat=sb.material(("noise",), tint_strength=0.0))
    xs = np.linspace(-length / 3, length / 3, 8)
    targets = np.column_stack([xs, rng.uniform(-road_w / 2, road_w / 2, 8), rng.uniform(1, 4, 8)])
    light = (rng.uniform(-length, length), rng.uniform(-50, 50), rng.uniform(60, 200))
    return sb.build("street", (-length / 3, -road_w / 2 - walk_w * 0.6, 1.2), (length / 3, road_w / 2 + walk_w * 0.6, 3.0),
                    targets, light, rng.uniform(0.35, 0.6), 1e4)


def _clutter(sb: SceneBuilder) -> Scene:
    rng = sb.rng
    lx, ly = rng.uniform(6, 14), rng.uniform(6, 14)
    hz = rng.uniform(2.5, 6)
    _enclosure(sb, lx, ly, hz, ceiling=rng.uniform() < 0.5)
    r_in = min(lx, ly) / 4
    for _ in range(int(rng.integers(15, 45))):
        kind = rng.choice(["box", "sphere", "cyl", "stick", "plate"], p=[0.3, 0.15, 0.2, 0.25, 0.1])
        p = np.array([rng.uniform(-r_in, r_in), rng.uniform(-r_in, r_in), 0.0])
        s = float(np.exp(rng.uniform(np.log(0.08), np.log(0.8))))
        rot = Rotation.random(random_state=rng).as_matrix() if rng.uniform() < 0.6 else \
            Rotation.from_euler("z", rng.uniform(0, 2 * math.pi)).as_matrix()
        p[2] = rng.uniform(0, 1.5) if rng.uniform() < 0.6 else s / 2
        if kind == "box":
            sb.box(p, s * rng.uniform(0.3, 1, size=3) / 2, rot=rot)
        elif kind == "sphere":
            sb.sphere(p, s / 2)
        elif kind == "cyl":
            sb.cylinder(p, s * rng.uniform(0.1, 0.5), s * rng.uniform(0.2, 1), rot=rot)
        elif kind == "stick":
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            ln = rng.uniform(0.4, 2.5)
            sb.segment(p - d * ln / 2, p + d * ln / 2, rng.uniform(0.004, 0.025))
        else:
            sb.box(p, np.array([s * rng.uniform(0.6, 1.5), s * rng.uniform(0.6, 1.5), rng.uniform(0.003, 0.01)]), rot=rot)
    targets = np.column_stack([rng.uniform(-r_in / 2, r_in / 2, 5), rng.uniform(-r_in / 2, r_in / 2, 5),
                               rng.uniform(0.2, 1.2, 5)])
    light = (rng.uniform(-lx / 3, lx / 3), rng.uniform(-ly / 3, ly / 3), hz - 0.3 if hz < 6 else 5.0)
    return sb.build("clutter", (-lx / 2 + 0.5, -ly / 2 + 0.5, 0.3), (lx / 2 - 0.5, ly / 2 - 0.5, min(hz - 0.3, 3.0)),
                    targets, light, rng.uniform(0.25, 0.5), max(lx, ly))


_BUILDERS = {"room": _room, "turntable": _turntable, "street": _street, "clutter": _clutter}


def make_scene(layout: str, rng: np.random.Generator, bank: TextureBank, photo_prob: float = 0.15,
               plain_prob: float = 0.0) -> Scene:
    """Generate one scene of the given layout (a key of :data:`LAYOUTS`), determined by ``rng``
    (``photo_prob``, ``plain_prob``: see :meth:`SceneBuilder.material`)."""
    if layout not in _BUILDERS:
        raise ValueError(f"unknown synthetic layout {layout!r}; choose from {LAYOUTS}")
    return _BUILDERS[layout](SceneBuilder(rng, bank, photo_prob, plain_prob))
