"""Rendering views of packed scenes: primary rays, surface normals and texture coordinates,
Lambertian shading with shadows, and the per-view outputs (colour, depth, world points).

Primary rays use un-normalised directions ``d = R_cw @ K^-1 @ (u, v, 1)``, so the ray parameter of
a hit *is* its depth (camera ``z``) and ``pts3d = o + depth * d`` is exactly the unprojection of the
depth map. Shading is Lambertian with one point light per scene, ambient light and (optionally)
hard shadows from a second ray cast (:mod:`~pointmap.train.synthetic.raycast`); textures are
sampled with trilinear mip-mapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .raycast import PackedScenes, cast_rays, cast_rays_tiled
from .textures import TextureBank

__all__ = ["RenderOutput", "pixel_rays", "render_views"]


# ----------------------------------------------------------------------------- surfaces


def _take(param: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather per-ray object parameters: ``param`` ``(V, N, *F)``, ``idx`` ``(V, R)`` -> ``(V, R, *F)``."""
    V, R = idx.shape
    flat = param.reshape(V, param.shape[1], -1)
    out = torch.gather(flat, 1, idx[..., None].expand(V, R, flat.shape[-1]))
    return out.view(V, R, *param.shape[2:])


def _surface(sc: PackedScenes, p: torch.Tensor, obj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Outward normals ``(V, R, 3)`` and texture coordinates in metres ``(V, R, 2)`` (before the
    per-material tile scale, except the periodic ``u`` of round surfaces, already in tiles / metres
    consistent with scale) at hit points ``p`` ``(V, R, 3)`` of objects ``obj`` ``(V, R)``."""
    nb, ns, nc = sc.counts
    scale = _take(sc.mat_scale, obj)  # (V, R, 2)

    # boxes
    ib = obj.clamp(max=nb - 1)
    Rb = _take(sc.box_R, ib)  # (V, R, 3, 3)
    hb = _take(sc.box_h, ib)
    pl = torch.einsum("vrj,vrji->vri", p - _take(sc.box_c, ib), Rb)
    k = (pl.abs() / hb.clamp(min=1e-9)).argmax(-1)  # (V, R) face axis
    sign = torch.gather(pl, -1, k[..., None]).sign()
    n_box = torch.gather(Rb, -1, k[..., None, None].expand(*k.shape, 3, 1))[..., 0] * sign
    pairs = torch.tensor([[1, 2], [0, 2], [0, 1]], device=p.device)[k]  # (V, R, 2)
    uv_box = (torch.gather(pl, -1, pairs) + torch.gather(hb, -1, pairs)) / scale

    # spheres
    is_ = (obj - nb).clamp(0, ns - 1)
    rs = _take(sc.sph_r, is_)
    ql = p - _take(sc.sph_c, is_)
    n_sph = ql / rs[..., None].clamp(min=1e-9)
    reps_s = (2 * math.pi * rs / scale[..., 0].abs()).round().clamp(min=1)
    u_s = torch.atan2(ql[..., 1], ql[..., 0]) / (2 * math.pi) * reps_s
    v_s = torch.asin(n_sph[..., 2].clamp(-1, 1)) * rs / scale[..., 1]
    uv_sph = torch.stack([u_s, v_s], -1)

    # cylinders
    ic = (obj - nb - ns).clamp(0, nc - 1)
    Rc = _take(sc.cyl_R, ic)
    rc, hh = _take(sc.cyl_r, ic), _take(sc.cyl_hh, ic)
    cl = torch.einsum("vrj,vrji->vri", p - _take(sc.cyl_c, ic), Rc)
    rho = cl[..., :2].norm(dim=-1)
    cap = (cl[..., 2].abs() - hh).abs() < (rho - rc).abs()
    radial = torch.cat([cl[..., :2] / rho[..., None].clamp(min=1e-9), torch.zeros_like(rho)[..., None]], -1)
    n_local = torch.where(cap[..., None], torch.stack([torch.zeros_like(rho), torch.zeros_like(rho),
                                                        cl[..., 2].sign()], -1), radial)
    n_cyl = torch.einsum("vrij,vrj->vri", Rc, n_local)
    reps_c = (2 * math.pi * rc / scale[..., 0].abs()).round().clamp(min=1)
    uv_side = torch.stack([torch.atan2(cl[..., 1], cl[..., 0]) / (2 * math.pi) * reps_c,
                           (cl[..., 2] + hh) / scale[..., 1]], -1)
    uv_cap = cl[..., :2] / scale
    uv_cyl = torch.where(cap[..., None], uv_cap, uv_side)

    is_box = (obj < nb)[..., None]
    is_sph = ((obj >= nb) & (obj < nb + ns))[..., None]
    normal = torch.where(is_box, n_box, torch.where(is_sph, n_sph, n_cyl))
    uv = torch.where(is_box, uv_box, torch.where(is_sph, uv_sph, uv_cyl))
    return normal, uv + _take(sc.mat_offset, obj)


# ------------------------------------------------------------------------------ render


def pixel_rays(poses: torch.Tensor, K: torch.Tensor, height: int, width: int,
               pixels: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Primary rays of ``V`` pinhole cameras.

    Args:
        poses: ``(V, 4, 4)`` camera-to-world (OpenCV axes). K: ``(V, 3, 3)``.
        pixels: optional ``(u, v)`` float pixel coordinates ``(R,)`` each; default all pixels of
            the ``height x width`` image in row-major order (pixel centres at integers).
    Returns:
        origins ``(V, R, 3)`` and directions ``(V, R, 3)`` with camera-z component 1, so that
        ``o + z * d`` is the point at depth ``z`` (metres) seen by the pixel.
    """
    dev = poses.device
    if pixels is None:
        v, u = torch.meshgrid(torch.arange(height, device=dev, dtype=torch.float32),
                              torch.arange(width, device=dev, dtype=torch.float32), indexing="ij")
        u, v = u.reshape(-1), v.reshape(-1)
    else:
        u, v = pixels
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    x = (u[None] - cx) / fx
    y = (v[None] - cy) / fy
    cam = torch.stack([x, y, torch.ones_like(x)], -1)  # (V, R, 3)
    d = torch.einsum("vij,vrj->vri", poses[:, :3, :3], cam)
    o = poses[:, None, :3, 3].expand_as(d)
    return o, d


def _tile_pixels(height: int, width: int, ts: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Pixel coordinates of the image padded to multiples of ``ts``, ordered tile by tile.

    Returns ``u``, ``v`` (``Hp*Wp``,) float32 and the padded ``Hp``, ``Wp``.
    """
    hp, wp = -(-height // ts) * ts, -(-width // ts) * ts
    v, u = torch.meshgrid(torch.arange(hp, device=device, dtype=torch.float32),
                          torch.arange(wp, device=device, dtype=torch.float32), indexing="ij")

    def order(x: torch.Tensor) -> torch.Tensor:
        return x.view(hp // ts, ts, wp // ts, ts).permute(0, 2, 1, 3).reshape(-1)

    return order(u), order(v), hp, wp


def _untile(x: torch.Tensor, height: int, width: int, ts: int, hp: int, wp: int) -> torch.Tensor:
    """Inverse of the tile order: ``(V, Hp*Wp, *F)`` -> ``(V, H, W, *F)`` (padding cropped)."""
    V, feat = x.shape[0], x.shape[2:]
    y = x.view(V, hp // ts, wp // ts, ts, ts, *feat).transpose(2, 3).reshape(V, hp, wp, *feat)
    return y[:, :height, :width]


@dataclass
class RenderOutput:
    """Rendered views.

    Attributes:
        rgb: ``(V, 3, H, W)`` float32 in [0, 1] (after exposure), or ``None`` for depth-only renders.
        depth: ``(V, H, W)`` float32 metres along the camera z axis, 0 where no surface (sky).
        pts3d: ``(V, H, W, 3)`` float32 world points (0 where invalid).
        valid: ``(V, H, W)`` bool, ``depth > 0``.
    """

    rgb: torch.Tensor | None
    depth: torch.Tensor
    pts3d: torch.Tensor
    valid: torch.Tensor


def _sky(d: torch.Tensor, seed_color: torch.Tensor) -> torch.Tensor:
    """Sky colour ``(V, R, 3)`` for view directions ``d`` ``(V, R, 3)`` (world z up)."""
    el = (d[..., 2] / d.norm(dim=-1)).clamp(-1, 1)[..., None]
    horizon = seed_color[:, None, 0]
    zenith = seed_color[:, None, 1]
    w = el.clamp(min=0) ** 0.6
    return horizon * (1 - w) + zenith * w


def render_views(scenes: PackedScenes, sidx: torch.Tensor, poses: torch.Tensor, K: torch.Tensor,
                 height: int, width: int, bank: TextureBank | None = None,
                 exposure: torch.Tensor | None = None, shadows: bool = True,
                 noise_std: torch.Tensor | None = None, noise_seed: int = 0,
                 chunk_elems: int = 2_000_000, fast: bool = True) -> RenderOutput:
    """Render ``V`` views: exact depth/points always, colour when ``bank`` is given.

    Args:
        scenes: packed scenes; ``sidx`` ``(V,)`` int64 scene of each view.
        poses: ``(V, 4, 4)`` camera-to-world (OpenCV); ``K``: ``(V, 3, 3)`` pixels.
        height, width: image size in pixels.
        bank: textures (on the same device); ``None`` renders geometry only.
        exposure: ``(V, 5)`` per-view ``[gain, gamma, wb_r, wb_g, wb_b]`` (default neutral).
        shadows: cast shadow rays toward each scene's light.
        noise_std: ``(V,)`` Gaussian sensor-noise std (in [0, 1] intensity units).
        noise_seed: seed of the noise generator.
        chunk_elems: memory bound for :func:`cast_rays`.
        fast: cull primitives per 16 x 16 pixel tile (:func:`cast_rays_tiled`); ``False`` uses the
            brute-force reference :func:`cast_rays` (same output up to float rounding).
    """
    poses.shape[0]
    sc = scenes.select(sidx)
    ts = 16 if min(height, width) >= 64 else 8
    u, v, hp, wp = _tile_pixels(height, width, ts, poses.device)
    o, d = pixel_rays(poses, K, height, width, pixels=(u, v))
    if fast:
        t, obj = cast_rays_tiled(sc, o, d, ts * ts, chunk_elems=chunk_elems)
    else:
        t, obj = cast_rays(sc, o, d, chunk_elems=chunk_elems)
    hit = torch.isfinite(t)
    depth = torch.where(hit, t, torch.zeros_like(t))
    pts = o + depth[..., None] * d
    pts = torch.where(hit[..., None], pts, torch.zeros_like(pts))
    out = RenderOutput(None, _untile(depth, height, width, ts, hp, wp).contiguous(),
                       _untile(pts, height, width, ts, hp, wp).contiguous(),
                       _untile(hit, height, width, ts, hp, wp).contiguous())
    if bank is None:
        return out

    normal, uv = _surface(sc, pts, obj)
    dn = d / d.norm(dim=-1, keepdim=True)
    cos = (normal * dn).sum(-1)
    normal = normal * torch.where(cos > 0, -1.0, 1.0)[..., None]  # two-sided: face the camera
    cos = cos.abs().clamp(min=0.15)

    scale = _take(sc.mat_scale, obj).abs().amin(-1)
    footprint = depth / K[:, 0, 0, None] / cos / scale * bank.size
    albedo = bank.sample(_take(sc.mat_tex, obj), uv[..., 0], uv[..., 1], footprint)
    albedo = albedo * _take(sc.mat_tint, obj)

    to_light = sc.light[:, None] - pts
    dist = to_light.norm(dim=-1).clamp(min=1e-6)
    ndl = ((normal * to_light).sum(-1) / dist).clamp(min=0)
    falloff = 1.0 / (1.0 + (dist / sc.light_range[:, None]) ** 2)
    if shadows:
        start = pts + normal * (1e-3 + 1e-4 * depth[..., None])
        if fast:
            t_s, _ = cast_rays_tiled(sc, start, sc.light[:, None] - start, ts * ts, apex=sc.light,
                                     ray_ok=hit & (ndl > 0), eps=1e-5, chunk_elems=chunk_elems)
        else:
            t_s, _ = cast_rays(sc, start, sc.light[:, None] - start, eps=1e-5, chunk_elems=chunk_elems)
        ndl = ndl * (t_s >= 1.0).float()
    amb = sc.ambient[:, None]
    shade = amb + (1 - amb) * 1.6 * ndl * falloff
    radiance = albedo * shade[..., None] * sc.light_color[:, None]

    sky_cols = torch.stack([sc.light_color * 0.85, sc.light_color * torch.tensor([0.45, 0.62, 0.95],
                                                                                  device=pts.device)], 1)
    rgb = torch.where(hit[..., None], radiance, _sky(d, sky_cols))
    if exposure is not None:
        gain, gamma, wb = exposure[:, 0, None, None], exposure[:, 1, None, None], exposure[:, None, 2:5]
        rgb = (rgb * gain * wb).clamp(min=0) ** (1.0 / gamma)
    if noise_std is not None:
        gen = torch.Generator(device=rgb.device).manual_seed(noise_seed)
        rgb = rgb + torch.randn(rgb.shape, generator=gen, device=rgb.device) * noise_std[:, None, None]
    rgb = _untile(rgb.clamp(0, 1), height, width, ts, hp, wp).permute(0, 3, 1, 2).contiguous()
    out.rgb = rgb
    return out
