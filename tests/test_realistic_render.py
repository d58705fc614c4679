"""The mesh rasteriser against analytic geometry: exact depth on planes and boxes, and consistency
of the views of one scene (depth of view A reprojected into view B)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pointmap.geometry import project
from pointmap.train.realistic import (
    Material,
    SceneAssembler,
    box_mesh,
    pack_mesh_scenes,
    quad_mesh,
    rasterize,
    render_meshes,
)
from pointmap.train.synthetic import intrinsics_from_fov, look_at


def _scene(meshes):
    sa = SceneAssembler()
    for mesh, rot, tr in meshes:
        sa.add(mesh, rot, tr)
    return sa.build("room", [-1, -1, 0], [1, 1, 2], [[0, 0, 0]], [0, 0, 3], [1, 1, 1], 0.3, 10.0, [0, 0, 0])


def _rays(K: np.ndarray, H: int, W: int) -> np.ndarray:
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)


def test_plane_depth_is_exact():
    # a tilted plane n . x = d in front of a camera at the origin (camera = world frame)
    n = np.array([0.3, -0.2, 1.0])
    n /= np.linalg.norm(n)
    d = 2.5
    c0 = n * d  # a point of the plane
    eu = np.cross(n, [0, 1, 0])
    eu /= np.linalg.norm(eu)
    ev = np.cross(n, eu)
    big = quad_mesh(c0 - 20 * eu - 20 * ev, 40 * eu, 40 * ev, Material(None), subdiv=3)
    batch, _ = pack_mesh_scenes([_scene([(big, None, None)])], None)
    H, W = 48, 64
    K = intrinsics_from_fov(70.0, W, H)
    out = rasterize(batch, torch.zeros(1, dtype=torch.long), torch.eye(4)[None], torch.from_numpy(K)[None], H, W)
    truth = d / (_rays(K.astype(np.float64), H, W) @ n)
    assert (out.tri[0] >= 0).all()
    rel = np.abs(out.depth[0].numpy() - truth) / truth
    assert rel.max() < 1e-4, rel.max()


def _box_depth(o: np.ndarray, dirs: np.ndarray, c: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit of rays ``o + t dirs`` with an axis-aligned box (inf if none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (c - h - o) / dirs
        t2 = (c + h - o) / dirs
    tn = np.minimum(t1, t2).max(-1)
    tf = np.maximum(t1, t2).min(-1)
    return np.where((tf >= tn) & (tn > 0), tn, np.inf)


def test_box_depth_is_exact_from_an_oblique_view():
    half = np.array([0.4, 0.3, 0.5])
    centre = np.array([0.2, -0.1, 0.6])
    scene = _scene([(box_mesh(half, Material(None)), None, centre)])
    batch, _ = pack_mesh_scenes([scene], None)
    H, W = 60, 80
    K = intrinsics_from_fov(60.0, W, H)
    pose = look_at(np.array([1.4, -1.1, 1.4]), centre + [0.05, 0.02, -0.1])
    out = rasterize(batch, torch.zeros(1, dtype=torch.long), torch.from_numpy(pose).float()[None],
                    torch.from_numpy(K)[None], H, W)
    rays_cam = _rays(K.astype(np.float64), H, W)
    dirs = rays_cam @ pose[:3, :3].T  # world directions with camera-z component 1
    t = _box_depth(pose[:3, 3], dirs, centre, half)
    hit_true = np.isfinite(t)
    hit = out.tri[0].numpy() >= 0
    assert hit_true.sum() > 0.2 * H * W
    both = hit & hit_true
    # coverage differs at most on silhouette pixels whose centre grazes the box outline
    assert (hit != hit_true).sum() <= 0.01 * H * W
    rel = np.abs(out.depth[0].numpy()[both] - t[both]) / t[both]
    assert rel.max() < 1e-4, rel.max()
    assert (out.depth[0].numpy()[~hit] == 0).all()


def test_near_plane_clipping_keeps_walls_that_pass_behind_the_camera():
    # the camera stands between two corners of one long floor triangle pair; the floor passes
    # under and behind it, and must still cover the lower half of the image exactly
    floor = quad_mesh([-10, -10, 0], [20, 0, 0], [0, 20, 0], Material(None))
    batch, _ = pack_mesh_scenes([_scene([(floor, None, None)])], None)
    H, W = 40, 40
    K = intrinsics_from_fov(90.0, W, H)
    pose = look_at(np.array([0.0, 0.0, 1.5]), np.array([3.0, 0.0, 0.2]))
    out = rasterize(batch, torch.zeros(1, dtype=torch.long), torch.from_numpy(pose).float()[None],
                    torch.from_numpy(K)[None], H, W)
    dirs = _rays(K.astype(np.float64), H, W) @ pose[:3, :3].T
    with np.errstate(divide="ignore"):
        t = np.where(dirs[..., 2] < 0, -1.5 / dirs[..., 2], np.inf)
    t = np.where(t * np.linalg.norm(dirs, axis=-1) < 14.0, t, np.inf)  # inside the 20 m floor
    far_edge = np.abs(pose[0, 3] + t * dirs[..., 0]) > 9.9
    check = np.isfinite(t) & ~far_edge
    assert check.sum() > 0.3 * H * W
    hit = out.tri[0].numpy() >= 0
    assert hit[check].all()
    rel = np.abs(out.depth[0].numpy()[check] - t[check]) / t[check]
    assert rel.max() < 1e-4


def test_views_of_one_scene_are_consistent():
    rng = np.random.default_rng(0)
    meshes = [(quad_mesh([-3, -3, 0], [6, 0, 0], [0, 6, 0], Material(None), subdiv=4), None, None)]
    for _ in range(5):
        yaw = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        half = rng.uniform(0.1, 0.4, 3)
        meshes.append((box_mesh(half, Material(None)), rot, [*rng.uniform(-1.2, 1.2, 2), half[2]]))
    batch, _ = pack_mesh_scenes([_scene(meshes)], None)
    H, W = 72, 96
    K = torch.from_numpy(intrinsics_from_fov(65.0, W, H))
    poses = torch.from_numpy(np.stack([look_at(np.array([3.0, -2.0, 2.2]), np.zeros(3)),
                                       look_at(np.array([2.6, 1.5, 1.8]), np.array([0.2, 0.1, 0.0]))])).float()
    out = render_meshes(batch, torch.zeros(2, dtype=torch.long), poses, K.expand(2, 3, 3), H, W)
    ras = rasterize(batch, torch.zeros(2, dtype=torch.long), poses, K.expand(2, 3, 3), H, W)
    # world points of A, into B's camera frame
    pa = out.pts3d[0][out.valid[0]]
    tri_a = ras.tri[0][out.valid[0]]
    pb = (pa - poses[1, :3, 3]) @ poses[1, :3, :3]
    uv, z = project(pb, K)
    x0, y0 = uv[:, 0].floor().long(), uv[:, 1].floor().long()
    inside = (z > 0) & (x0 >= 0) & (y0 >= 0) & (x0 < W - 1) & (y0 < H - 1)
    uv, z, x0, y0, tri_a = uv[inside], z[inside], x0[inside], y0[inside], tri_a[inside]
    corners = [(y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)]
    tris = torch.stack([ras.tri[1][yy, xx] for yy, xx in corners], -1)
    # where B's four neighbouring pixels see one triangle, 1/depth is bilinear there: exact test
    same = (tris == tris[:, :1]).all(-1) & (tris[:, 0] >= 0)
    fx, fy = uv[:, 0] - x0, uv[:, 1] - y0
    inv = [1.0 / out.depth[1][yy, xx] for yy, xx in corners]
    inv_b = (inv[0] * (1 - fx) + inv[1] * fx) * (1 - fy) + (inv[2] * (1 - fx) + inv[3] * fx) * fy
    zb = 1.0 / inv_b
    rel = ((zb - z) / z)[same]
    visible = rel.abs() < 1e-4
    occluded = rel < -1e-3  # B sees something in front of A's point
    assert same.sum() > 0.3 * H * W
    assert (visible | occluded).all(), rel[~(visible | occluded)]
    assert visible.float().mean() > 0.5
    # the surface both views see is the same triangle
    assert (tris[same][visible][:, 0] == tri_a[same][visible]).all()


def test_object_culling_changes_nothing():
    # many small boxes around the camera; most lie outside the view and are culled by their spheres
    rng = np.random.default_rng(3)
    meshes = [(box_mesh(rng.uniform(0.05, 0.3, 3), Material(None)), None, rng.uniform(-4, 4, 3)) for _ in range(40)]
    scene = _scene(meshes)
    whole = dataclasses.replace(scene, obj_first=None)
    H, W = 40, 56
    K = torch.from_numpy(intrinsics_from_fov(60.0, W, H)).expand(3, 3, 3)
    poses = torch.from_numpy(np.stack([look_at(np.zeros(3), np.array(d)) for d in
                                       ([1.0, 0.2, 0.1], [-0.5, 1.0, -0.3], [0.1, -1.0, 0.4])])).float()
    outs = []
    for sc in (scene, whole):
        batch, _ = pack_mesh_scenes([sc], None)
        outs.append(rasterize(batch, torch.zeros(3, dtype=torch.long), poses, K, H, W))
    assert len(pack_mesh_scenes([scene], None)[0].obj_sphere) == 40
    assert (outs[0].tri >= 0).float().mean() > 0.02
    torch.testing.assert_close(outs[0].tri, outs[1].tri)
    torch.testing.assert_close(outs[0].depth, outs[1].depth)
