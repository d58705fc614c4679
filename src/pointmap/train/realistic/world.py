"""World-like scenes from an asset bank: furnished rooms and streets of buildings.

World frame: metres, ``z`` up, the floor (or the road) at ``z = 0``.

* :func:`world_room`: a room of one kind (living room, bedroom, kitchen, bathroom, office) with a
  floor of planks, tiles, carpet or concrete, painted or plastered walls with skirting boards, a
  plain ceiling, framed pictures and windows (a photograph behind a frame with glazing bars),
  maybe a door; furniture of the room's kind from the bank at its catalogue size, upright on the
  floor, most of it with its back to a wall, its own textures; small objects on tables, desks and
  counters; a ceiling light of a warm or daylight colour.
* :func:`world_street`: a road with a dashed centre line between raised paved sidewalks, rows of
  buildings whose street facades carry rows of framed windows (glass reflecting a darkened
  photograph) and shop fronts, parked vehicles, trees, benches and people from the bank, under
  the sky (depth 0), lit by the sun.
"""

from __future__ import annotations

import math

import numpy as np

from .bank import AssetBank
from .materials import ASPHALT, PAVING, MaterialPicker
from .meshes import Material, MeshScene, SceneAssembler, box_mesh, merge_meshes, quad_mesh
from .placement import place_on_floor, yaw_matrix

__all__ = ["ROOM_KINDS", "decorate_walls", "room_shell", "world_room", "world_street"]

#: Room kinds and the bank categories their furniture comes from.
ROOM_KINDS: dict[str, tuple[str, ...]] = {"living": ("Living room",), "bedroom": ("Bedroom",),
                                          "kitchen": ("Kitchen",), "bathroom": ("Bathroom",),
                                          "office": ("Office",)}
_WALL_WORDS = ("wall", "hanging", "hood", "ceiling", "curtain", "mirror", "clock", "picture")
_SURFACE_WORDS = ("table", "desk", "counter", "cabinet", "dresser", "chest", "sideboard", "nightstand", "bench")


def _models(bank: AssetBank, cats: tuple[str, ...], lo: float, hi: float) -> list[int]:
    """Models of ``cats`` (all if ``None``) sized ``lo``-``hi`` m that stand on the floor (no doors,
    windows or wall-mounted things)."""
    return [i for i in bank.models_where(cats, max_size=hi, min_size=lo)
            if not bank.manifest["models"][i].get("door_or_window")
            and not any(w in bank.manifest["models"][i]["name"].lower() for w in _WALL_WORDS)]


def _wall_quad(side: int, lx: float, ly: float, s: float, z: float, w: float, h: float, off: float
               ) -> tuple[list[float], list[float]]:
    """Corner (top left seen from inside) and width edge of a ``w x h`` rectangle on wall
    ``side`` (0: y = -ly/2, 1: x = +lx/2, 2: y = +ly/2, 3: x = -lx/2) centred at ``s`` along the
    wall, top at ``z + h``, ``off`` metres in front of it."""
    if side == 0:
        return [s - w / 2, -ly / 2 + off, z + h], [w, 0, 0]
    if side == 2:
        return [s + w / 2, ly / 2 - off, z + h], [-w, 0, 0]
    if side == 1:
        return [lx / 2 - off, s - w / 2, z + h], [0, w, 0]
    return [-lx / 2 + off, s + w / 2, z + h], [0, -w, 0]


