"""Z-buffer rasterisation of textured triangle meshes in pure PyTorch (CPU or CUDA).

Many views are rasterised at once: view ``i`` shows scene ``sidx[i]`` of a :class:`MeshBatch` (the
triangles of all scenes concatenated). The work is fully vectorised:

1. every (view, triangle) pair is moved to the camera frame and clipped against the near plane
   (a triangle crossing it becomes one or two triangles, so walls that pass behind the camera
   still cover the pixels they should);
2. each clipped triangle is expanded into the integer pixel centres of its screen bounding box,
   tested with its barycentric edge functions, and its depth there taken from the plane of
   ``1/z`` (affine in screen space for a planar triangle);
3. the nearest triangle per pixel wins a single ``scatter_reduce(amin)`` on a 64-bit key
   ``(float bits of depth) << 32 | triangle id``;
4. at each covered pixel the winning triangle is intersected *exactly* with the pixel's ray
   (ray-plane in the camera frame), which gives the depth (camera ``z``, metres), the world point
   and perspective-correct barycentrics for texture coordinates and normals.

Shading is diffuse (one point light per scene, distance falloff) plus ambient, with optional hard
shadows from a shadow map rendered from the light; textures are sampled from a
:class:`~pointmap.train.synthetic.textures.TextureBank` with mip-mapping. Exposure and white
balance follow :func:`~pointmap.train.synthetic.render.render_views`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from ...geometry import project, unproject_depth
from ..synthetic.render import RenderOutput, _sky
from ..synthetic.textures import TextureBank

__all__ = ["MeshBatch", "RasterOutput", "rasterize", "render_meshes"]

_KEY_EMPTY = torch.iinfo(torch.int64).max


@dataclass
class MeshBatch:
    """The triangles of ``S`` scenes, concatenated scene after scene (world frame, metres).

    Attributes:
        tri: ``(T, 3, 3)`` float32 corner positions.
        uv: ``(T, 3, 2)`` float32 texture coordinates of the corners, in tiles (the texture repeats).
        normal: ``(T, 3, 3)`` float32 unit corner normals (smooth shading; face normals for flat).
        mat: ``(T,)`` int64 material of each triangle (index into ``mat_tex``/``mat_color``).
        tex_density: ``(T,)`` float32 texture tiles per metre on the triangle (mip-level choice).
        first: ``(S + 1,)`` int64: scene ``s`` owns triangles ``first[s]:first[s+1]``.
        obj_first: ``(O + 1,)`` int64: object ``o`` (one placed mesh) owns triangles
            ``obj_first[o]:obj_first[o+1]``; scene_obj: ``(S + 1,)`` int64: scene ``s`` owns
            objects ``scene_obj[s]:scene_obj[s+1]``; obj_sphere: ``(O, 4)`` float32 bounding
            sphere (centre, radius) of each object (views skip objects outside their frustum).
        mat_tex: ``(M,)`` int64 texture of each material in the bank used to render.
        mat_color: ``(M, 3)`` float32 colour multiplying the texture.
        light: ``(S, 3)`` point-light position; light_color ``(S, 3)``; ambient ``(S,)`` in [0, 1];
            light_range ``(S,)`` metres of falloff; shadow_target ``(S, 3)`` where the light's
            shadow map looks.
    """

    tri: torch.Tensor
    uv: torch.Tensor
    normal: torch.Tensor
    mat: torch.Tensor
    tex_density: torch.Tensor
    first: torch.Tensor
    obj_first: torch.Tensor
    scene_obj: torch.Tensor
    obj_sphere: torch.Tensor
    mat_tex: torch.Tensor
    mat_color: torch.Tensor
    light: torch.Tensor
    light_color: torch.Tensor
    ambient: torch.Tensor
    light_range: torch.Tensor
    shadow_target: torch.Tensor

    @property
    def n_scenes(self) -> int:
        return int(self.first.shape[0] - 1)

    def to(self, device: torch.device | str) -> MeshBatch:
        return MeshBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class RasterOutput:
    """Per pixel of ``V`` views: ``depth`` ``(V, H, W)`` float32 metres (0 = nothing), ``tri``
    ``(V, H, W)`` int64 winning triangle (-1 = nothing), ``bary`` ``(V, H, W, 3)`` float32
    perspective-correct barycentrics, ``pts_cam`` ``(V, H, W, 3)`` camera-frame points."""

    depth: torch.Tensor
    tri: torch.Tensor
    bary: torch.Tensor
    pts_cam: torch.Tensor


def _clip_near(pc: torch.Tensor, near: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip camera-frame triangles ``(P, 3, 3)`` against ``z >= near``.

    Returns the clipped triangles ``(Q, 3, 3)`` and the pair each comes from ``(Q,)``; a triangle
    with one corner in front gives one triangle, with two corners in front two triangles.
    """
    front = pc[..., 2] >= near
    nf = front.sum(-1)
    P = pc.shape[0]
    idx = torch.arange(P, device=pc.device)
    whole = nf == 3
    part = (nf == 1) | (nf == 2)
    out, src = [pc[whole]], [idx[whole]]
    if bool(part.any()):
        q = pc[part]
        fq = front[part]
        one = nf[part] == 1
        odd = torch.where(one[:, None], fq, ~fq).int().argmax(-1)  # the lone corner
        order = (odd[:, None] + torch.arange(3, device=pc.device)) % 3
        q = torch.gather(q, 1, order[..., None].expand(-1, 3, 3))
        p0, p1, p2 = q[:, 0], q[:, 1], q[:, 2]

        def cut(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            t = (near - a[:, 2:3]) / (b[:, 2:3] - a[:, 2:3])
            x = a + t * (b - a)
            x[:, 2] = near
            return x

        q01, q02 = cut(p0, p1), cut(p0, p2)
        sp = idx[part]
        o1 = one
        out.append(torch.stack([p0, q01, q02], 1)[o1])
        src.append(sp[o1])
        o2 = ~one
        out.append(torch.stack([q01, p1, p2], 1)[o2])
        src.append(sp[o2])
        out.append(torch.stack([q01, p2, q02], 1)[o2])
        src.append(sp[o2])
    return torch.cat(out), torch.cat(src)


def _view_chunks(counts: torch.Tensor, max_pairs: int) -> list[tuple[int, int]]:
    """Consecutive ranges of (view, object) pairs whose (view, triangle) pair count stays below
    ``max_pairs`` (a single larger one alone)."""
    chunks, start, acc = [], 0, 0
    for i, c in enumerate(counts.tolist()):
        if acc and acc + c > max_pairs:
            chunks.append((start, i))
            start, acc = i, 0
        acc += c
    chunks.append((start, len(counts)))
    return chunks


@torch.no_grad()
def rasterize(batch: MeshBatch, sidx: torch.Tensor, poses: torch.Tensor, K: torch.Tensor, height: int,
              width: int, near: float = 0.01, max_pairs: int = 2_000_000,
              max_fragments: int = 4_000_000) -> RasterOutput:
    """Visible triangle, exact depth and barycentrics at every pixel of ``V`` views.

    Args:
        batch: the scenes' triangles; ``sidx`` ``(V,)`` int64 scene of each view.
        poses: ``(V, 4, 4)`` camera-to-world (OpenCV axes); ``K``: ``(V, 3, 3)`` pixels (no skew).
        height, width: image size; pixel centres at integer coordinates.
        near: near-plane distance in metres (surfaces closer are cut away).
        max_pairs, max_fragments: memory bounds (view-triangle pairs and candidate pixels
            processed at once).
    """
    dev = poses.device
    V, H, W = poses.shape[0], height, width
    zkey = torch.full((V * H * W,), _KEY_EMPTY, dtype=torch.int64, device=dev)
    R, t = poses[:, :3, :3], poses[:, :3, 3]
    # objects (bounding spheres) of each view's scene that meet its view frustum
    so = batch.scene_obj
    ocnt = so[sidx + 1] - so[sidx]
    vo_view = torch.arange(V, device=dev).repeat_interleave(ocnt)
    vo_obj = so[sidx].repeat_interleave(ocnt) + torch.arange(int(ocnt.sum()), device=dev) \
        - (torch.cumsum(ocnt, 0) - ocnt).repeat_interleave(ocnt)
    sph = batch.obj_sphere[vo_obj]
    c = torch.einsum("pj,pji->pi", sph[:, :3] - t[vo_view], R[vo_view])
    r = sph[:, 3]
    Kv = K[vo_view]
    fx, fy, cx, cy = Kv[:, 0, 0], Kv[:, 1, 1], Kv[:, 0, 2], Kv[:, 1, 2]
    seen = c[:, 2] + r > near
    for nx, nz, coord in ((fx, cx + 0.5, 0), (-fx, W - 0.5 - cx, 0), (fy, cy + 0.5, 1), (-fy, H - 0.5 - cy, 1)):
        seen &= (nx * c[:, coord] + nz * c[:, 2]) >= -r * torch.sqrt(nx * nx + nz * nz)
    vo_view, vo_obj = vo_view[seen], vo_obj[seen]
    counts = batch.obj_first[vo_obj + 1] - batch.obj_first[vo_obj]
    for va, vb in _view_chunks(counts.cpu(), max_pairs):
        cnt = counts[va:vb]
        total = int(cnt.sum())
        if total == 0:
            continue
        view = vo_view[va:vb].repeat_interleave(cnt)
        starts = torch.cumsum(cnt, 0) - cnt
        tri_id = batch.obj_first[vo_obj[va:vb]].repeat_interleave(cnt) + torch.arange(total, device=dev) \
            - starts.repeat_interleave(cnt)
        pw = batch.tri[tri_id]  # (P, 3, 3)
        pc = torch.einsum("pkj,pji->pki", pw - t[view, None], R[view])  # R^T (p - t)
        keep = (pc[..., 2] >= near).any(-1)
        pc, view, tri_id = pc[keep], view[keep], tri_id[keep]
        pc, src = _clip_near(pc, near)
        view, tri_id = view[src], tri_id[src]
        uv, z = project(pc, K[view])  # (Q, 3, 2), (Q, 3)
        # screen bounding boxes of integer pixel centres
        x0 = uv[..., 0].amin(-1).ceil().clamp(0, W)
        x1 = uv[..., 0].amax(-1).floor().clamp(-1, W - 1)
        y0 = uv[..., 1].amin(-1).ceil().clamp(0, H)
        y1 = uv[..., 1].amax(-1).floor().clamp(-1, H - 1)
        bw = (x1 - x0 + 1).clamp(min=0).long()
        bh = (y1 - y0 + 1).clamp(min=0).long()
        a, b, c = uv[:, 0], uv[:, 1], uv[:, 2]
        area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        n = bw * bh * (area.abs() > 1e-10)
        live = n > 0
        a, b, c, z, area = a[live], b[live], c[live], z[live], area[live]
        x0, y0, bw, n, view, tri_id = x0[live].long(), y0[live].long(), bw[live], n[live], view[live], tri_id[live]
        # barycentric edge functions lam_k = A_k u + B_k v + C_k (lam_2 = 1 - lam_0 - lam_1) and the
        # plane of 1/z, as one (Q, 9) table gathered per fragment
        coef = []
        for p, q in ((b, c), (c, a)):
            A = -(q[:, 1] - p[:, 1]) / area
            B = (q[:, 0] - p[:, 0]) / area
            coef.append(torch.stack([A, B, -(A * p[:, 0] + B * p[:, 1])], -1))
        lam = torch.stack(coef, 1)  # (Q, 2, 3)
        lam3 = torch.cat([lam, (torch.tensor([0.0, 0.0, 1.0], device=dev) - lam.sum(1))[:, None]], 1)
        iz = (lam3 / z[..., None]).sum(1)  # (Q, 3)
        coef = torch.cat([lam.reshape(-1, 6), iz], -1)  # (Q, 9)
        # per triangle: first pixel index, bounding-box width, bounding-box origin, triangle id
        ints = torch.stack([view * (H * W) + y0 * W + x0, bw, x0, y0, tri_id], -1)  # (Q, 5)
        ends = torch.cumsum(n, 0)
        begin = 0
        while begin < len(n):
            stop = int(torch.searchsorted(ends, ends[begin] - n[begin] + max_fragments, right=True))
            stop = max(stop, begin + 1)
            nk = n[begin:stop]
            q = torch.arange(begin, stop, device=dev).repeat_interleave(nk)
            off = torch.arange(int(nk.sum()), device=dev) - (torch.cumsum(nk, 0) - nk).repeat_interleave(nk)
            iq = ints[q]
            dy = torch.div(off, iq[:, 1], rounding_mode="floor")
            dx = off - dy * iq[:, 1]
            u = (iq[:, 2] + dx).float()
            v = (iq[:, 3] + dy).float()
            cf = coef[q]
            l0 = cf[:, 0] * u + cf[:, 1] * v + cf[:, 2]
            l1 = cf[:, 3] * u + cf[:, 4] * v + cf[:, 5]
            inv_z = cf[:, 6] * u + cf[:, 7] * v + cf[:, 8]
            eps = -1e-5
            ok = (l0 >= eps) & (l1 >= eps) & (l0 + l1 <= 1 - eps) & (inv_z > 0)
            key = ((1.0 / inv_z).view(torch.int32).long() << 32) | iq[:, 4]
            key = torch.where(ok, key, torch.full_like(key, _KEY_EMPTY))
            zkey.scatter_reduce_(0, iq[:, 0] + dy * W + dx, key, reduce="amin")
            begin = stop
    hit = zkey != _KEY_EMPTY
    tri = torch.where(hit, zkey & 0xFFFFFFFF, torch.full_like(zkey, -1)).view(V, H, W)
    # exact ray-triangle intersection of the winners
    rays = unproject_depth(torch.ones(V, H, W, device=dev), K)  # (V, H, W, 3), z = 1
    hv = hit.view(V, H, W)
    vv = torch.arange(V, device=dev)[:, None, None].expand(V, H, W)[hv]
    tw = batch.tri[tri[hv]]
    p = torch.einsum("pkj,pji->pki", tw - t[vv, None], R[vv])
    r = rays[hv]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    nrm = torch.linalg.cross(e1, e2)
    den = (nrm * r).sum(-1)
    den = torch.where(den.abs() < 1e-20, torch.full_like(den, 1e-20), den)
    depth_h = (nrm * p[:, 0]).sum(-1) / den
    x = depth_h[:, None] * r
    nn = (nrm * nrm).sum(-1).clamp(min=1e-30)
    w1 = (torch.linalg.cross(x - p[:, 0], e2) * nrm).sum(-1) / nn
    w2 = (torch.linalg.cross(e1, x - p[:, 0]) * nrm).sum(-1) / nn
    bary_h = torch.stack([1 - w1 - w2, w1, w2], -1)
    depth = torch.zeros(V, H, W, device=dev)
    depth[hv] = depth_h
    bary = torch.zeros(V, H, W, 3, device=dev)
    bary[hv] = bary_h
    pts = torch.zeros(V, H, W, 3, device=dev)
    pts[hv] = x
    bad = hv & ~(depth > 0)
    if bool(bad.any()):  # grazing triangles seen edge-on: drop
        depth[bad] = 0
        tri[bad] = -1
        pts[bad] = 0
    return RasterOutput(depth, tri, bary, pts)


def _shadow_factor(batch: MeshBatch, sidx: torch.Tensor, pts: torch.Tensor, valid: torch.Tensor,
                   size: int, fov_deg: float = 140.0, near: float = 0.05) -> torch.Tensor:
    """``(V, R)`` 1 where world points ``pts`` ``(V, R, 3)`` see their scene's light, 0 where a
    shadow map rendered from the light (``size`` pixels, looking at ``shadow_target``) says a
    surface is in between; points outside the map are lit."""
    from ..synthetic.cameras import intrinsics_from_fov, look_at

    dev = pts.device
    S = batch.n_scenes
    light = batch.light.cpu().numpy()
    target = batch.shadow_target.cpu().numpy()
    lp = torch.from_numpy(np.stack([look_at(light[s], target[s]) for s in range(S)])).float().to(dev)
    lK = torch.from_numpy(intrinsics_from_fov(fov_deg, size, size)).to(dev).expand(S, 3, 3).contiguous()
    sm = rasterize(batch, torch.arange(S, device=dev), lp, lK, size, size, near=near).depth  # (S, size, size)
    P = lp[sidx]
    cam = torch.einsum("vrj,vji->vri", pts - P[:, None, :3, 3], P[:, :3, :3])
    uv, z = project(cam, lK[sidx])
    ui, vi = uv[..., 0].round().long(), uv[..., 1].round().long()
    inside = (z > near) & (ui >= 0) & (ui < size) & (vi >= 0) & (vi < size)
    flat = vi.clamp(0, size - 1) * size + ui.clamp(0, size - 1)
    occ = torch.gather(sm[sidx].view(len(sidx), -1), 1, flat)
    bias = 0.02 * z + 0.01
    shadowed = inside & valid & (occ > 0) & (occ < z - bias)
    return (~shadowed).float()


@torch.no_grad()
def render_meshes(batch: MeshBatch, sidx: torch.Tensor, poses: torch.Tensor, K: torch.Tensor, height: int,
                  width: int, bank: TextureBank | None = None, exposure: torch.Tensor | None = None,
                  shadows: bool = False, shadow_size: int = 256, near: float = 0.01,
                  max_fragments: int = 4_000_000) -> RenderOutput:
    """Render ``V`` views of mesh scenes: exact depth and world points always, colour with ``bank``.

    Args:
        batch: the scenes (on the device of ``poses``); ``sidx`` ``(V,)`` scene of each view.
        poses: ``(V, 4, 4)`` camera-to-world (OpenCV); ``K``: ``(V, 3, 3)`` pixels.
        bank: the textures ``batch.mat_tex`` indexes; ``None`` renders geometry only.
        exposure: ``(V, 5)`` per-view ``[gain, gamma, wb_r, wb_g, wb_b]`` (default neutral).
        shadows: darken points the light does not see (shadow map of ``shadow_size`` pixels).
    Returns:
        :class:`~pointmap.train.synthetic.render.RenderOutput`: ``rgb`` ``(V, 3, H, W)`` in [0, 1]
        (or ``None``), ``depth`` ``(V, H, W)`` metres (0 = background), ``pts3d`` ``(V, H, W, 3)``
        world points, ``valid`` ``(V, H, W)``.
    """
    V, H, W = poses.shape[0], height, width
    ras = rasterize(batch, sidx, poses, K, H, W, near=near, max_fragments=max_fragments)
    valid = ras.tri >= 0
    R, t = poses[:, :3, :3], poses[:, :3, 3]
    pts = torch.einsum("vhwj,vij->vhwi", ras.pts_cam, R) + t[:, None, None]
    pts = torch.where(valid[..., None], pts, torch.zeros_like(pts))
    out = RenderOutput(None, ras.depth, pts, valid)
    if bank is None:
        return out
    tri = ras.tri.clamp(min=0).view(V, -1)
    bary = ras.bary.view(V, -1, 3)
    p = pts.view(V, -1, 3)
    uv = (batch.uv[tri] * bary[..., None]).sum(-2)
    nrm = (batch.normal[tri] * bary[..., None]).sum(-2)
    nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    view_dir = p - t[:, None]
    view_dir = view_dir / view_dir.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    cos = (nrm * view_dir).sum(-1)
    nrm = nrm * torch.where(cos > 0, -1.0, 1.0)[..., None]  # two-sided: face the camera
    cos = cos.abs().clamp(min=0.15)
    mat = batch.mat[tri]
    depth = ras.depth.view(V, -1)
    footprint = depth / K[:, 0, 0, None] / cos * batch.tex_density[tri] * bank.size
    albedo = bank.sample(batch.mat_tex[mat], uv[..., 0], uv[..., 1], footprint) * batch.mat_color[mat]
    light = batch.light[sidx][:, None]
    to_light = light - p
    dist = to_light.norm(dim=-1).clamp(min=1e-6)
    ndl = ((nrm * to_light).sum(-1) / dist).clamp(min=0)
    falloff = 1.0 / (1.0 + (dist / batch.light_range[sidx][:, None]) ** 2)
    vflat = valid.view(V, -1)
    if shadows:
        ndl = ndl * _shadow_factor(batch, sidx, p, vflat, shadow_size)
    amb = batch.ambient[sidx][:, None]
    shade = amb + (1 - amb) * 1.6 * ndl * falloff
    lc = batch.light_color[sidx]
    radiance = albedo * shade[..., None] * lc[:, None]
    sky_cols = torch.stack([lc * 0.85, lc * torch.tensor([0.45, 0.62, 0.95], device=lc.device)], 1)
    dirs = unproject_depth(torch.ones(V, H, W, device=p.device), K).view(V, -1, 3)
    dirs = torch.einsum("vrj,vij->vri", dirs, R)
    rgb = torch.where(vflat[..., None], radiance, _sky(dirs, sky_cols))
    if exposure is not None:
        gain, gamma, wb = exposure[:, 0, None, None], exposure[:, 1, None, None], exposure[:, None, 2:5]
        rgb = (rgb * gain * wb).clamp(min=0) ** (1.0 / gamma)
    out.rgb = rgb.clamp(0, 1).view(V, H, W, 3).permute(0, 3, 1, 2).contiguous()
    return out
