"""Synthetic multi-view scenes with exact ground truth and DUSt3R-like pair predictions.

(Over 450 lines: the analytic scene, its ray caster and the prediction generator share one layout.)

The scene is a closed room (so every ray hits something) with a few spheres and boxes in it;
``N`` cameras orbit the centre on an arc, looking at it. Depth maps are ray-cast analytically.
For every ordered pair ``(i, j)`` the generator fabricates what a DUSt3R network would output:
both pointmaps in camera ``i``'s frame, with

* a random global scale per pair (the network's scale is arbitrary),
* a smooth low-frequency multiplicative distortion along camera ``i``'s rays,
* per-pixel Gaussian noise (``noise`` times the depth),
* a few outlier blobs of garbage points with raw confidence just above 1,
* raw confidences ``1 + exp(x) > 1`` elsewhere (a smooth random field).

Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..geometry.camera import intrinsics_matrix, unproject_depth
from ..predictions import PairPredictions

__all__ = [
    "SyntheticScene",
    "co_visibility",
    "synthetic_matches",
    "iter_synthetic_predictions",
    "make_synthetic_scene",
    "synthetic_cameras",
    "synthetic_image",
    "synthetic_pairs_list",
]


@dataclass
class SyntheticScene:
    """Ground truth and fabricated predictions.

    Attributes:
        preds: the pair predictions (pointmaps in the first camera's frame, network-like scale);
            ``None`` from :func:`synthetic_cameras` (see :func:`iter_synthetic_predictions`).
        poses: ``(N, 4, 4)`` true camera-to-world poses (OpenCV axes).
        focals: ``(N,)`` true focals (pixels); principal points are ``(W/2, H/2)``.
        depths: ``(N, H, W)`` true z-depths.
        imgs: per image ``(H, W, 3)`` colours in ``[0, 1]`` (procedural texture of the 3D point);
            empty from :func:`synthetic_cameras` (see :func:`synthetic_image`).
        pair_scales: ``(P,)`` the scale applied to each pair's prediction.
        extent: diameter of the camera centres (for relative centre errors).
    """

    preds: PairPredictions | None
    poses: torch.Tensor
    focals: torch.Tensor
    depths: torch.Tensor
    imgs: list[torch.Tensor]
    pair_scales: torch.Tensor
    extent: float

    @property
    def intrinsics(self) -> torch.Tensor:
        """``(N, 3, 3)`` true intrinsics."""
        H, W = self.depths.shape[-2:]
        return intrinsics_matrix(self.focals, torch.tensor([W / 2, H / 2]).expand(len(self.focals), 2))


def synthetic_pairs_list(n: int, graph: str = "complete") -> list[tuple[int, int]]:
    """Symmetrized ordered pairs for ``'complete'``, ``'swin-K'`` (cyclic window),
    ``'logwin-K'`` (cyclic offsets ``2^0..2^(K-1)``), ``'oneref-K'`` or ``'chain'`` graphs."""
    name, _, arg = graph.partition("-")
    k = int(arg) if arg.isdigit() else 3
    und: set[tuple[int, int]] = set()
    if name == "complete":
        und = {(j, i) for i in range(n) for j in range(i)}
    elif name in ("swin", "logwin"):
        offs = range(1, k + 1) if name == "swin" else [2**p for p in range(k)]
        for i in range(n):
            for o in offs:
                j = (i + o) % n
                if j != i:
                    und.add((min(i, j), max(i, j)))
    elif name == "oneref":
        und = {(min(k, j), max(k, j)) for j in range(n) if j != k}
    elif name == "chain":
        und = {(i, i + 1) for i in range(n - 1)}
    else:
        raise InputError(f"unknown graph {graph!r}")
    pairs = sorted(und)
    return pairs + [(j, i) for i, j in pairs]


def _look_at(centre: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Camera-to-world pose at ``centre`` looking at ``target`` (world y is down)."""
    z = target - centre
    z = z / z.norm()
    down = torch.tensor([0.0, 1.0, 0.0], dtype=z.dtype)
    x = torch.linalg.cross(down, z)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    P = torch.eye(4, dtype=z.dtype)
    P[:3, :3] = torch.stack([x, y, z], dim=1)
    P[:3, 3] = centre
    return P


def _ray_cast(C: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Ray parameter ``t`` (rays ``C + t d``, ``d`` with unit camera-z so ``t`` is z-depth) of the
    first hit with the scene. ``C (3,)``, ``d (M, 3)`` -> ``(M,)``."""
    inf = torch.full(d.shape[:1], math.inf, dtype=d.dtype)
    best = inf.clone()
    # room interior: exit distance of the axis-aligned box
    lo = torch.tensor([-4.0, -3.0, -4.0], dtype=d.dtype)
    hi = torch.tensor([4.0, 1.5, 4.0], dtype=d.dtype)
    with torch.no_grad():
        t1, t2 = (lo - C) / d, (hi - C) / d
        best = torch.minimum(best, torch.maximum(t1, t2).amin(-1))
        for c, r in (((0.0, 0.0, 0.0), 0.7), ((-1.1, 0.6, -0.6), 0.5), ((0.4, 1.0, 1.2), 0.45)):
            oc = C - torch.tensor(c, dtype=d.dtype)
            a = (d * d).sum(-1)
            b = 2 * (d * oc).sum(-1)
            cc = (oc * oc).sum() - r * r
            disc = b * b - 4 * a * cc
            t = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
            hit = (disc > 0) & (t > 0)
            best = torch.where(hit, torch.minimum(best, t), best)
        for blo, bhi in (((0.6, 0.2, -1.2), (1.4, 1.5, -0.4)), ((-1.6, 0.9, 0.6), (-0.8, 1.5, 1.4))):
            b_lo, b_hi = torch.tensor(blo, dtype=d.dtype), torch.tensor(bhi, dtype=d.dtype)
            t1, t2 = (b_lo - C) / d, (b_hi - C) / d
            tn, tf = torch.minimum(t1, t2).amax(-1), torch.maximum(t1, t2).amin(-1)
            hit = (tn < tf) & (tn > 0)
            best = torch.where(hit, torch.minimum(best, tn), best)
    return best


def _smooth_field(H: int, W: int, g: torch.Generator, n_waves: int = 3) -> torch.Tensor:
    """``(H, W)`` random low-frequency field with values in ``[-1, 1]`` (on ``g``'s device)."""
    dev = g.device
    v, u = torch.meshgrid(
        torch.linspace(0, 1, H, device=dev), torch.linspace(0, 1, W, device=dev), indexing="ij"
    )
    out = torch.zeros(H, W, device=dev)
    scale = torch.tensor([2.0, 2.0, 2 * math.pi], device=dev)
    for _ in range(n_waves):
        fu, fv, ph = (torch.rand(3, generator=g, device=dev) * scale).tolist()
        out += torch.sin(2 * math.pi * (fu * u + fv * v) + ph)
    return out / n_waves


def _texture(pts: torch.Tensor) -> torch.Tensor:
    """Procedural colour ``(..., 3)`` in ``[0, 1]`` of world points ``(..., 3)``."""
    s = torch.sin(3.0 * pts) * torch.cos(1.7 * pts.roll(1, -1))
    chk = ((torch.floor(2 * pts).sum(-1) % 2) * 0.3)[..., None]
    return (0.35 + 0.3 * s + chk).clamp(0, 1)


def _cameras(n_images: int, W: int, H: int, g: torch.Generator, arc_degrees: float,
             shared_focal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Poses ``(N, 4, 4)`` float64, focals ``(N,)``, intrinsics ``(N, 3, 3)`` float64: cameras on
    an arc around the centre, slightly jittered in radius and height."""
    S = max(W, H)
    ang = torch.linspace(-arc_degrees / 2, arc_degrees / 2, n_images) * math.pi / 180
    radius = 3.0 + 0.3 * (torch.rand(n_images, generator=g) - 0.5)
    height = -0.8 + 0.4 * (torch.rand(n_images, generator=g) - 0.5)
    poses = []
    for k in range(n_images):
        c = torch.stack([radius[k] * torch.sin(ang[k]), height[k], -radius[k] * torch.cos(ang[k])])
        target = 0.3 * (torch.rand(3, generator=g) - 0.5) + torch.tensor([0.0, 0.2, 0.0])
        poses.append(_look_at(c.double(), target.double()))
    poses_t = torch.stack(poses)
    if shared_focal:
        focals = torch.full((n_images,), float(S) * (0.9 + 0.3 * torch.rand(1, generator=g).item()))
    else:
        focals = S * (0.8 + 0.5 * torch.rand(n_images, generator=g))
    pp = torch.tensor([W / 2, H / 2])
    Ks = intrinsics_matrix(focals.double(), pp.double().expand(n_images, 2))
    return poses_t, focals, Ks


def _render(pose: torch.Tensor, K: torch.Tensor, H: int, W: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray-cast one view: z-depth ``(H, W)``, camera-frame points and world points ``(H, W, 3)``
    (float64)."""
    rays = unproject_depth(torch.ones(H, W, dtype=torch.float64), K).reshape(-1, 3)
    d_world = rays @ pose[:3, :3].T
    z = _ray_cast(pose[:3, 3], d_world).reshape(H, W)
    cam = unproject_depth(z, K)
    return z, cam, cam @ pose[:3, :3].T + pose[:3, 3]


def _fabricate(cam_i: torch.Tensor, cam_j: torch.Tensor, rel: torch.Tensor, scale: float,
               gd: torch.Generator, noise: float, distortion: float, n_blobs: int,
               blob_radius: float) -> tuple[torch.Tensor, ...]:
    """A DUSt3R-like prediction of one ordered pair from the true camera-frame points of both
    views ``(H, W, 3)`` and the pose ``rel`` (4, 4) of camera ``j`` in camera ``i``: ``(pts3d_1,
    conf_1, pts3d_2_in_1, conf_2)`` float32 on ``gd``'s device."""
    dev = gd.device
    H, W = cam_i.shape[:2]
    r_blob = blob_radius * min(H, W)
    vv, uu = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    res = []
    for pts in (cam_i, cam_j @ rel[:3, :3].T + rel[:3, 3]):
        pts = pts * (1 + distortion * _smooth_field(H, W, gd)[..., None])
        pts = pts + noise * pts[..., 2:3].abs() * torch.randn(H, W, 3, generator=gd, device=dev)
        pts = pts * scale
        conf = 1 + torch.exp(1.3 + 0.6 * _smooth_field(H, W, gd))
        for _ in range(n_blobs):
            cu, cv = torch.rand(2, generator=gd, device=dev).tolist()
            blob = (uu - cu * W) ** 2 + (vv - cv * H) ** 2 < r_blob**2
            lo, hi = pts.reshape(-1, 3).amin(0), pts.reshape(-1, 3).amax(0)
            nb = int(blob.sum())
            pts[blob] = lo + (hi - lo) * torch.rand(nb, 3, generator=gd, device=dev)
            conf[blob] = 1 + 0.05 * torch.rand(nb, generator=gd, device=dev)
        res += [pts, conf]
    return tuple(res)


def make_synthetic_scene(
    n_images: int = 10,
    size: tuple[int, int] = (64, 48),
    graph: str = "complete",
    pairs: list[tuple[int, int]] | None = None,
    seed: int = 0,
    noise: float = 0.01,
    distortion: float = 0.02,
    n_blobs: int = 2,
    blob_radius: float = 0.1,
    arc_degrees: float = 150.0,
    shared_focal: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> SyntheticScene:
    """Generate a synthetic scene and DUSt3R-like predictions.

    Args:
        n_images: number of cameras ``N``.
        size: ``(W, H)`` image size in pixels.
        graph: pair graph (see :func:`synthetic_pairs_list`), ignored when ``pairs`` is given.
        pairs: explicit ordered pairs.
        seed: random seed (the result is a deterministic function of all arguments).
        noise: per-pixel Gaussian noise, as a fraction of the depth.
        distortion: amplitude of the smooth multiplicative distortion.
        n_blobs: outlier blobs per predicted map (garbage points, raw confidence in ``(1, 1.05)``).
        blob_radius: blob radius as a fraction of ``min(H, W)``.
        arc_degrees: angular span of the camera orbit.
        shared_focal: all cameras share one focal.
        dtype: storage dtype of the predicted tensors.
        device: where the per-pair predictions are fabricated (``'cuda'`` is much faster for large
            benchmarks; the random stream then differs from the CPU one). Results are returned on
            the CPU.
    """
    W, H = size
    g = torch.Generator().manual_seed(seed)
    poses_t, focals, Ks = _cameras(n_images, W, H, g, arc_degrees, shared_focal)
    depths, imgs, cams = [], [], []
    for k in range(n_images):
        z, cam, world = _render(poses_t[k], Ks[k], H, W)
        depths.append(z)
        cams.append(cam)
        imgs.append(_texture(world).float())
    depths_t = torch.stack(depths)

    pairs = list(pairs) if pairs is not None else synthetic_pairs_list(n_images, graph)
    scales = torch.exp(0.8 * (torch.rand(len(pairs), generator=g) - 0.5))
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gd = g if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed)
    cams_d = [c.float().to(dev) for c in cams]
    rels = torch.linalg.inv(poses_t)[:, None] @ poses_t[None]  # (N, N, 4, 4) camera j -> camera i
    rels = rels.float().to(dev)
    out: dict[str, list[torch.Tensor]] = {"p1": [], "c1": [], "p2": [], "c2": []}
    for e, (i, j) in enumerate(pairs):
        res = _fabricate(cams_d[i], cams_d[j], rels[i, j], float(scales[e]), gd, noise, distortion,
                         n_blobs, blob_radius)
        for key, t in zip(("p1", "c1", "p2", "c2"), res):
            out[key].append(t.to(dtype).cpu())
    preds = PairPredictions(pairs, out["p1"], out["c1"], out["p2"], out["c2"], n_images=n_images)
    centres = poses_t[:, :3, 3]
    extent = float(torch.cdist(centres, centres).max()) if n_images > 1 else 1.0
    return SyntheticScene(
        preds=preds, poses=poses_t.float(), focals=focals.float(), depths=depths_t.float(),
        imgs=imgs, pair_scales=scales, extent=extent,
    )


def synthetic_cameras(
    n_images: int,
    size: tuple[int, int],
    seed: int = 0,
    arc_degrees: float = 150.0,
    shared_focal: bool = False,
    order: list[int] | None = None,
) -> SyntheticScene:
    """The ground truth of :func:`make_synthetic_scene` without images or predictions, for scenes
    too big to hold every prediction in memory: cameras and depth maps only (``preds`` is
    ``None``, ``imgs`` empty). ``order`` permutes the cameras (``order[k]`` is the arc position of
    image ``k``; e.g. a shuffled photo collection)."""
    W, H = size
    g = torch.Generator().manual_seed(seed)
    poses, focals, Ks = _cameras(n_images, W, H, g, arc_degrees, shared_focal)
    if order is not None:
        if sorted(order) != list(range(n_images)):
            raise ValueError("order must be a permutation of range(n_images)")
        poses, focals, Ks = poses[order], focals[order], Ks[order]
    depths = torch.stack([_render(poses[k], Ks[k], H, W)[0].float() for k in range(n_images)])
    centres = poses[:, :3, 3]
    extent = float(torch.cdist(centres, centres).max()) if n_images > 1 else 1.0
    return SyntheticScene(preds=None, poses=poses.float(), focals=focals.float(), depths=depths,
                          imgs=[], pair_scales=torch.zeros(0), extent=extent)


def synthetic_image(scene: SyntheticScene, k: int) -> torch.Tensor:
    """``(H, W, 3)`` colours in ``[0, 1]`` of image ``k`` (procedural texture of its 3D points)."""
    cam = unproject_depth(scene.depths[k].double(), scene.intrinsics[k].double())
    P = scene.poses[k].double()
    return _texture(cam @ P[:3, :3].T + P[:3, 3]).float()


def iter_synthetic_predictions(
    scene: SyntheticScene,
    pairs: list[tuple[int, int]],
    batch: int = 16,
    seed: int = 0,
    noise: float = 0.01,
    distortion: float = 0.02,
    n_blobs: int = 2,
    blob_radius: float = 0.1,
    device: torch.device | str | None = None,
):
    """Fabricate DUSt3R-like predictions of ``pairs`` a batch at a time, so that they can be
    written to a store without holding them all. The noise model is that of
    :func:`make_synthetic_scene` (random scale per pair, smooth multiplicative distortion,
    per-pixel Gaussian noise, outlier blobs with raw confidence in ``(1, 1.05)``), made cheaper
    for thousands of pairs: the smooth fields are random mixtures of a bank of eight and the blobs
    are squares.

    Yields:
        ``(batch_pairs, {"pts3d_1": (B, H, W, 3), "conf_1": (B, H, W), "pts3d_2_in_1",
        "conf_2"})`` float32 CPU tensors, ``batch_pairs`` consecutive slices of ``pairs``.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    g = torch.Generator().manual_seed(seed + 1)
    gd = g if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed + 1)
    scales = torch.exp(0.8 * (torch.rand(len(pairs), generator=g) - 0.5))
    Ks = scene.intrinsics.double()
    poses = scene.poses.double()
    cache: dict[int, torch.Tensor] = {}

    def cam(k: int) -> torch.Tensor:  # a few recent images' camera-frame points
        if k not in cache:
            if len(cache) > 64:
                cache.pop(next(iter(cache)))
            cache[k] = unproject_depth(scene.depths[k].double(), Ks[k]).float().to(dev)
        return cache[k]

    H, W = scene.depths.shape[-2:]
    bank = torch.stack([_smooth_field(H, W, gd) for _ in range(8)])  # mixed per map: cheap fields
    r_blob = max(1, int(blob_radius * min(H, W)))
    names = ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")
    tmp = torch.empty(H, W, device=dev)

    def field() -> torch.Tensor:  # in place where the old version allocated: the same numbers
        a, b = torch.randint(0, len(bank), (2,), generator=gd, device=dev).tolist()
        w = torch.rand(2, generator=gd, device=dev) * 2 - 1
        f = torch.mul(bank[a], w[0])
        return f.add_(torch.mul(bank[b], w[1], out=tmp)).clamp_(-1, 1)

    def side(src: torch.Tensor, scale: float, pts: torch.Tensor, conf: torch.Tensor) -> None:
        torch.mul(src, field().mul_(distortion).add_(1)[..., None], out=pts)
        r = torch.randn(H, W, 3, generator=gd, device=dev)
        pts.add_(r.mul_(torch.abs(pts[..., 2:3], out=tmp[..., None]).mul_(noise))).mul_(scale)
        torch.add(field().mul_(0.6).add_(1.3).exp_(), 1, out=conf)
        lo, hi = (torch.stack(m) for m in zip(*(torch.aminmax(pts[..., c]) for c in range(3))))
        for _ in range(n_blobs):  # square blobs of garbage points with raw confidence just above 1
            cv, cu = (torch.rand(2, generator=gd, device=dev).cpu() * torch.tensor([H, W])).long().tolist()
            v0, u0 = max(cv - r_blob, 0), max(cu - r_blob, 0)
            blk = pts[v0 : cv + r_blob, u0 : cu + r_blob]
            blk.copy_(lo + (hi - lo) * torch.rand(blk.shape, generator=gd, device=dev))
            cb = conf[v0 : cv + r_blob, u0 : cu + r_blob]
            cb.copy_(1 + 0.05 * torch.rand(cb.shape, generator=gd, device=dev))

    for a in range(0, len(pairs), batch):
        chunk = pairs[a : a + batch]
        B = len(chunk)
        out = {n: torch.empty(B, H, W, *((3,) if n.startswith("pts") else ()), device=dev) for n in names}
        for b, (i, j) in enumerate(chunk):
            rel = (torch.linalg.inv(poses[i]) @ poses[j]).float().to(dev)
            s = float(scales[a + b])
            side(cam(i), s, out["pts3d_1"][b], out["conf_1"][b])
            side(cam(j) @ rel[:3, :3].T + rel[:3, 3], s, out["pts3d_2_in_1"][b], out["conf_2"][b])
        yield chunk, {n: out[n].cpu() for n in names}


def co_visibility(scene: SyntheticScene, i: int, j: int, stride: int = 4, tol: float = 0.02) -> float:
    """Fraction of image ``i``'s pixels (on a grid of ``stride``) whose 3-D point image ``j`` sees
    unoccluded: it projects inside ``j`` with a depth within ``tol`` (relative) of ``j``'s depth
    there. Ground truth for judging scene graphs."""
    H, W = scene.depths.shape[-2:]
    Ki, Kj = scene.intrinsics[i].double(), scene.intrinsics[j].double()
    cam = unproject_depth(scene.depths[i].double(), Ki)[::stride, ::stride].reshape(-1, 3)
    rel = torch.linalg.inv(scene.poses[j].double()) @ scene.poses[i].double()
    pj = cam @ rel[:3, :3].T + rel[:3, 3]
    z = pj[:, 2]
    uv = (pj[:, :2] / z.clamp(min=1e-9)[:, None]) * torch.stack([Kj[0, 0], Kj[1, 1]]) + Kj[:2, 2]
    u, v = uv[:, 0].round().long(), uv[:, 1].round().long()
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    dj = scene.depths[j].double()[v.clamp(0, H - 1), u.clamp(0, W - 1)]
    seen = inside & ((z - dj).abs() <= tol * dj)
    return float(seen.float().mean())


def synthetic_matches(
    scene: SyntheticScene,
    pairs: list[tuple[int, int]],
    step: int = 4,
    outliers: float = 0.1,
    seed: int = 0,
    tol: float = 0.02,
) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """Pixel matches where the ground truth says, as a matcher would give them: for each pair
    ``(i, j)`` with ``i < j``, the pixels of ``i`` on a grid of ``step`` whose 3-D point ``j``
    sees unoccluded (depth within ``tol``, relative), matched to the nearest pixel of its
    projection in ``j``; a fraction ``outliers`` of them then gets a random pixel of ``j``.

    Returns:
        ``{(i, j): (xy_i (M, 2), xy_j (M, 2))}`` int64 pixel coordinates ``(x, y)``.
    """
    g = torch.Generator().manual_seed(seed)
    H, W = scene.depths.shape[-2:]
    K, P = scene.intrinsics.double(), scene.poses.double()
    ys, xs = torch.meshgrid(torch.arange(0, H, step), torch.arange(0, W, step), indexing="ij")
    grid = torch.stack([xs, ys], -1).reshape(-1, 2)
    out = {}
    for i, j in pairs:
        if i >= j or (i, j) in out:
            continue
        cam = unproject_depth(scene.depths[i].double(), K[i])[grid[:, 1], grid[:, 0]]
        cj = (cam @ P[i, :3, :3].T + P[i, :3, 3] - P[j, :3, 3]) @ P[j, :3, :3]
        q = (cj[:, :2] / cj[:, 2:].clamp(min=1e-9) * K[j, 0, 0] + K[j, :2, 2]).round().long()
        ok = (cj[:, 2] > 0) & (q[:, 0] >= 0) & (q[:, 0] < W) & (q[:, 1] >= 0) & (q[:, 1] < H)
        qc = torch.stack([q[:, 0].clamp(0, W - 1), q[:, 1].clamp(0, H - 1)], 1)
        ok &= (scene.depths[j].double()[qc[:, 1], qc[:, 0]] - cj[:, 2]).abs() < tol * cj[:, 2]
        a, b = grid[ok], q[ok]
        n_out = int(outliers * len(a))
        if n_out:
            pick = torch.randperm(len(a), generator=g)[:n_out]
            b[pick] = torch.stack([torch.randint(0, W, (n_out,), generator=g),
                                   torch.randint(0, H, (n_out,), generator=g)], 1)
        out[(i, j)] = (a, b)
    return out