def _framed(mp: MaterialPicker, side: int, lx: float, ly: float, s: float, z: float, w: float, h: float,
            window: bool) -> list:
    """A picture (or, with ``window``, a view through a window with glazing bars) in a frame."""
    fw = 0.05 if not window else 0.08
    frame = Material(None, tuple(float(c) for c in (mp.colour(np.array([[0.95, 0.95, 0.93], [0.2, 0.18, 0.16],
                                                                          [0.55, 0.4, 0.25]]), 0.02))))
    c, e = _wall_quad(side, lx, ly, s, z - fw, w + 2 * fw, h + 2 * fw, 0.01)
    parts = [quad_mesh(c, e, [0, 0, -(h + 2 * fw)], frame)]
    c, e = _wall_quad(side, lx, ly, s, z, w, h, 0.015)
    pic = mp.picture()
    if window:
        pic = Material(pic.texture, (1.15, 1.15, 1.2))
    parts.append(quad_mesh(c, e, [0, 0, -h], pic, (w, h)))
    if window:  # a vertical and a horizontal glazing bar
        c, e = _wall_quad(side, lx, ly, s, z, 0.04, h, 0.02)
        parts.append(quad_mesh(c, e, [0, 0, -h], frame))
        c, e = _wall_quad(side, lx, ly, s, z + h / 2 - 0.02, w, 0.04, 0.02)
        parts.append(quad_mesh(c, e, [0, 0, -0.04], frame))
    return parts


def room_shell(sa: SceneAssembler, mp: MaterialPicker, lx: float, ly: float, hz: float) -> str:
    """Floor, ceiling, walls and skirting boards of a room centred on the origin; returns the floor kind."""
    rng = mp.rng
    kind = mp.floor(sa, -lx / 2, -ly / 2, lx, ly)
    sa.add(quad_mesh([-lx / 2, -ly / 2, hz], [lx, 0, 0], [0, ly, 0], mp.ceiling(), (1.5, 1.5)), blocker=False)
    wall = mp.wall()
    accent = int(rng.integers(4)) if rng.uniform() < 0.2 else -1
    skirt = Material(None, tuple(float(c) for c in mp.colour(np.array([[0.95, 0.95, 0.93], [0.5, 0.36, 0.22]]))))
    walls = []
    for side, length in enumerate((lx, ly, lx, ly)):
        c, e = _wall_quad(side, lx, ly, 0.0, 0.0, length, hz, 0.0)
        walls.append(quad_mesh(c, e, [0, 0, -hz], mp.wall() if side == accent else wall, (1.2, 1.2)))
        c, e = _wall_quad(side, lx, ly, 0.0, 0.0, length, 0.08, 0.012)
        walls.append(quad_mesh(c, e, [0, 0, -0.08], skirt))
    sa.add(merge_meshes(walls), blocker=False)
    return kind


def decorate_walls(sa: SceneAssembler, mp: MaterialPicker, lx: float, ly: float, hz: float) -> None:
    rng = mp.rng
    used: list[tuple[int, float, float]] = []
    for k in range(int(rng.integers(1, 5))):
        window = k == 0 and rng.uniform() < 0.6
        side = int(rng.integers(4))
        L = lx if side in (0, 2) else ly
        w = rng.uniform(0.8, 1.6) if window else rng.uniform(0.3, 1.2)
        h = rng.uniform(1.0, 1.5) if window else w * rng.uniform(0.6, 1.3)
        z = rng.uniform(0.8, 1.0) if window else rng.uniform(1.2, max(1.25, hz - h - 0.3))
        if L < w + 0.6 or z + h > hz - 0.15:
            continue
        s = rng.uniform(-L / 2 + w / 2 + 0.3, L / 2 - w / 2 - 0.3)
        if any(sd == side and abs(s - s2) < (w + w2) / 2 + 0.2 for sd, s2, w2 in used):
            continue
        used.append((side, s, w))
        sa.add(merge_meshes(_framed(mp, side, lx, ly, s, z, w, h, window)), blocker=False)


