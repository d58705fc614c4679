"""Dense stage: per-pixel depth at full resolution with cameras and pair similarities fixed.

For image ``k`` with centre ``C`` and world ray ``D(p) = R K^-1 (u, v, 1)``, the point of pixel
``p`` is ``C + d D(p)``. Every edge containing ``k`` predicts a target ``Y_e(p)``; the depth
minimising ``sum_e w_e ||C + d D - Y_e||^2`` is ``sum_e w_e D.(Y_e - C) / (|D|^2 sum_e w_e)``.
For the (default) Euclidean-distance loss the minimiser is found by IRLS, reweighting with
``w_e / ||C + d D - Y_e||`` (Weiszfeld). Each pass streams the predictions once. Images whose
depth is known (``fixed``) are skipped: their edge sides are neither solved nor counted in the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..geometry.camera import normalize_pixels
from ..predictions import PairPredictions
from .data import CoarseData

if TYPE_CHECKING:
    from .coarse import CoarseResult

__all__ = ["dense_depth", "dense_depth_by_image", "upsample_coarse", "upsample_one", "world_rays"]


def world_rays(
    data: CoarseData, R: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, pp: torch.Tensor,
    skew: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(N, A, 3)`` world directions (unit camera-z) of every full-resolution pixel (``skew
    (N,)``: the cameras' ``K[0, 1]``, pixels; 0 when ``None``)."""
    return _rays(data.pixel_uv(), R, fx[:, None], fy[:, None], pp[:, None], 0.0 if skew is None else skew[:, None])


def _rays(uv: torch.Tensor, R: torch.Tensor, fx, fy, pp: torch.Tensor, skew) -> torch.Tensor:
    """World directions ``(..., A, 3)`` (unit camera-z) of pixels ``uv (..., A, 2)`` of cameras
    with rotations ``R (..., 3, 3)`` (intrinsics broadcast as :func:`normalize_pixels` takes them)."""
    xy = normalize_pixels(uv, fx, fy, pp, skew)
    return torch.cat([xy, torch.ones_like(xy[..., :1])], -1) @ R.transpose(-1, -2)


def upsample_coarse(data: CoarseData, values: torch.Tensor) -> torch.Tensor:
    """Bilinear upsampling of per-image coarse values ``(N, n)`` to ``(N, A)`` (border clamp)."""
    N, A = data.valid_full.shape
    out = torch.zeros(N, A, dtype=values.dtype, device=values.device)
    for k, (h, w) in enumerate(data.shapes):
        out[k, : h * w] = upsample_one(data, values, k)
    return out


