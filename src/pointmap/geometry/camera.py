"""Pinhole camera helpers: pixel grids, intrinsics, focal estimation from pointmaps, unprojection.

Conventions: OpenCV axes (x right, y down, z forward); pixel centres at integer coordinates, so pixel
``(u, v)`` of an ``(H, W)`` image has ``u`` in ``0..W-1`` (column) and ``v`` in ``0..H-1`` (row).
The reference principal point is ``(W/2, H/2)``.
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

import numpy as np
import torch

from ..errors import InputError

__all__ = [
    "pixel_grid",
    "default_principal_point",
    "intrinsics_matrix",
    "estimate_focal",
    "estimate_focal_from_pixels",
    "normalize_pixels",
    "rescale_intrinsics",
    "unproject_depth",
    "unproject_pixels",
    "depth_to_world",
    "pixels_to_world",
    "project",
    "pixels_to_corner_origin",
    "pixels_from_corner_origin",
    "intrinsics_to_corner_origin",
    "intrinsics_from_corner_origin",
    "opencv_opengl_flip",
]

FocalMode = Literal["weiszfeld", "median"]


def pixel_grid(
    H: int, W: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(H, W, 2)`` pixel coordinates ``(u, v)`` (column first) at integer positions."""
    v, u = torch.meshgrid(
        torch.arange(H, device=device, dtype=dtype),
        torch.arange(W, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def default_principal_point(H: int, W: int, **kw) -> torch.Tensor:
    """The reference principal point ``(W/2, H/2)`` as a ``(2,)`` tensor (pixels)."""
    return torch.tensor([W / 2, H / 2], **kw)


def intrinsics_matrix(focal: torch.Tensor | float, pp: torch.Tensor) -> torch.Tensor:
    """Pinhole matrices ``(..., 3, 3)`` from focals ``(...)`` (fx = fy) or ``(..., 2)`` (fx, fy)
    and principal points ``(..., 2)``, all in pixels."""
    pp = torch.as_tensor(pp)
    focal = torch.as_tensor(focal, dtype=pp.dtype, device=pp.device)
    if focal.ndim == pp.ndim and focal.shape[-1] == 2:
        fx, fy = focal[..., 0], focal[..., 1]
    else:
        fx = fy = focal
    fx, fy = torch.broadcast_tensors(fx, fy)
    shape = torch.broadcast_shapes(fx.shape, pp.shape[:-1])
    K = torch.zeros(shape + (3, 3), dtype=pp.dtype, device=pp.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = pp[..., 0]
    K[..., 1, 2] = pp[..., 1]
    K[..., 2, 2] = 1
    return K


def estimate_focal_from_pixels(
    pts: torch.Tensor,
    uv: torch.Tensor,
    pp: torch.Tensor,
    mode: FocalMode = "weiszfeld",
    weiszfeld_iters: int = 10,
) -> torch.Tensor:
    """Focal (pixels) of a pinhole camera at the origin that best projects camera-frame points.

    Args:
        pts: ``(..., M, 3)`` points in the camera frame.
        uv: ``(..., M, 2)`` their pixel coordinates (broadcastable to ``pts[..., :2]``).
        pp: ``(..., 2)`` principal point (pixels).
        mode: ``'weiszfeld'``: minimise ``sum ||(u,v) - f (x/z, y/z)||`` by IRLS (exactly
            ``weiszfeld_iters`` iterations from the L2 solution); ``'median'``: median of the
            per-pixel votes ``u z / x`` and ``v z / y``.

    Returns:
        ``(...)`` focal lengths.
    """
    cuv = uv - pp[..., None, :]
    cuv = cuv.expand(pts.shape[:-1] + (2,))
    if mode == "median":
        votes = (cuv * pts[..., 2:3] / pts[..., :2]).flatten(-2)
        votes = torch.where(torch.isfinite(votes), votes, torch.full_like(votes, float("nan")))
        return torch.nanmedian(votes, dim=-1).values
    if mode != "weiszfeld":
        raise InputError(f"unknown focal mode {mode!r} (use 'weiszfeld' or 'median')")
    r = pts[..., :2] / pts[..., 2:3]
    r = torch.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
    f = (r * cuv).sum(-1).mean(-1) / (r * r).sum(-1).mean(-1)
    for _ in range(weiszfeld_iters):
        dis = (cuv - f[..., None, None] * r).norm(dim=-1)
        w = 1.0 / dis.clamp(min=1e-8)
        f = (w * (r * cuv).sum(-1)).mean(-1) / (w * (r * r).sum(-1)).mean(-1)
    return f


def estimate_focal(
    pts3d: torch.Tensor,
    pp: torch.Tensor | None = None,
    mode: FocalMode = "weiszfeld",
    min_focal: float = 0.0,
    max_focal: float = math.inf,
) -> torch.Tensor:
    """Focal (pixels) of a camera-frame pointmap, as the reference ``estimate_focal_knowing_depth``.

    Args:
        pts3d: ``(..., H, W, 3)`` points of each pixel in its camera frame.
        pp: ``(..., 2)`` principal point; default ``(W/2, H/2)``.
        mode: ``'weiszfeld'`` (10 IRLS iterations) or ``'median'``.
        min_focal, max_focal: clip range in units of ``max(H, W) / (2 tan 30deg)`` (no clip by
            default).

    Returns:
        ``(...)`` focal lengths in pixels.
    """
    H, W = pts3d.shape[-3:-1]
    if pp is None:
        pp = default_principal_point(H, W, dtype=pts3d.dtype, device=pts3d.device)
    pp = torch.as_tensor(pp, dtype=pts3d.dtype, device=pts3d.device)
    uv = pixel_grid(H, W, pts3d.device, pts3d.dtype).reshape(H * W, 2)
    f = estimate_focal_from_pixels(pts3d.flatten(-3, -2), uv, pp, mode)
    fb = max(H, W) / (2 * math.tan(math.radians(30)))
    return f.clip(min=min_focal * fb, max=max_focal * fb)


def normalize_pixels(
    uv: torch.Tensor, fx: torch.Tensor | float, fy: torch.Tensor | float, pp: torch.Tensor,
    skew: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Normalised image coordinates ``(..., 2)`` of pixels ``uv (..., 2)`` (pixel centres at
    integers): ``y = (v - cy) / fy``, ``x = (u - cx - skew * y) / fx``, the first two entries of
    ``K^-1 (u, v, 1)``. The one place this formula is written; differentiable.

    Args:
        uv: ``(..., 2)`` pixels ``(u, v)``.
        fx, fy: ``(...)`` focals (pixels), broadcast against ``uv[..., 0]``.
        pp: ``(..., 2)`` principal points ``(cx, cy)`` (pixels).
        skew: ``(...)`` or a number, ``K[0, 1]`` (pixels).
    """
    if fx is fy and isinstance(skew, (int, float)) and skew == 0:  # one focal, no skew: one division
        return (uv - pp) / (fx[..., None] if isinstance(fx, torch.Tensor) else fx)
    y = (uv[..., 1] - pp[..., 1]) / fy
    x = (uv[..., 0] - pp[..., 0] - skew * y) / fx
    return torch.stack([x, y], -1)


def rescale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics ``(..., 3, 3)`` of the same camera after resizing its image by ``(sx, sy)``
    (new width / old width, new height / old height). Pixel centres sit at integers, so the
    principal point moves as ``(c + 0.5) s - 0.5`` (pixel corners scale, centres do not)."""
    K = K.clone()
    K[..., 0, :2] = K[..., 0, :2] * sx
    K[..., 1, 1] = K[..., 1, 1] * sy
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K


def unproject_depth(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points ``(..., H, W, 3)`` of z-depth maps ``(..., H, W)`` with pinhole
    intrinsics ``(..., 3, 3)`` (skew ``K[0, 1]`` honoured): the inverse of :func:`project`.

    Pixel ``(u, v)`` at integer coordinates has the normalised coordinates
    ``y = (v - cy) / fy``, ``x = (u - cx - skew * y) / fx``; its point is ``depth * (x, y, 1)``.
    Differentiable in ``depth`` and ``K``.
    """
    H, W = depth.shape[-2:]
    return _unproject(pixel_grid(H, W, depth.device, depth.dtype), depth, K.to(depth)[..., None, None, :, :])


def unproject_pixels(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points ``(..., P, 3)`` of pixels ``uv (..., P, 2)`` ``(u, v)`` with z-depths
    ``(..., P)`` and intrinsics ``(..., 3, 3)``: :func:`unproject_depth` at chosen pixels (the
    same arithmetic, so the same values as the full map's at those pixels)."""
    return _unproject(uv, depth, K.to(depth)[..., None, :, :])


def _unproject(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Points ``(..., 3)`` of pixels ``uv (..., 2)``, depths ``(...)``, ``K`` already broadcast."""
    xy = normalize_pixels(uv, K[..., 0, 0], K[..., 1, 1], K[..., :2, 2], K[..., 0, 1])
    return torch.cat([xy * depth[..., None], depth[..., None]], dim=-1)


def depth_to_world(depth: torch.Tensor, K: torch.Tensor, cam2world: torch.Tensor) -> torch.Tensor:
    """World points ``(..., H, W, 3)`` of z-depth maps ``(..., H, W)`` with intrinsics
    ``(..., 3, 3)`` (:func:`unproject_depth`) and camera-to-world poses ``(..., 4, 4)``."""
    cam = unproject_depth(depth, K)
    T = cam2world.to(depth)
    return cam @ T[..., None, :3, :3].transpose(-1, -2) + T[..., None, None, :3, 3]


def pixels_to_world(
    uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, cam2world: torch.Tensor
) -> torch.Tensor:
    """World points ``(..., P, 3)`` of pixels ``uv (..., P, 2)`` with z-depths ``(..., P)``,
    intrinsics ``(..., 3, 3)`` and camera-to-world poses ``(..., 4, 4)``: :func:`depth_to_world`
    at chosen pixels (:func:`unproject_pixels`), for a few pixels of a large map."""
    cam = unproject_pixels(uv, depth, K)
    T = cam2world.to(depth)
    return cam @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def project(pts: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-frame points ``(..., M, 3)`` with intrinsics ``(..., 3, 3)`` (skew included).

    Returns:
        ``(uv (..., M, 2), z (..., M))`` pixel coordinates and depths.
    """
    z = pts[..., 2]
    p = pts @ K.to(pts).transpose(-1, -2)
    return p[..., :2] / p[..., 2:3], z


# ----------------------------------------------------------------------------- other conventions
# COLMAP, nerfstudio and OpenGL put the image's origin at the top-left pixel's outer corner, so the
# centre of pixel (0, 0) is at (0.5, 0.5) ("corner origin"); pointmap puts it at (0, 0). Camera
# axes: OpenCV (x right, y down, z forward) here, OpenGL (x right, y up, z back) in nerfstudio.
# These functions take torch tensors or numpy arrays and return the same kind.
ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def _like(values: list, ref: ArrayT) -> ArrayT:
    """``values`` as an array of ``ref``'s kind, dtype (floating; float32 at least) and device."""
    if isinstance(ref, torch.Tensor):
        return torch.tensor(values, dtype=ref.dtype if ref.is_floating_point() else torch.float64,
                            device=ref.device)
    return np.asarray(values, dtype=np.result_type(ref.dtype, np.float32))


def pixels_to_corner_origin(uv: ArrayT) -> ArrayT:
    """Pixel coordinates ``(..., 2)`` with centres at integers to corner-origin ones (``+0.5``)."""
    return uv + 0.5


def pixels_from_corner_origin(uv: ArrayT) -> ArrayT:
    """Corner-origin pixel coordinates ``(..., 2)`` to pointmap's, centres at integers (``-0.5``)."""
    return uv - 0.5


def _shift_intrinsics(K: ArrayT, d: float) -> ArrayT:
    """``T K`` with ``T`` the homogeneous translation of the pixel frame by ``(d, d)``."""
    return _like([[1.0, 0.0, d], [0.0, 1.0, d], [0.0, 0.0, 1.0]], K) @ K


def intrinsics_to_corner_origin(K: ArrayT) -> ArrayT:
    """Intrinsics ``(..., 3, 3)`` (pixels, centres at integers) to corner-origin intrinsics: the
    same rays, the principal point moved by ``+0.5`` (focals and skew unchanged)."""
    return _shift_intrinsics(K, 0.5)


def intrinsics_from_corner_origin(K: ArrayT) -> ArrayT:
    """Corner-origin intrinsics ``(..., 3, 3)`` to pointmap's (principal point ``-0.5``)."""
    return _shift_intrinsics(K, -0.5)


def opencv_opengl_flip(cam2world: ArrayT) -> ArrayT:
    """Camera-to-world poses ``(..., 4, 4)`` from OpenCV camera axes to OpenGL ones, or back (the
    flip of the camera's y and z axes is its own inverse): ``cam2world @ diag(1, -1, -1, 1)``.
    The camera centre and the world frame are unchanged; lengths keep their unit."""
    return cam2world * _like([1.0, -1.0, -1.0, 1.0], cam2world)