def _on_surfaces(sa: SceneAssembler, bank: AssetBank, rng: np.random.Generator, boxes: list[np.ndarray],
                 ids: list[int], small: list[int]) -> None:
    """Small models standing on the tops of tables, desks, counters and cabinets."""
    if not small:
        return
    for box, mi in zip(boxes, ids):
        name = bank.manifest["models"][mi]["name"].lower()
        top = float(box[1, 2])
        fx, fy = (box[1, :2] - box[0, :2])
        if not any(w in name for w in _SURFACE_WORDS) or not 0.35 <= top <= 1.1 or min(fx, fy) < 0.35:
            continue
        region = (box[0, 0] + 0.05, box[0, 1] + 0.05, box[1, 0] - 0.05, box[1, 1] - 0.05)
        place_on_floor(sa, bank, rng, small, region, int(rng.integers(1, 4)), [], against_walls=False, z0=top)


def _indoor_light(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    warm = rng.uniform() < 0.6
    col = np.array([1.12, 1.0, 0.82]) if warm else np.array([0.97, 1.0, 1.05])
    return col * rng.uniform(0.9, 1.15), float(rng.uniform(0.3, 0.55))


def world_room(bank: AssetBank, rng: np.random.Generator) -> MeshScene:
    """A furnished room (see the module docstring); camera centres 1.1-1.8 m high, 0.5 m from the walls."""
    sa = SceneAssembler()
    mp = MaterialPicker(bank, rng)
    kind = str(rng.choice(list(ROOM_KINDS), p=[0.35, 0.2, 0.2, 0.1, 0.15]))
    small_room = kind == "bathroom"
    lx, ly = (rng.uniform(2.2, 3.5), rng.uniform(2.0, 3.2)) if small_room else (rng.uniform(3.2, 7.0), rng.uniform(2.8, 6.0))
    hz = rng.uniform(2.4, 3.0)
    room_shell(sa, mp, lx, ly, hz)
    decorate_walls(sa, mp, lx, ly, hz)
    placed: list[np.ndarray] = []
    doors = [i for i, m in enumerate(bank.manifest["models"]) if m.get("door_or_window")
             and "door" in m["name"].lower() and "garage" not in m["name"].lower() and 1.8 < m["size"][2] < hz - 0.05]
    if doors and rng.uniform() < 0.5:
        place_on_floor(sa, bank, rng, doors, (-lx / 2, -ly / 2, lx / 2, ly / 2), 1, placed, against_prob=1.0)
    region = (-lx / 2 + 0.015, -ly / 2 + 0.015, lx / 2 - 0.015, ly / 2 - 0.015)
    cand = _models(bank, ROOM_KINDS[kind], 0.3, min(lx, ly) * 0.7) or _models(bank, None, 0.3, min(lx, ly) * 0.7) \
        or bank.models_where()
    ids: list[int] = []
    n = int(rng.integers(2, 5)) if small_room else int(rng.integers(5, 12))
    boxes = place_on_floor(sa, bank, rng, cand, region, n, placed, max_height=hz - 0.1, against_prob=0.75, chosen=ids)
    extra = _models(bank, ("Living room", "Miscellaneous", "Characters"), 0.4, 2.0)
    if extra and rng.uniform() < 0.5:
        boxes += place_on_floor(sa, bank, rng, extra, region, 1, placed, max_height=hz - 0.1, against_prob=0.3,
                                chosen=ids)
    small = _models(bank, ("Kitchen", "Living room", "Miscellaneous", "Office"), 0.08, 0.45)
    _on_surfaces(sa, bank, rng, boxes, ids, small)
    color, ambient = _indoor_light(rng)
    light = [rng.uniform(-lx / 4, lx / 4), rng.uniform(-ly / 4, ly / 4), hz - 0.25]
    targets = [b.mean(0) for b in boxes] * 2 + [[0, 0, 1.0]] + \
        [[sx * lx / 2, sy * ly / 2, rng.uniform(0.6, 1.6)] for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    m = 0.5
    scene = sa.build("room", [-lx / 2 + m, -ly / 2 + m, 1.1], [lx / 2 - m, ly / 2 - m, min(1.8, hz - 0.4)],
                     targets, light, color, ambient, max(lx, ly) * 1.5, [0, 0, 0])
    scene.free_lo = np.array([-lx / 2 + 0.2, -ly / 2 + 0.2, 0.5], np.float32)
    scene.free_hi = np.array([lx / 2 - 0.2, ly / 2 - 0.2, hz - 0.2], np.float32)
    return scene


def _facade(sa: SceneAssembler, mp: MaterialPicker, x0: float, bw: float, y: float, s: int, h: float,
            d: float) -> None:
    """A building of width ``bw`` from ``x0`` along x, its street face on the plane ``y`` facing
    ``-s * y`` (``s`` = +1: north side), ``h`` high, ``d`` deep, with windows and a ground floor."""
    rng = mp.rng
    sa.add(box_mesh([bw / 2, d / 2, h / 2], mp.facade(), tile=float(rng.uniform(2.0, 4.0))), None,
           [x0 + bw / 2, y + s * d / 2, h / 2])
    glass_src = mp.picture()
    g = rng.uniform(0.25, 0.5)
    glass = Material(glass_src.texture, (g * 0.9, g * 0.95, g * 1.05))
    frame = Material(None, tuple(float(c) for c in mp.colour(np.array([[0.92, 0.92, 0.9], [0.2, 0.2, 0.2],
                                                                         [0.45, 0.3, 0.2]]), 0.02)))
    floor_h = rng.uniform(2.9, 3.5)
    n_floors = max(1, int(h / floor_h))
    pitch = rng.uniform(2.2, 3.6)
    n_cols = max(1, int((bw - 0.8) / pitch))
    ww, wh = rng.uniform(0.8, min(1.6, pitch - 0.5)), rng.uniform(1.2, min(2.0, floor_h - 0.8))
    parts = []
    # the street face is y (facade plane); u runs along +x seen from the street when s = +1
    def rect(cx: float, z0: float, w: float, hh: float, off: float, mat: Material, tile=None) -> None:
        parts.append(quad_mesh([cx - w / 2, y - s * off, z0 + hh], [w, 0, 0], [0, 0, -hh], mat, tile or (w, hh)))
    xs = x0 + bw / 2 + (np.arange(n_cols) - (n_cols - 1) / 2) * pitch
    for f in range(1, n_floors):
        z = f * floor_h + rng.uniform(0.7, 0.9)
        if z + wh > h - 0.3:
            break
        for cx in xs:
            rect(cx, z - 0.07, ww + 0.14, wh + 0.14, 0.01, frame)
            rect(cx, z, ww, wh, 0.02, glass, (4.0, 4.0))
            rect(cx, z + wh / 2 - 0.03, ww, 0.06, 0.025, frame)
    shop = rng.uniform() < 0.5
    for k, cx in enumerate(xs):
        if shop:
            rect(cx, 0.1, min(pitch - 0.3, bw - 0.4), 2.4, 0.02, glass, (4.0, 4.0))
        elif k == len(xs) // 2:
            rect(cx, 0.0, 1.1, 2.2, 0.02, Material(None, tuple(float(c) for c in mp.colour(np.array([[0.3, 0.2, 0.12],
                                                                                                  [0.15, 0.2, 0.25]])))))
        else:
            rect(cx, 0.9, ww, min(wh, 1.5), 0.02, glass, (4.0, 4.0))
    if parts:
        sa.add(merge_meshes(parts), blocker=False)


def world_street(bank: AssetBank, rng: np.random.Generator) -> MeshScene:
    """A street of buildings (see the module docstring); camera centres 1.4-1.8 m high on the
    road or the sidewalks."""
    sa = SceneAssembler()
    mp = MaterialPicker(bank, rng)
    L, road, walk = rng.uniform(40, 70), rng.uniform(6, 10), rng.uniform(2.0, 4.0)
    half = road / 2 + walk
    sa.add(quad_mesh([-L / 2 - 20, -half - 20, 0], [L + 40, 0, 0], [0, 2 * half + 40, 0],
                     mp.tinted(mp.calm, mp.colour(ASPHALT, 0.01)), (3.0, 3.0), subdiv=2), blocker=False)
    line = Material(None, (0.9, 0.9, 0.85))
    dashes = [quad_mesh([x, -0.06, 0.002], [3.0, 0, 0], [0, 0.12, 0], line) for x in np.arange(-L / 2, L / 2, 6.0)]
    sa.add(merge_meshes(dashes), blocker=False)
    for s in (-1, 1):
        y0 = road / 2 if s > 0 else -half
        curb = Material(None, tuple(float(c) for c in mp.colour(PAVING, 0.02)))
        sa.add(box_mesh([L / 2 + 20, walk / 2, 0.072], curb), None, [0, y0 + walk / 2, 0.072], blocker=False)
        mp.lay(sa, -L / 2 - 20, y0, L + 40, walk, 0.15, (float(rng.choice([0.3, 0.4, 0.6])),) * 2, mp.calm, PAVING,
               0.006, 0.0, along_y=False)
        x = -L / 2 - 20
        while x < L / 2 + 20:
            bw = min(rng.uniform(6, 16), L / 2 + 20 - x)
            if bw < 3:
                break
            _facade(sa, mp, x, bw, s * half, s, rng.uniform(2, 7) * 3.2, rng.uniform(8, 14))
            x += bw + (rng.uniform(3, 8) if rng.uniform() < 0.15 else 0.0)
    placed: list[np.ndarray] = []
    cars = [i for i in bank.models_where(("Vehicles",), max_size=6.0, min_size=2.5)]
    for s in (-1, 1):
        yk = s * road / 2
        if cars:
            for _ in range(int(rng.integers(1, 6))):
                mi = cars[int(rng.integers(len(cars)))]
                sz = bank.manifest["models"][mi]["size"]
                yaw = math.pi / 2 if sz[1] > sz[0] else 0.0
                yaw += math.pi * int(rng.integers(2))
                length, width = max(sz[:2]), min(sz[:2])
                cx, cy = rng.uniform(-L / 2 + 3, L / 2 - 3), yk - s * (width / 2 + 0.3)
                fp = np.array([[cx - length / 2, cy - width / 2], [cx + length / 2, cy + width / 2]])
                if not any(np.all(fp[0] < q[1] + 0.5) and np.all(q[0] < fp[1] + 0.5) for q in placed):
                    placed.append(fp)
                    sa.add(bank.model(mi), yaw_matrix(yaw), [cx, cy, 0.0])
        outdoor = _models(bank, ("Exterior", "Characters"), 0.4, min(6.0, walk * 3)) or bank.models_where(max_size=3.0)
        ymin, ymax = sorted((yk + s * 0.3, yk + s * walk * 0.6))
        place_on_floor(sa, bank, rng, outdoor, (-L / 2 + 1, ymin, L / 2 - 1, ymax), int(rng.integers(3, 9)), placed,
                       against_walls=False, z0=0.15)
    sun = np.array([1.05, 1.0, 0.92]) if rng.uniform() < 0.7 else np.array([1.2, 0.98, 0.78])
    light = [rng.uniform(-L, L), rng.uniform(-2 * half, 2 * half), rng.uniform(30, 80)]
    targets = [[x, s * half, rng.uniform(1.5, 6)] for x in np.linspace(-L / 3, L / 3, 5) for s in (-1, 1)] + \
        [[s * L / 2, rng.uniform(-half, half), rng.uniform(1.5, 3.0)] for s in (-1, 1) for _ in range(3)]
    scene = sa.build("street", [-L / 2 + 5, -half + 0.6, 1.4], [L / 2 - 5, half - 0.6, 1.8], targets, light,
                     sun * rng.uniform(0.95, 1.2), float(rng.uniform(0.4, 0.6)), 300.0, [0, 0, 0])
    scene.free_lo = np.array([-L / 2, -half + 0.3, 1.2], np.float32)
    scene.free_hi = np.array([L / 2, half - 0.3, 2.5], np.float32)
    return scene
