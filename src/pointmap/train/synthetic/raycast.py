"""Analytic ray casting of boxes, spheres and capped cylinders in pure PyTorch (CPU or CUDA).

Rays are cast for many views at once: ``V`` views of ``S`` packed scenes (each view names its
scene), ``R`` rays per view, all primitives of the scene tested per ray (objects are padded to the
largest scene of the batch), processed in chunks of rays to bound memory. :func:`cast_rays` is the
brute-force reference; :func:`cast_rays_tiled` culls primitives per tile of rays (same output up
to float rounding). A hit's ray parameter ``t`` is measured in units of the ray direction.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .scenes import Scene

__all__ = ["PackedScenes", "pack_scenes", "cast_rays", "cast_rays_tiled"]

_INF = float("inf")


@dataclass
class PackedScenes:
    """``S`` scenes as padded tensors (see :class:`~pointmap.train.synthetic.scenes.Scene`).

    ``*_ok`` marks real (non-padding) primitives. Rotations are stored world-from-local
    (``box_R``, ``cyl_R``, ``(S, N, 3, 3)``). Materials ``mat_*`` are indexed in the padded order
    ``[boxes (Nb), spheres (Ns), cylinders (Nc)]``.
    """

    box_c: torch.Tensor
    box_R: torch.Tensor
    box_h: torch.Tensor
    box_ok: torch.Tensor
    sph_c: torch.Tensor
    sph_r: torch.Tensor
    sph_ok: torch.Tensor
    cyl_c: torch.Tensor
    cyl_R: torch.Tensor
    cyl_r: torch.Tensor
    cyl_hh: torch.Tensor
    cyl_ok: torch.Tensor
    mat_tex: torch.Tensor
    mat_scale: torch.Tensor
    mat_offset: torch.Tensor
    mat_tint: torch.Tensor
    light: torch.Tensor
    light_color: torch.Tensor
    ambient: torch.Tensor
    light_range: torch.Tensor

    @property
    def counts(self) -> tuple[int, int, int]:
        """Padded numbers of boxes, spheres and cylinders."""
        return self.box_c.shape[1], self.sph_c.shape[1], self.cyl_c.shape[1]

    def select(self, sidx: torch.Tensor) -> PackedScenes:
        """The scenes ``sidx`` ``(V,)``, one per view (tensors gathered along dim 0)."""
        return PackedScenes(**{f.name: getattr(self, f.name)[sidx] for f in fields(self)})


def pack_scenes(scenes: list[Scene], device: torch.device | str = "cpu") -> PackedScenes:
    """Pad and stack scenes into tensors on ``device`` (float32; at least one slot per type)."""
    nb = max(1, max(len(s.box_c) for s in scenes))
    ns = max(1, max(len(s.sph_c) for s in scenes))
    nc = max(1, max(len(s.cyl_c) for s in scenes))

    def pad(arrs: list[np.ndarray], n: int, fill: float = 0.0) -> torch.Tensor:
        out = []
        for a in arrs:
            shape = (n,) + a.shape[1:]
            buf = np.full(shape, fill, dtype=a.dtype)
            buf[: len(a)] = a
            out.append(buf)
        return torch.from_numpy(np.stack(out)).to(device)

    def ok(lens: list[int], n: int) -> torch.Tensor:
        return (torch.arange(n)[None, :] < torch.tensor(lens)[:, None]).to(device)

    eye = np.eye(3, dtype=np.float32)
    mats = {}
    for name in ("mat_tex", "mat_scale", "mat_offset", "mat_tint"):
        per = []
        for s in scenes:
            a = getattr(s, name)
            nbs, nss = len(s.box_c), len(s.sph_c)
            parts = [a[:nbs], a[nbs:nbs + nss], a[nbs + nss:]]
            fill = 1.0 if name in ("mat_scale", "mat_tint") else 0
            padded = []
            for part, n in zip(parts, (nb, ns, nc)):
                buf = np.full((n,) + a.shape[1:], fill, dtype=a.dtype)
                buf[: len(part)] = part
                padded.append(buf)
            per.append(np.concatenate(padded))
        mats[name] = torch.from_numpy(np.stack(per)).to(device)
    return PackedScenes(
        box_c=pad([s.box_c for s in scenes], nb), box_R=pad([s.box_R if len(s.box_R) else eye[None] for s in scenes], nb),
        box_h=pad([s.box_h for s in scenes], nb), box_ok=ok([len(s.box_c) for s in scenes], nb),
        sph_c=pad([s.sph_c for s in scenes], ns), sph_r=pad([s.sph_r for s in scenes], ns),
        sph_ok=ok([len(s.sph_c) for s in scenes], ns),
        cyl_c=pad([s.cyl_c for s in scenes], nc), cyl_R=pad([s.cyl_R if len(s.cyl_R) else eye[None] for s in scenes], nc),
        cyl_r=pad([s.cyl_r for s in scenes], nc), cyl_hh=pad([s.cyl_hh for s in scenes], nc),
        cyl_ok=ok([len(s.cyl_c) for s in scenes], nc),
        light=torch.from_numpy(np.stack([s.light for s in scenes])).to(device),
        light_color=torch.from_numpy(np.stack([s.light_color for s in scenes])).to(device),
        ambient=torch.tensor([s.ambient for s in scenes], dtype=torch.float32, device=device),
        light_range=torch.tensor([s.light_range for s in scenes], dtype=torch.float32, device=device),
        **mats,
    )


# --------------------------------------------------------------------------- intersection


def _to_local(x: torch.Tensor, R: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """``R^T (x - c)`` for rays ``x`` ``(V, r, 3)`` and objects ``R`` ``(V, N, 3, 3)``, ``c`` ``(V, N, 3)``
    (``c=None`` for directions) -> ``(V, r, N, 3)``."""
    V, r, _ = x.shape
    N = R.shape[1]
    out = torch.bmm(x, R.permute(0, 2, 1, 3).reshape(V, 3, N * 3)).view(V, r, N, 3)
    if c is not None:
        out = out - torch.einsum("vnj,vnji->vni", c, R)[:, None]
    return out


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1e-12, torch.full_like(x, 1e-12), x)


def _t_boxes(o: torch.Tensor, d: torch.Tensor, c: torch.Tensor, R: torch.Tensor, half: torch.Tensor,
             real: torch.Tensor, eps: float) -> torch.Tensor:
    """Ray parameters ``(V, r, Nb)`` of the first box hit beyond ``eps`` (inf if none); a ray that
    starts inside a box hits its far side. Boxes: ``c`` ``(V, Nb, 3)``, ``R`` ``(V, Nb, 3, 3)``,
    ``half`` ``(V, Nb, 3)``, ``real`` ``(V, Nb)`` (padding slots never hit)."""
    ol = _to_local(o, R, c)
    inv = 1.0 / _nonzero(_to_local(d, R, None))
    h = half[:, None]
    t1 = (-h - ol) * inv
    t2 = (h - ol) * inv
    tn = torch.minimum(t1, t2).amax(-1)
    tf = torch.maximum(t1, t2).amin(-1)
    t = torch.where(tn > eps, tn, tf)
    ok = (tf >= tn) & (t > eps) & real[:, None]
    return torch.where(ok, t, torch.full_like(t, _INF))


def _t_spheres(o: torch.Tensor, d: torch.Tensor, c: torch.Tensor, radius: torch.Tensor,
               real: torch.Tensor, eps: float) -> torch.Tensor:
    """Ray parameters ``(V, r, Ns)`` of sphere hits (see :func:`_t_boxes`)."""
    oc = o[:, :, None] - c[:, None]  # (V, r, N, 3)
    a = (d * d).sum(-1, keepdim=True)  # (V, r, 1)
    b = (oc * d[:, :, None]).sum(-1)
    # a * r^2 - |oc x d|^2: the discriminant without the cancellation of b^2 - a * (|oc|^2 - r^2)
    disc = a * radius[:, None] ** 2 - torch.linalg.cross(oc, d[:, :, None].expand_as(oc)).square().sum(-1)
    sq = disc.clamp(min=0).sqrt()
    t0, t1 = (-b - sq) / a, (-b + sq) / a
    t = torch.where(t0 > eps, t0, t1)
    ok = (disc >= 0) & (t > eps) & real[:, None]
    return torch.where(ok, t, torch.full_like(t, _INF))


def _t_cylinders(o: torch.Tensor, d: torch.Tensor, c: torch.Tensor, R: torch.Tensor, radius: torch.Tensor,
                 half_height: torch.Tensor, real: torch.Tensor, eps: float) -> torch.Tensor:
    """Ray parameters ``(V, r, Nc)`` of capped-cylinder hits (side or caps, nearest beyond ``eps``)."""
    ol = _to_local(o, R, c)
    dl = _to_local(d, R, None)
    r = radius[:, None]
    hh = half_height[:, None]
    ox, oy, oz = ol.unbind(-1)
    dx, dy, dz = dl.unbind(-1)
    a = _nonzero(dx * dx + dy * dy)
    b = ox * dx + oy * dy
    disc = a * r * r - (ox * dy - oy * dx) ** 2  # stable form of b^2 - a (ox^2 + oy^2 - r^2)
    sq = disc.clamp(min=0).sqrt()
    inf = torch.full_like(ox, _INF)
    best = inf
    for ts in ((-b - sq) / a, (-b + sq) / a):
        ok = (disc >= 0) & (ts > eps) & ((oz + ts * dz).abs() <= hh)
        best = torch.minimum(best, torch.where(ok, ts, inf))
    dz_ = _nonzero(dz)
    for zc in (hh, -hh):
        tc = (zc - oz) / dz_
        x, y = ox + tc * dx, oy + tc * dy
        ok = (tc > eps) & (x * x + y * y <= r * r)
        best = torch.minimum(best, torch.where(ok, tc, inf))
    return torch.where(real[:, None], best, inf)


def cast_rays(sc: PackedScenes, o: torch.Tensor, d: torch.Tensor, eps: float = 1e-4,
              chunk_elems: int = 2_000_000, chunk_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit of every ray against every primitive of its view's scene.

    Args:
        sc: scenes already selected per view (:meth:`PackedScenes.select`), ``V`` of them.
        o, d: ``(V, R, 3)`` ray origins and (not necessarily unit) directions, world metres.
        eps: hits with ray parameter ``<= eps`` are ignored (in units of ``|d|``).
        chunk_elems: bound on ``V * rays * primitives`` evaluated at once (memory).
        chunk_dim: split the work along rays (1) or along views (0).
    Returns:
        ``t`` ``(V, R)`` float32 ray parameter of the hit (``inf`` for none), and ``obj`` ``(V, R)``
        int64 index of the primitive hit in the padded order (boxes, spheres, cylinders).
    """
    V, R, _ = o.shape
    n_total = sum(sc.counts)
    if chunk_dim == 1:
        step = max(1, chunk_elems // max(1, V * n_total))
    else:
        step = max(1, chunk_elems // max(1, R * n_total))
    ts, objs = [], []
    for s in range(0, o.shape[chunk_dim], step):
        if chunk_dim == 1:
            oc, dc, part = o[:, s:s + step], d[:, s:s + step], sc
        else:
            oc, dc = o[s:s + step], d[s:s + step]
            part = _slice_views(sc, slice(s, s + step))
        t_all = torch.cat([_t_boxes(oc, dc, part.box_c, part.box_R, part.box_h, part.box_ok, eps),
                           _t_spheres(oc, dc, part.sph_c, part.sph_r, part.sph_ok, eps),
                           _t_cylinders(oc, dc, part.cyl_c, part.cyl_R, part.cyl_r, part.cyl_hh, part.cyl_ok, eps)],
                          dim=-1)
        t, obj = t_all.min(-1)
        ts.append(t)
        objs.append(obj)
    return torch.cat(ts, chunk_dim), torch.cat(objs, chunk_dim)


_GEOMETRY_FIELDS = ("box_c", "box_R", "box_h", "box_ok", "sph_c", "sph_r", "sph_ok",
                    "cyl_c", "cyl_R", "cyl_r", "cyl_hh", "cyl_ok")


def _slice_views(sc: PackedScenes, sl: slice) -> PackedScenes:
    """The geometry of views ``sl`` (materials and lights are left untouched)."""
    kw = {f.name: getattr(sc, f.name) for f in fields(sc)}
    kw.update({k: kw[k][sl] for k in _GEOMETRY_FIELDS})
    return PackedScenes(**kw)


def _bounding_spheres(sc: PackedScenes) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per primitive type: centres ``(V, N, 3)``, radii ``(V, N)`` and real-slot mask ``(V, N)``."""
    return [(sc.box_c, sc.box_h.norm(dim=-1), sc.box_ok),
            (sc.sph_c, sc.sph_r, sc.sph_ok),
            (sc.cyl_c, torch.sqrt(sc.cyl_r**2 + sc.cyl_hh**2), sc.cyl_ok)]


def cast_rays_tiled(sc: PackedScenes, o: torch.Tensor, d: torch.Tensor, tile: int,
                    apex: torch.Tensor | None = None, ray_ok: torch.Tensor | None = None,
                    eps: float = 1e-4, chunk_elems: int = 2_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Same result as :func:`cast_rays`, testing each group of ``tile`` consecutive rays only
    against the primitives whose bounding spheres meet the group's bounding cone.

    The cone's apex is the rays' common origin (``apex=None``: primary rays, the cone bounds the
    directions) or ``apex`` ``(V, 3)`` (shadow rays towards a light at ``apex``: the cone from the
    light bounds the ray origins, hence the segments origin -> light when ``d = apex - o``).
    Work is spent only on (tile, candidate primitive) pairs; the per-tile minimum is taken with
    ``scatter_reduce``.

    Args:
        o, d: ``(V, R, 3)`` with ``R`` a multiple of ``tile``; consecutive rays should be coherent
            (e.g. square pixel tiles) for the culling to pay off.
        ray_ok: ``(V, R)`` rays to take into account for the cone (others get arbitrary results).
    Returns:
        ``t`` ``(V, R)``, ``obj`` ``(V, R)`` as :func:`cast_rays` (ties go to the lowest index).
    """
    V, R, _ = o.shape
    T = R // tile
    if T * tile != R:
        raise ValueError(f"ray count {R} is not a multiple of the tile size {tile}")
    ot, dt = o.reshape(V * T, tile, 3), d.reshape(V * T, tile, 3)
    o4, d4 = o.view(V, T, tile, 3), d.view(V, T, tile, 3)
    if apex is None:
        top = o4[:, :, 0]  # (V, T, 3)
        dirs = d4
    else:
        top = apex[:, None].expand(V, T, 3)
        dirs = o4 - top[:, :, None]
    length = dirs.norm(dim=-1)
    dn = dirs / length[..., None].clamp(min=1e-12)
    okr = torch.ones(V, T, tile, dtype=torch.bool, device=o.device) if ray_ok is None else ray_ok.view(V, T, tile)
    axis = (dn * okr[..., None]).sum(2)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    cos_a = torch.where(okr, (dn * axis[:, :, None]).sum(-1), torch.ones_like(length)).amin(-1)
    alpha = torch.acos(cos_a.clamp(-1, 1))  # (V, T) cone half-angle
    max_len = torch.where(okr, length, torch.zeros_like(length)).amax(-1) if apex is not None else None

    nb, ns, _ = sc.counts
    offsets = (0, nb, nb + ns)
    t_parts, tile_parts, obj_parts = [], [], []
    for kind, ((c, r, real), off) in enumerate(zip(_bounding_spheres(sc), offsets)):
        v = c[:, None] - top[:, :, None]  # (V, T, N, 3)
        dist = v.norm(dim=-1)
        cos_t = (v * axis[:, :, None]).sum(-1) / dist.clamp(min=1e-12)
        theta = torch.acos(cos_t.clamp(-1, 1))
        beta = torch.asin((r[:, None] / dist.clamp(min=1e-12)).clamp(max=1.0))
        cand = real[:, None] & ((dist <= r[:, None]) | (theta <= alpha[..., None] + beta + 1e-4))
        if max_len is not None:
            cand &= dist - r[:, None] <= max_len[..., None]
        vi, ti, ni = cand.nonzero(as_tuple=True)
        if vi.numel() == 0:
            continue
        step = max(1, chunk_elems // tile)
        for s in range(0, vi.numel(), step):
            pv, pt, pn = vi[s:s + step], ti[s:s + step], ni[s:s + step]
            flat_tile = pv * T + pt
            ro, rd = ot[flat_tile], dt[flat_tile]  # (P, tile, 3)
            one = torch.ones(pv.numel(), 1, dtype=torch.bool, device=o.device)
            if kind == 0:
                tt = _t_boxes(ro, rd, sc.box_c[pv, pn, None], sc.box_R[pv, pn, None], sc.box_h[pv, pn, None], one, eps)
            elif kind == 1:
                tt = _t_spheres(ro, rd, sc.sph_c[pv, pn, None], sc.sph_r[pv, pn, None], one, eps)
            else:
                tt = _t_cylinders(ro, rd, sc.cyl_c[pv, pn, None], sc.cyl_R[pv, pn, None], sc.cyl_r[pv, pn, None],
                                  sc.cyl_hh[pv, pn, None], one, eps)
            t_parts.append(tt[..., 0])
            tile_parts.append(flat_tile)
            obj_parts.append(pn + off)
    t_best = torch.full((V * T, tile), _INF, device=o.device)
    obj_best = torch.zeros((V * T, tile), dtype=torch.long, device=o.device)
    if t_parts:
        tp, tl, ob = torch.cat(t_parts), torch.cat(tile_parts), torch.cat(obj_parts)
        idx = tl[:, None].expand_as(tp)
        t_best.scatter_reduce_(0, idx, tp, reduce="amin")
        winner = (tp == t_best[tl]) & torch.isfinite(tp)
        big = torch.full_like(ob, torch.iinfo(torch.long).max)
        cand_obj = torch.where(winner, ob[:, None], big[:, None])
        obj_best = torch.full((V * T, tile), torch.iinfo(torch.long).max, dtype=torch.long, device=o.device)
        obj_best.scatter_reduce_(0, idx, cand_obj, reduce="amin")
        obj_best = torch.where(torch.isfinite(t_best), obj_best, torch.zeros_like(obj_best))
    return t_best.view(V, R), obj_best.view(V, R)


