"""Scenes composed from an asset bank: furnished rooms, object captures, streets and clutter.

World frame: metres, ``z`` up, the ground at ``z = 0``. Layouts (``REALISTIC_LAYOUTS``, the same
names as the procedural engine's, so :func:`~pointmap.train.synthetic.cameras.sample_trajectory`
picks the matching camera motions):

* ``room``: a furnished room of one kind (:func:`~pointmap.train.realistic.world.world_room`);
* ``turntable``: one to three small models on a table in a large room with the same walls and
  floors (object captures; cameras mostly orbit);
* ``street``: a street of buildings with windows, sidewalks, vehicles, trees and people under the
  sky (:func:`~pointmap.train.realistic.world.world_street`);
* ``clutter``: FlyingThings-style: random models, randomly rotated and scaled, re-textured with
  random photos, floating before photo walls.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from .bank import AssetBank
from .meshes import Material, Mesh, MeshScene, SceneAssembler, box_mesh, quad_mesh
from .materials import PAINT, WOOD, MaterialPicker
from .placement import place_on_floor, yaw_matrix
from .world import decorate_walls, room_shell, world_room, world_street

__all__ = ["REALISTIC_LAYOUTS", "compose_scene"]

REALISTIC_LAYOUTS: tuple[str, ...] = ("room", "turntable", "street", "clutter")

def _photo(bank: AssetBank, rng: np.random.Generator, tint: float = 0.15) -> Material:
    """A random photo crop with a slight colour tint."""
    col = np.clip(1 + rng.normal(0, tint, 3) * 0.5, 0.6, 1.3)
    return Material(bank.photo_key(int(rng.integers(bank.n_photos))), tuple(float(c) for c in col))


def _box_uv(mesh: Mesh, tile: float) -> Mesh:
    """``mesh`` with per-corner box-projected texture coordinates (``tile`` metres per texture
    repeat), for re-texturing models whose own coordinates are missing or meaningless."""
    tri = mesh.vertices[mesh.faces]  # (F, 3, 3)
    n = np.abs(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
    ax = n.argmax(-1)
    keep = np.array([[1, 2], [0, 2], [0, 1]])[ax]  # (F, 2)
    uv = np.take_along_axis(tri, keep[:, None, :].repeat(3, 1), axis=2) / tile
    F = len(mesh.faces)
    return Mesh(tri.reshape(-1, 3), np.arange(3 * F).reshape(F, 3), uv.reshape(-1, 2).astype(np.float32),
                mesh.face_mat, mesh.materials,
                None if mesh.normals is None else mesh.normals[mesh.faces].reshape(-1, 3), mesh.name)


def _light(sa: SceneAssembler, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    temp = rng.uniform(-1, 1)
    return np.array([1 + 0.12 * temp, 1.0, 1 - 0.12 * temp]) * rng.uniform(0.9, 1.15), float(rng.uniform(0.25, 0.5))


def _enclosure(sa: SceneAssembler, bank: AssetBank, rng: np.random.Generator, lx: float, ly: float, hz: float,
               one_photo_per_wall: bool = False) -> None:
    """Floor, ceiling and four walls of a ``lx x ly x hz`` room centred on the origin (not camera
    blockers), photo-textured (tiled, or one photo stretched over each wall)."""
    x0, y0 = -lx / 2, -ly / 2

    def tile(w: float, h: float) -> tuple[float, float]:
        if one_photo_per_wall:
            return (w, h)
        t = float(np.exp(rng.uniform(np.log(0.6), np.log(2.5))))
        return (t, t)

    floor_m = _photo(bank, rng)
    sa.add(quad_mesh([x0, y0, 0], [lx, 0, 0], [0, ly, 0], floor_m, tile(lx, ly)), blocker=False)
    sa.add(quad_mesh([x0, y0, hz], [lx, 0, 0], [0, ly, 0], _photo(bank, rng), tile(lx, ly)), blocker=False)
    wall_m = _photo(bank, rng)
    corners = [(x0, y0), (-x0, y0), (-x0, -y0), (x0, -y0)]
    for i in range(4):
        a, b = np.array(corners[i]), np.array(corners[(i + 1) % 4])
        m = _photo(bank, rng) if one_photo_per_wall or rng.uniform() < 0.3 else wall_m
        w = float(np.linalg.norm(b - a))
        # corner at the top so that v runs down the wall (images read upright)
        sa.add(quad_mesh([a[0], a[1], hz], [b[0] - a[0], b[1] - a[1], 0], [0, 0, -hz], m, tile(w, hz)),
               blocker=False)


def _table(sa: SceneAssembler, bank: AssetBank, rng: np.random.Generator, mp: MaterialPicker) -> np.ndarray:
    """A table at the origin (a bank model whose name says table, else a box table); returns its
    top ``(2, 3)`` box."""
    tables = [i for i, m in enumerate(bank.manifest["models"])
              if "table" in m["name"].lower() and 0.55 < m["size"][2] < 1.0 and min(m["size"][:2]) > 0.5]
    if tables and rng.uniform() < 0.7:
        return sa.add(bank.model(tables[int(rng.integers(len(tables)))]), yaw_matrix(int(rng.integers(4)) * math.pi / 2))
    w, d, h = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.8)
    top = mp.tinted(mp.wood, mp.colour(WOOD)) if rng.uniform() < 0.7 else Material(None, tuple(float(c) for c in mp.colour(PAINT)))
    sa.add(box_mesh([w / 2, d / 2, 0.02], top, tile=float(rng.uniform(0.5, 1.5))), None, [0, 0, h - 0.02])
    leg = Material(None, tuple(float(c) for c in mp.colour(np.array([[0.2, 0.2, 0.2], [0.75, 0.75, 0.75]]))))
    for sx in (-1, 1):
        for sy in (-1, 1):
            sa.add(box_mesh([0.025, 0.025, (h - 0.04) / 2], leg, 0.5), None,
                   [sx * (w / 2 - 0.05), sy * (d / 2 - 0.05), (h - 0.04) / 2])
    return np.array([[-w / 2, -d / 2, 0], [w / 2, d / 2, h]])


def _turntable(bank: AssetBank, rng: np.random.Generator) -> MeshScene:
    sa = SceneAssembler()
    L, hz = rng.uniform(7, 11), rng.uniform(3.0, 4.0)
    mp = MaterialPicker(bank, rng)
    room_shell(sa, mp, L, L, hz)
    decorate_walls(sa, mp, L, L, hz)
    top = _table(sa, bank, rng, mp)
    z0 = float(top[1, 2])
    small = bank.models_where(max_size=0.7, min_size=0.2)
    cand = [i for i in small if bank.manifest["models"][i].get("category") not in ("Doors and windows",)] or small
    fx, fy = top[1, 0] * 0.85, top[1, 1] * 0.85
    boxes = place_on_floor(sa, bank, rng, cand or bank.models_where(), (-fx, -fy, fx, fy), int(rng.integers(1, 4)),
                            [], against_walls=False, z0=z0) if cand else []
    color, ambient = _light(sa, rng)
    centre = np.mean([b.mean(0) for b in boxes], 0) if boxes else np.array([0, 0, z0])
    size = max([float((b[1] - b[0]).max()) for b in boxes] + [0.2])
    r = float(np.clip(3.0 * size, 0.7, 1.8))
    light = [rng.uniform(-2, 2), rng.uniform(-2, 2), hz - 0.3]
    scene = sa.build("turntable", [centre[0] - r, centre[1] - r, z0 + 0.15], [centre[0] + r, centre[1] + r, z0 + r],
                     [centre], light, color, ambient, 6.0, centre)
    scene.free_lo = np.array([-L / 2 + 0.3, -L / 2 + 0.3, 0.5], np.float32)  # telephoto cameras step back here
    scene.free_hi = np.array([L / 2 - 0.3, L / 2 - 0.3, hz - 0.2], np.float32)
    return scene


def _clutter(bank: AssetBank, rng: np.random.Generator) -> MeshScene:
    sa = SceneAssembler()
    L, hz = rng.uniform(9, 13), rng.uniform(6, 9)
    _enclosure(sa, bank, rng, L, L, hz, one_photo_per_wall=True)
    models = bank.models_where(min_size=0.1)
    n = int(rng.integers(15, 35))
    region = 3.0
    boxes = []
    for _ in range(n):
        mesh = bank.model(models[int(rng.integers(len(models)))])
        ext = float((mesh.bounds[1] - mesh.bounds[0]).max())
        scale = rng.uniform(0.4, 2.0) / max(ext, 1e-3)
        R = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
        pos = rng.uniform([-region, -region, 0.3], [region, region, 4.0])
        if rng.uniform() < 0.7:
            mats = [_photo(bank, rng, 0.3) for _ in mesh.materials]
            mesh = _box_uv(mesh, float(rng.uniform(0.2, 1.0)) / scale)
            mesh = Mesh(mesh.vertices, mesh.faces, mesh.uv, mesh.face_mat, mats, mesh.normals, mesh.name)
        centre = (mesh.bounds[0] + mesh.bounds[1]) / 2
        boxes.append(sa.add(mesh, R, pos - R @ (centre * scale), scale))
    color, ambient = _light(sa, rng)
    light = [rng.uniform(-3, 3), rng.uniform(-3, 3), hz - 1.0]
    targets = [b.mean(0) for b in boxes]
    return sa.build("clutter", [-4.5, -4.5, 0.5], [4.5, 4.5, 4.0], targets,
                    light, color, ambient, L * 1.5, [0, 0, hz * 0.25])


_BUILDERS = {"room": world_room, "turntable": _turntable, "street": world_street, "clutter": _clutter}


def compose_scene(layout: str, rng: np.random.Generator, bank: AssetBank) -> MeshScene:
    """One scene of ``layout`` (a key of :data:`REALISTIC_LAYOUTS`) from ``bank``, drawn by ``rng``."""
    if layout not in _BUILDERS:
        raise ValueError(f"unknown realistic layout {layout!r}; choose from {REALISTIC_LAYOUTS}")
    return _BUILDERS[layout](bank, rng)
