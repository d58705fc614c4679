"""Triangle meshes with materials, scenes made of them, and their packing for the rasteriser.

World frame: metres, ``z`` up. A :class:`Mesh` is an asset in its own frame; a :class:`MeshScene`
holds the world-space triangles of every placed mesh with their materials, plus the hints
:func:`~pointmap.train.synthetic.cameras.sample_trajectory` needs to place cameras (``layout``,
``cam_lo``/``cam_hi``, ``targets`` and :meth:`MeshScene.contains`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..synthetic.textures import TextureBank, pack_textures
from .raster import MeshBatch

__all__ = ["Material", "Mesh", "MeshScene", "SceneAssembler", "box_mesh", "pack_mesh_scenes", "quad_mesh"]


@dataclass(frozen=True)
class Material:
    """A surface: ``texture`` key (``None``: plain colour) times an RGB ``color`` in [0, 1]."""

    texture: str | None
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class Mesh:
    """A triangle mesh in its own frame.

    Attributes:
        vertices: ``(N, 3)`` float32 metres. faces: ``(F, 3)`` int64 vertex indices.
        uv: ``(N, 2)`` float32 texture coordinates in tiles (``v`` down the image).
        face_mat: ``(F,)`` int64 index into ``materials``.
        materials: the mesh's materials.
        normals: ``(N, 3)`` float32 unit vertex normals, or ``None`` for flat shading.
        name: where it comes from (bank key).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    face_mat: np.ndarray
    materials: list[Material]
    normals: np.ndarray | None = None
    name: str = ""

    @property
    def bounds(self) -> np.ndarray:
        """``(2, 3)`` axis-aligned bounding box (min, max)."""
        return np.stack([self.vertices.min(0), self.vertices.max(0)])


def quad_mesh(corner: np.ndarray, edge_u: np.ndarray, edge_v: np.ndarray, material: Material,
              tile: tuple[float, float] = (1.0, 1.0), uv_offset: tuple[float, float] = (0.0, 0.0),
              subdiv: int = 1) -> Mesh:
    """A planar parallelogram ``corner + s * edge_u + t * edge_v`` (``s, t`` in [0, 1]) as
    ``2 * subdiv**2`` triangles, textured with one tile per ``tile`` metres along each edge."""
    corner, eu, ev = (np.asarray(x, np.float64) for x in (corner, edge_u, edge_v))
    s = np.linspace(0, 1, subdiv + 1)
    ss, tt = np.meshgrid(s, s, indexing="xy")
    verts = corner + ss.reshape(-1, 1) * eu + tt.reshape(-1, 1) * ev
    uv = np.stack([ss.reshape(-1) * np.linalg.norm(eu) / tile[0] + uv_offset[0],
                   tt.reshape(-1) * np.linalg.norm(ev) / tile[1] + uv_offset[1]], -1)
    n = subdiv + 1
    faces = []
    for j in range(subdiv):
        for i in range(subdiv):
            a, b, c, d = j * n + i, j * n + i + 1, (j + 1) * n + i, (j + 1) * n + i + 1
            faces += [(a, b, d), (a, d, c)]
    return Mesh(verts.astype(np.float32), np.array(faces, np.int64), uv.astype(np.float32),
                np.zeros(len(faces), np.int64), [material])


def box_mesh(half: Sequence[float], material: Material, tile: float = 1.0) -> Mesh:
    """A closed axis-aligned box centred at the origin with half sizes ``half`` (12 triangles,
    flat faces: 24 vertices)."""
    hx, hy, hz = (float(h) for h in half)
    parts = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = sign
            u_ax, v_ax = [a for a in range(3) if a != axis]
            h = np.array([hx, hy, hz])
            eu, ev = np.zeros(3), np.zeros(3)
            eu[u_ax], ev[v_ax] = 2 * h[u_ax], 2 * h[v_ax]
            corner = n * h - eu / 2 - ev / 2
            parts.append(quad_mesh(corner, eu, ev, material, (tile, tile)))
    return merge_meshes(parts)


def merge_meshes(meshes: Sequence[Mesh]) -> Mesh:
    """One mesh holding all of ``meshes`` (materials concatenated)."""
    verts, faces, uv, fm, mats, nrm = [], [], [], [], [], []
    nv = 0
    for m in meshes:
        verts.append(m.vertices)
        faces.append(m.faces + nv)
        uv.append(m.uv)
        fm.append(m.face_mat + len(mats))
        mats += m.materials
        nrm.append(m.normals)
        nv += len(m.vertices)
    normals = np.concatenate(nrm) if all(n is not None for n in nrm) else None
    return Mesh(np.concatenate(verts), np.concatenate(faces), np.concatenate(uv), np.concatenate(fm), mats, normals)


