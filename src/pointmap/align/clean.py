"""Occlusion-based clean-up of an aligned scene: points seen in front of another camera's surface.

:func:`clean_pointcloud` is the reference's rule (every ordered pair of placed images, confidences
edited in place as the loop goes) computed at scale: image ``i``'s pixels are cut into square
tiles, a tile is tested against camera ``j``'s viewing frustum with its bounding box (a box wholly
outside one of the frustum's five planes holds no point that could land in image ``j``, so the
pair is skipped with no change to the result), and the surviving (tile, camera) pairs are
projected together in batches on any device. :func:`clean_pointcloud_reference` is its plain twin,
the pair-by-pair loop, kept for tests and for reading.

Why the batches give the loop's result: an edit only lowers ``conf_i`` to ``min(conf_i,
bad_conf)``, which is idempotent, so image ``i``'s final confidence is lowered exactly where some
camera ``j`` flags the pixel with ``conf_i`` as it was before image ``i``'s turn; camera ``j``'s
confidence is its final one for ``j < i`` (its turn came) and its original one for ``j > i``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import torch

from ..geometry.camera import depth_to_world
from ..geometry.registration import inverse_pose
from ..scene import Scene

__all__ = ["clean_pointcloud", "clean_pointcloud_reference"]

TILE = 32
"""Tile side in pixels for the frustum test (a 512x384 image has 192 tiles)."""

_BATCH_POINTS = 1 << 23
"""Points projected per batch (about 8 M: a few hundred MB of temporaries)."""


MAX_VIEWS = 32
"""Default of ``clean_pointcloud(max_views=)``: each image is checked against at most this many
cameras (all of them, the reference's rule, in scenes of up to 33 images)."""


def clean_pointcloud(
    scene: Scene, tol: float = 0.001, bad_conf: float = 0.0, device: torch.device | str | None = None,
    max_views: int | None = MAX_VIEWS, images: Collection[int] | None = None,
) -> Scene:
    """Lower the confidence of points seen *in front of* another camera's surface.

    For every ordered pair of placed images ``(i, j != i)``, image ``i``'s points are projected
    into camera ``j`` (pixel = rounded projection); where one lands inside image ``j`` with
    positive depth ``z < (1 - tol) depth_j(pixel)`` and ``conf_i < conf_j(pixel)``, ``conf_i``
    becomes ``min(conf_i, bad_conf)``; ``conf_j`` is the value after images ``< i`` were cleaned
    (the reference's sequential loop, :func:`clean_pointcloud_reference`, whose result this is;
    the module docstring says why). Cost: proportional to the (tile, camera) pairs whose boxes
    meet the cameras' frustums.

    In larger scenes each image ``i`` is checked against the ``max_views`` cameras that see most
    of it (most of its tiles inside their frustums; the nearer camera centre first among equals),
    in the same order; the cost grows as ``N * max_views`` instead of ``N^2`` (1000 images: 32
    000 pairs instead of 999 000).

    Args:
        scene: the aligned scene (depths ``(H, W)`` per image, any sizes).
        tol: relative depth margin.
        bad_conf: the confidence given to the points removed.
        device: where the projections run (default: the scene's depths' device); the returned
            scene's tensors stay where they were.
        max_views: the most cameras each image is checked against (``None``: all, as the
            reference in any scene).
        images: clean only these images (``None``: all); the others keep their confidences and
            still hide the points in front of them (added images, the others already cleaned:
            the same result as cleaning every image with the others' cleaned confidences first).

    Returns:
        A new scene with updated ``confidence`` and ``masks = masks & (confidence > threshold)``.
    """
    if max_views is not None and max_views < 1:
        raise ValueError(f"max_views must be 1 or more (or None), got {max_views}")
    n = len(scene)
    dev = torch.device(device) if device is not None else scene.depths[0].device
    placed = [bool(p) for p in scene.placed.tolist()]
    w2c = inverse_pose(scene.poses.double()).to(dev)
    Ks = scene.intrinsics.double().to(dev)
    sizes = [tuple(d.shape) for d in scene.depths]
    Hm, Wm = max(s[0] for s in sizes), max(s[1] for s in sizes)
    depth_all = torch.zeros(n, Hm * Wm, device=dev)
    conf_all = torch.zeros(n, Hm * Wm, device=dev)
    for j, (d, c) in enumerate(zip(scene.depths, scene.confidence)):
        H, W = sizes[j]
        depth_all[j].view(Hm, Wm)[:H, :W] = d.float()
        conf_all[j].view(Hm, Wm)[:H, :W] = c.float()
    wh = torch.tensor([[s[1], s[0]] for s in sizes], device=dev, dtype=torch.float64)  # (N, 2)
    planes = _frustum_planes(w2c, Ks, wh)  # (N, 5, 4)
    wh = wh.float()
    centres = scene.poses[:, :3, 3].double().to(dev)
    confs = [c.clone() for c in scene.confidence]
    todo = set(range(n)) if images is None else {int(k) for k in images}
    for i in range(n):
        others = [j for j in range(n) if j != i and placed[j]]
        if not placed[i] or not others or i not in todo:
            continue
        H, W = sizes[i]
        pts = depth_to_world(scene.depths[i].to(dev).float(), Ks[i].float(), scene.poses[i].to(dev).float())
        tiles, valid = _tiles(pts)  # (T, P, 3), (T, P)
        tile_idx, cam_idx = _visible_pairs(tiles, valid, planes[others])
        if max_views is not None and len(others) > max_views:
            tile_idx, cam_idx = _most_seeing(tile_idx, cam_idx, len(others), max_views,
                                             centres[others] - centres[i])
        cams = torch.tensor(others, device=dev)[cam_idx]
        conf_i = _tiles(conf_all[i].view(Hm, Wm)[:H, :W, None])[0][..., 0]  # (T, P)
        hits = torch.zeros(tiles.shape[:2], dtype=torch.int32, device=dev)
        step = max(1, _BATCH_POINTS // tiles.shape[1])
        for s in range(0, len(tile_idx), step):
            t, j = tile_idx[s:s + step], cams[s:s + step]
            bad = _occluded(tiles[t], valid[t], conf_i[t], w2c[j].float(), Ks[j].float(), wh[j], j,
                            depth_all, conf_all, Wm, tol)
            hits.index_add_(0, t, bad.int())
        lowered = torch.where(hits > 0, conf_i.clamp(max=bad_conf), conf_i)
        new = _untile(lowered, H, W)
        conf_all[i].view(Hm, Wm)[:H, :W] = new
        confs[i] = new.to(scene.confidence[i].device, scene.confidence[i].dtype)
    masks = [m & (c > scene.conf_threshold) for m, c in zip(scene.masks, confs)]
    return replace(scene, confidence=confs, masks=masks)


def _most_seeing(
    tile_idx: torch.Tensor, cam_idx: torch.Tensor, n_cams: int, k: int, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (tile, camera) pairs of the ``k`` cameras with the most tiles (ties: the smaller
    centre distance, from ``offsets`` ``(n_cams, 3)``), in camera order."""
    counts = torch.bincount(cam_idx, minlength=n_cams).double()
    dist = offsets.norm(dim=1)
    order = torch.argsort(dist / (dist.max() + 1) - counts, stable=True)  # counts first, distance breaks ties
    keep = torch.zeros(n_cams, dtype=torch.bool, device=cam_idx.device)
    keep[order[:k]] = True
    sel = keep[cam_idx]
    return tile_idx[sel], cam_idx[sel]


def _frustum_planes(w2c: torch.Tensor, Ks: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    """``(N, 5, 4)`` float64 half-spaces ``a . x + b >= 0`` in world coordinates that every point
    landing in image ``j`` (rounded pixel inside, positive depth) satisfies: ``z >= 0``,
    ``u >= -1/2``, ``u <= W - 1/2``, ``v >= -1/2``, ``v <= H - 1/2`` (in projective form,
    ``p = K (R x + t)``, valid where ``p_z = z > 0``)."""
    P = Ks @ w2c[:, :3, :]  # (N, 3, 4): p = P [x; 1]
    px, py, pz = P[:, 0], P[:, 1], P[:, 2]
    W, H = wh[:, 0:1], wh[:, 1:2]
    z = w2c[:, 2, :]
    return torch.stack([z, px + 0.5 * pz, (W - 0.5) * pz - px, py + 0.5 * pz, (H - 0.5) * pz - py], 1)


def _tiles(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, C)`` -> ``(T, TILE * TILE, C)`` square tiles (the last row and column padded with
    NaN) and ``(T, TILE * TILE)`` bool: the pixel exists and its values are finite."""
    H, W, C = x.shape
    th, tw = -(-H // TILE), -(-W // TILE)
    pad = x.new_full((th * TILE, tw * TILE, C), float("nan"))
    pad[:H, :W] = x
    t = pad.view(th, TILE, tw, TILE, C).permute(0, 2, 1, 3, 4).reshape(th * tw, TILE * TILE, C)
    return t, torch.isfinite(t).all(-1)


def _untile(t: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`_tiles` for one channel: ``(T, TILE * TILE)`` -> ``(H, W)``."""
    th, tw = -(-H // TILE), -(-W // TILE)
    return t.view(th, tw, TILE, TILE).permute(0, 2, 1, 3).reshape(th * TILE, tw * TILE)[:H, :W]


def _visible_pairs(tiles: torch.Tensor, valid: torch.Tensor, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(tile, camera)`` of the tiles whose finite points' bounding box is not wholly
    outside one of the camera's planes (``planes`` ``(J, 5, 4)``), with a relative margin so that
    rounding never skips a pair the projection would keep."""
    big = torch.finfo(tiles.dtype).max
    lo = torch.where(valid[..., None], tiles, big).amin(1).double()  # (T, 3)
    hi = torch.where(valid[..., None], tiles, -big).amax(1).double()
    has = valid.any(1)
    c, h = (lo + hi) / 2, (hi - lo) / 2
    c, h = torch.where(has[:, None], c, 0), torch.where(has[:, None], h, 0)
    a, b = planes[..., :3], planes[..., 3]  # (J, 5, 3), (J, 5)
    top = torch.einsum("jpk,tk->tjp", a, c) + torch.einsum("jpk,tk->tjp", a.abs(), h) + b  # box max of a.x+b
    scale = torch.einsum("jpk,tk->tjp", a.abs(), c.abs() + h) + b.abs()
    inside = (top >= -1e-6 * scale).all(-1) & has[:, None]  # (T, J)
    return inside.nonzero(as_tuple=True)


def _occluded(
    pts: torch.Tensor, valid: torch.Tensor, conf_i: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor,
    wh: torch.Tensor, cams: torch.Tensor, depth_all: torch.Tensor, conf_all: torch.Tensor,
    Wm: int, tol: float,
) -> torch.Tensor:
    """``(B, P)`` bool: point ``p`` of tile ``b`` lands in camera ``cams[b]`` (``w2c`` ``(B, 4,
    4)``, ``K`` ``(B, 3, 3)``, image size ``wh`` ``(B, 2)`` = ``(W, H)``) in front of its
    surface, where it is the more confident."""
    cam = pts @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
    z = cam[..., 2]
    proj = cam @ K.transpose(1, 2)
    uv = torch.round(proj[..., :2] / proj[..., 2:3])
    u, v = uv[..., 0], uv[..., 1]
    Wj, Hj = wh[:, 0:1], wh[:, 1:2]
    # NaN fails every comparison and an infinite coordinate one of the bounds
    ok = valid & (z > 0) & (u >= 0) & (u < Wj) & (v >= 0) & (v < Hj)
    flat = torch.where(ok, v * Wm + u, 0).long() + (cams * depth_all.shape[1])[:, None]
    dj = torch.take(depth_all, flat)
    cj = torch.take(conf_all, flat)
    return ok & (z < (1 - tol) * dj) & (conf_i < cj)


def clean_pointcloud_reference(scene: Scene, tol: float = 0.001, bad_conf: float = 0.0) -> Scene:
    """:func:`clean_pointcloud` as the reference computes it: every ordered pair of placed images
    ``(i, j)``, ``j`` the inner loop, confidences edited as it goes (``N^2`` projections)."""
    confs = [c.clone() for c in scene.confidence]
    pts = scene.pts3d
    w2c = inverse_pose(scene.poses.float())
    placed = scene.placed.tolist()
    n = len(scene)
    for i in range(n):
        if not placed[i]:
            continue
        for j in range(n):
            if j == i or not placed[j]:
                continue
            Hj, Wj = scene.depths[j].shape
            cam = pts[i] @ w2c[j, :3, :3].T + w2c[j, :3, 3]
            z = cam[..., 2]
            proj = cam @ scene.intrinsics[j].float().T
            uv = torch.round(proj[..., :2] / proj[..., 2:3])
            u, v = uv[..., 0], uv[..., 1]
            ok = (z > 0) & (u >= 0) & (u < Wj) & (v >= 0) & (v < Hj)
            ok &= torch.isfinite(u) & torch.isfinite(v)
            uu = u.clamp(0, Wj - 1).nan_to_num(0).long()
            vv = v.clamp(0, Hj - 1).nan_to_num(0).long()
            dj, cj = scene.depths[j][vv, uu], confs[j][vv, uu]
            bad = ok & (z < (1 - tol) * dj) & (confs[i] < cj)
            confs[i] = torch.where(bad, confs[i].clamp(max=bad_conf), confs[i])
    masks = [m & (c > scene.conf_threshold) for m, c in zip(scene.masks, confs)]
    return replace(scene, confidence=confs, masks=masks)