def upsample_one(data: CoarseData, values: torch.Tensor, k: int) -> torch.Tensor:
    """Image ``k``'s coarse values of ``(N, n)`` upsampled to its ``(H * W,)`` pixels."""
    (h, w), (hs, ws) = data.shapes[k], data.grid[k]
    s, off = data.stride, data.offset
    img = values[k, : hs * ws].reshape(1, 1, hs, ws)
    if (hs, ws) == (h, w):
        return img.reshape(-1)
    u = (torch.arange(w, device=values.device, dtype=values.dtype) - off) / s
    v = (torch.arange(h, device=values.device, dtype=values.dtype) - off) / s
    gx = 2 * u / max(ws - 1, 1) - 1
    gy = 2 * v / max(hs - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    up = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return up.reshape(-1)


class _Sides:
    """Every edge side's per-pixel terms (:func:`_side_terms`) chunk by chunk: streamed from the
    predictions, and kept for the next pass when ``keep``."""

    def __init__(self, data: CoarseData, D: torch.Tensor, cams: CoarseResult, conf_trf: str, keep: bool) -> None:
        self.data, self.D, self.cams, self.conf_trf, self.keep = data, D, cams, conf_trf, keep
        self.cached: list = []

    def __iter__(self):
        if self.cached:
            yield from self.cached
            return
        c = self.cams
        for a, b, chunk in self.data.store.chunks():
            terms = _side_terms(self.data, self.D, c.C, c.s, c.Rp, c.Tp, self.conf_trf, a, b, chunk)
            if self.keep:
                self.cached.append(terms)
            yield terms


def _residual(d: torch.Tensor, DD: torch.Tensor, DV: torch.Tensor, VV: torch.Tensor, dist: str) -> torch.Tensor:
    """Per pixel the distance (``'l1'``) or squared distance (``'l2'``) ``|d D - V|`` from
    ``|D|^2``, ``D.V`` and ``|V|^2`` at depth ``d``."""
    res = (d * (d * DD - 2 * DV) + VV).clamp(min=0)
    return res.sqrt() if dist == "l1" else res


def _side_terms(
    data: CoarseData, D: torch.Tensor, C: torch.Tensor, pw_s: torch.Tensor, pw_R: torch.Tensor,
    pw_T: torch.Tensor, conf_trf: str, a: int, b: int, chunk: tuple[torch.Tensor, ...],
):
    """Per edge side of edges ``a:b``: image index ``(c,)`` and per pixel ``(c, A)`` the weight
    ``w``, ``D.V`` and ``|V|^2`` with ``V = Y - C`` the target relative to the camera centre.
    The residual of depth ``d`` is ``sqrt(d^2 |D|^2 - 2 d D.V + |V|^2)``."""
    from .params import conf_transform

    p1, c1, p2, c2 = chunk
    M = (pw_s[a:b, None, None] * pw_R[a:b]).transpose(1, 2)
    out = []
    for k, P, c in ((data.ei[a:b], p1, c1), (data.ej[a:b], p2, c2)):
        V = torch.baddbmm((pw_T[a:b] - C[k])[:, None, :], P, M)
        w = conf_transform(c.clamp(min=1e-12), conf_trf).clamp(min=0) * data.user_mask[k]
        ok = torch.isfinite(V).all(-1)
        V = torch.where(ok[..., None], V, torch.zeros_like(V))
        out.append((k, w * ok, (V * D[k]).sum(-1), (V * V).sum(-1)))
    return out


@torch.no_grad()
def dense_depth(
    data: CoarseData,
    cams: CoarseResult,
    depth0: torch.Tensor,
    conf_trf: str,
    dist: str,
    iters: int,
    progress: bool = False,
    cache_bytes: int = 1 << 31,
    fixed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """Full-resolution depths ``(N, A)`` minimising the alignment loss with everything else fixed.

    Args:
        cams: the fixed cameras (``R``, ``C``, ``fx``, ``fy``, ``pp``, ``skew``) and pair
            similarities (an edge's prediction ``P`` maps to ``s Rp P + Tp`` in the world).
        depth0: ``(N, A)`` starting depth (the upsampled coarse solution); pixels no edge
            constrains keep it.
        iters: IRLS passes (``'l2'`` uses one).
        cache_bytes: the per-pixel scalars of every edge side (3 float32 each) are kept between
            passes when they fit in this many bytes; otherwise every pass streams the predictions.
        fixed: ``(N,)`` bool, images whose depth is known: they keep ``depth0`` and their edge
            sides are left out (of the solve and of the loss).

    Returns:
        ``(depth (N, A), loss)`` with ``loss`` the reference loss (area-normalised) at the result.
    """
    D = world_rays(data, cams.R, cams.fx, cams.fy, cams.pp, cams.skew)
    DD = (D * D).sum(-1)
    depth = depth0.clone()
    floor = 1e-6 * depth0.abs().amax(1, keepdim=True)
    n_pass = 1 if dist == "l2" else max(1, iters)
    E, A = len(data.ei), data.valid_full.shape[1]
    sides = _Sides(data, D, cams, conf_trf, keep=E * A * 2 * 3 * 4 <= cache_bytes)
    solved = None if fixed is None else ~fixed.to(depth.device)
    area = data.valid_full.sum(1).float()
    A_i, A_j = area[data.ei].sum(), area[data.ej].sum()

    loss = float("nan")
    bar = tqdm(total=n_pass + 1, desc="dense depth", disable=not progress)
    for it in range(n_pass + 1):
        final = it == n_pass
        num = torch.zeros_like(depth)
        den = torch.zeros_like(depth)
        tot = torch.zeros((), device=depth.device, dtype=torch.float64)
        for terms in sides:
            for side, (k, w, dv, vv) in enumerate(terms):
                if solved is not None:
                    w = w * solved[k][:, None]
                dk = depth[k]
                if final or dist == "l1":
                    res = _residual(dk, DD[k], dv, vv, dist)
                    if final:
                        tot += ((w * res).sum() / (A_i if side == 0 else A_j)).double()
                        continue
                    w = w / res.clamp(min=1e-4 * dk.abs().clamp(min=1e-8))
                num.index_add_(0, k, w * dv)
                den.index_add_(0, k, w)
        bar.update(1)
        if final:
            loss = float(tot)
            break
        ok = den > 0
        depth = torch.where(ok, num / (den * DD).clamp(min=1e-30), depth)
        depth = torch.maximum(depth, floor)
    bar.close()
    return depth, loss


def _image_sides(preds: PairPredictions, sides: list[tuple[int, int]], D: torch.Tensor, C: torch.Tensor,
                 pw_s: torch.Tensor, pw_R: torch.Tensor, pw_T: torch.Tensor, user_mask: torch.Tensor,
                 conf_trf: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's edge sides ``(e, 0 | 1)`` read from ``preds``: per side and pixel ``(s, A)`` the
    weight, ``D.V`` and ``|V|^2`` (``V`` the side's target minus the centre ``C``, ``D (A, 3)`` the
    pixels' world rays)."""
    from .params import conf_transform

    ws, dvs, vvs = [], [], []
    for e, side in sides:
        P = (preds.pts3d_1 if side == 0 else preds.pts3d_2_in_1)[e].to(D.device).float().reshape(-1, 3)
        c = torch.nan_to_num((preds.conf_1 if side == 0 else preds.conf_2)[e].to(D.device).float().reshape(-1))
        V = P @ (pw_s[e] * pw_R[e]).T + (pw_T[e] - C)
        ok = torch.isfinite(V).all(-1)
        V = torch.where(ok[:, None], V, torch.zeros_like(V))
        ws.append(conf_transform(c.clamp(min=1e-12), conf_trf).clamp(min=0) * user_mask * ok)
        dvs.append((V * D).sum(-1))
        vvs.append((V * V).sum(-1))
    return torch.stack(ws), torch.stack(dvs), torch.stack(vvs)


@torch.no_grad()
def dense_depth_by_image(
    data: CoarseData,
    preds: PairPredictions,
    cams: CoarseResult,
    conf_trf: str,
    dist: str,
    iters: int,
    progress: bool = False,
    out: Callable[[int, torch.Tensor], None] | None = None,
    fixed: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], float]:
    """:func:`dense_depth` streamed image by image, for predictions too big for memory.

    For each image ``k`` the edge sides that predict it (first image of ``(k, j)``, second of
    ``(i, k)``) are read once from ``preds`` (e.g. a store on disk); all IRLS passes run on them and
    they are dropped before the next image. Every prediction is read exactly once, and memory
    holds one image's sides and its depth: it does not grow with the number of images or pairs.
    Same results as :func:`dense_depth` up to summation order (its twin, tested against it).

    Args:
        data: the edge data of ``preds`` (:func:`~pointmap.align.data.build_edge_data`).
        preds: the pair predictions ``data`` was built from.
        cams: as :func:`dense_depth`; its coarse log-depths ``log_depth (N, n)``, upsampled per
            image, are the start.
        out: called as ``out(k, depth_k)`` with image ``k``'s ``(H * W,)`` depth as soon as it is
            solved (the returned list then holds empty tensors).
        fixed: ``(N,)`` bool, images whose depth is known: their sides are not read, their depth
            is the upsampled start.
        Others: as :func:`dense_depth`.

    Returns:
        ``(depths, loss)``: per image its ``(H * W,)`` depth (row-major), and the reference loss.
    """
    dev = data.ei.device
    ei, ej = data.ei.tolist(), data.ej.tolist()
    sides: list[list[tuple[int, int]]] = [[] for _ in data.shapes]
    for e, (i, j) in enumerate(zip(ei, ej)):
        sides[i].append((e, 0))
        sides[j].append((e, 1))
    area = data.valid_full.sum(1).float()
    norm = (area[data.ei].sum(), area[data.ej].sum())
    n_pass = 1 if dist == "l2" else max(1, iters)
    tot = torch.zeros((), dtype=torch.float64, device=dev)
    depths: list[torch.Tensor] = []
    for k in tqdm(range(len(data.shapes)), desc="dense depth", disable=not progress, leave=False):
        h, w = data.shapes[k]
        hw = h * w
        d0 = upsample_one(data, cams.log_depth, k).exp()
        if not sides[k] or (fixed is not None and bool(fixed[k])):
            depths.append(d0 if out is None else d0.new_zeros(0))
            if out is not None:
                out(k, d0)
            continue
        skew = 0.0 if cams.skew is None else cams.skew[k]
        D = _rays(data.pixel_uv(k), cams.R[k], cams.fx[k], cams.fy[k], cams.pp[k], skew)
        DD = (D * D).sum(-1)
        W_, DV, VV = _image_sides(preds, sides[k], D, cams.C[k], cams.s, cams.Rp, cams.Tp,
                                  data.user_mask[k, :hw], conf_trf)
        which = [side for _, side in sides[k]]
        depth = d0.clone()
        floor = 1e-6 * d0.abs().max()
        for _ in range(n_pass):
            wgt = W_
            if dist == "l1":
                wgt = W_ / _residual(depth, DD, DV, VV, dist).clamp(min=1e-4 * depth.abs().clamp(min=1e-8))
            num, den = (wgt * DV).sum(0), wgt.sum(0)
            ok = den > 0
            depth = torch.where(ok, num / (den * DD).clamp(min=1e-30), depth)
            depth = torch.maximum(depth, floor)
        per_side = (W_ * _residual(depth, DD, DV, VV, dist)).sum(1).double()
        side_t = torch.tensor(which, device=dev)
        tot += (per_side[side_t == 0].sum() / norm[0]) + (per_side[side_t == 1].sum() / norm[1])
        if out is not None:
            out(k, depth)
            depths.append(depth.new_zeros(0))
        else:
            depths.append(depth)
    return depths, float(tot)