def _face_normals(tri: np.ndarray) -> np.ndarray:
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


@dataclass
class MeshScene:
    """World-space triangles of one composed scene.

    Attributes:
        tri: ``(T, 3, 3)``; uv: ``(T, 3, 2)``; normal: ``(T, 3, 3)``; mat: ``(T,)`` into ``materials``.
        materials: the scene's materials.
        layout: ``"room"``, ``"turntable"``, ``"street"`` or ``"clutter"`` (camera-motion mix).
        cam_lo, cam_hi: ``(3,)`` box where camera centres may go; targets: ``(K, 3)`` looked-at points.
        blockers: ``(B, 2, 3)`` boxes (min, max) camera centres must stay out of.
        light: ``(3,)``; light_color ``(3,)``; ambient; light_range (metres); shadow_target ``(3,)``.
        free_lo, free_hi: ``(3,)`` the larger box camera centres may be moved into (a telephoto
            camera stepping back from its target), or ``None`` for ``cam_lo``/``cam_hi``.
    """

    tri: np.ndarray
    uv: np.ndarray
    normal: np.ndarray
    mat: np.ndarray
    materials: list[Material]
    layout: str
    cam_lo: np.ndarray
    cam_hi: np.ndarray
    targets: np.ndarray
    blockers: np.ndarray
    light: np.ndarray
    light_color: np.ndarray
    ambient: float
    light_range: float
    shadow_target: np.ndarray
    assets: list[str] = field(default_factory=list)
    obj_first: np.ndarray | None = None
    free_lo: np.ndarray | None = None
    free_hi: np.ndarray | None = None

    def objects(self) -> tuple[np.ndarray, np.ndarray]:
        """Triangle offsets ``(O + 1,)`` of the scene's objects (one per placed mesh; the whole
        scene when unknown) and their bounding spheres ``(O, 4)`` (centre, radius; metres)."""
        first = self.obj_first if self.obj_first is not None else np.array([0, len(self.tri)])
        sph = []
        for a, b in zip(first[:-1], first[1:]):
            pts = self.tri[a:b].reshape(-1, 3).astype(np.float64)
            c = (pts.min(0) + pts.max(0)) / 2
            sph.append([*c, np.sqrt(((pts - c) ** 2).sum(-1).max()) * 1.0001 + 1e-6])
        return first.astype(np.int64), np.array(sph, np.float32).reshape(-1, 4)

    def contains(self, p: np.ndarray, margin: float) -> np.ndarray:
        """``(M,)`` bool: points ``p`` ``(M, 3)`` within ``margin`` metres of a blocker box."""
        if len(self.blockers) == 0:
            return np.zeros(len(p), dtype=bool)
        lo = self.blockers[None, :, 0] - margin
        hi = self.blockers[None, :, 1] + margin
        return np.any(np.all((p[:, None] >= lo) & (p[:, None] <= hi), axis=-1), axis=1)


class SceneAssembler:
    """Accumulates placed meshes; :meth:`build` freezes them into a :class:`MeshScene`."""

    def __init__(self) -> None:
        self.tri: list[np.ndarray] = []
        self.uv: list[np.ndarray] = []
        self.normal: list[np.ndarray] = []
        self.mat: list[np.ndarray] = []
        self.materials: list[Material] = []
        self.blockers: list[np.ndarray] = []
        self.assets: list[str] = []

    def add(self, mesh: Mesh, rotation: np.ndarray | None = None, translation: np.ndarray | None = None,
            scale: float | np.ndarray = 1.0, blocker: bool = True,
            material_override: Callable[[Material], Material] | None = None) -> np.ndarray:
        """Place ``mesh`` as ``rotation @ (scale * x) + translation``; returns its world AABB
        ``(2, 3)`` (also a camera blocker unless ``blocker=False``)."""
        R = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
        tr = np.zeros(3) if translation is None else np.asarray(translation, np.float64)
        v = (mesh.vertices.astype(np.float64) * scale) @ R.T + tr
        tri = v[mesh.faces]
        self.tri.append(tri.astype(np.float32))
        self.uv.append(mesh.uv[mesh.faces].astype(np.float32))
        if mesh.normals is not None:
            n = (mesh.normals.astype(np.float64) / np.asarray(scale, np.float64)) @ R.T
            n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
            self.normal.append(n[mesh.faces].astype(np.float32))
        else:
            self.normal.append(np.repeat(_face_normals(tri)[:, None], 3, 1).astype(np.float32))
        mats = [material_override(m) for m in mesh.materials] if material_override else mesh.materials
        self.mat.append(mesh.face_mat + len(self.materials))
        self.materials += mats
        box = np.stack([v.min(0), v.max(0)])
        if blocker:
            self.blockers.append(box)
        if mesh.name:
            self.assets.append(mesh.name)
        return box

    def build(self, layout: str, cam_lo, cam_hi, targets, light, light_color, ambient: float,
              light_range: float, shadow_target) -> MeshScene:
        f32 = np.float32
        return MeshScene(
            tri=np.concatenate(self.tri), uv=np.concatenate(self.uv), normal=np.concatenate(self.normal),
            mat=np.concatenate(self.mat).astype(np.int64), materials=list(self.materials), layout=layout,
            cam_lo=np.asarray(cam_lo, f32), cam_hi=np.asarray(cam_hi, f32),
            targets=np.asarray(targets, f32).reshape(-1, 3),
            blockers=np.array(self.blockers, f32).reshape(-1, 2, 3), light=np.asarray(light, f32),
            light_color=np.asarray(light_color, f32), ambient=float(ambient), light_range=float(light_range),
            shadow_target=np.asarray(shadow_target, f32), assets=list(self.assets),
            obj_first=np.cumsum([0] + [len(t) for t in self.tri]).astype(np.int64))


def _tex_density(tri: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``(T,)`` texture tiles per metre: ``sqrt(uv area / world area)`` of each triangle."""
    a3 = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    a2 = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    return np.sqrt(a2 / np.maximum(a3, 1e-12)).astype(np.float32)


def pack_mesh_scenes(scenes: Sequence[MeshScene], load_texture: Callable[[str], torch.Tensor] | None,
                     device: torch.device | str = "cpu", texture_size: int = 256
                     ) -> tuple[MeshBatch, TextureBank | None]:
    """Concatenate scenes into a :class:`~pointmap.train.realistic.raster.MeshBatch` on ``device``
    and gather the textures they use into one bank (texture 0 is plain white).

    Args:
        load_texture: texture key -> ``(3, texture_size, texture_size)`` float32 in [0, 1]
            (``None``: geometry only, no bank).
    """
    keys: dict[str, int] = {}
    mat_tex, mat_color, first = [], [], [0]
    obj_first, obj_sphere, scene_obj = [np.zeros(1, np.int64)], [], [0]
    tri, uv, nrm, mat = [], [], [], []
    for s in scenes:
        off = len(mat_tex)
        for m in s.materials:
            if m.texture is None or load_texture is None:
                mat_tex.append(0)
            else:
                mat_tex.append(keys.setdefault(m.texture, len(keys) + 1))
            mat_color.append(m.color)
        tri.append(s.tri)
        uv.append(s.uv)
        nrm.append(s.normal)
        mat.append(s.mat + off)
        of, sph = s.objects()
        obj_first.append(of[1:] + first[-1])
        obj_sphere.append(sph)
        scene_obj.append(scene_obj[-1] + len(sph))
        first.append(first[-1] + len(s.tri))
    tri_np, uv_np = np.concatenate(tri), np.concatenate(uv)
    bank = None
    if load_texture is not None:
        white = torch.ones(3, texture_size, texture_size)
        texs = [white] + [load_texture(k) for k in keys]
        bank = pack_textures(texs, ["plain"] + ["photo"] * len(keys)).to(device)

    def t(x, dtype=torch.float32):
        return torch.as_tensor(np.asarray(x), dtype=dtype).to(device)

    batch = MeshBatch(
        tri=t(tri_np), uv=t(uv_np), normal=t(np.concatenate(nrm)), mat=t(np.concatenate(mat), torch.int64),
        tex_density=t(_tex_density(tri_np.astype(np.float64), uv_np.astype(np.float64))),
        first=t(first, torch.int64), obj_first=t(np.concatenate(obj_first), torch.int64),
        scene_obj=t(scene_obj, torch.int64), obj_sphere=t(np.concatenate(obj_sphere)), mat_tex=t(mat_tex, torch.int64), mat_color=t(mat_color),
        light=t([s.light for s in scenes]), light_color=t([s.light_color for s in scenes]),
        ambient=t([s.ambient for s in scenes]), light_range=t([s.light_range for s in scenes]),
        shadow_target=t([s.shadow_target for s in scenes]))
    return batch, bank
