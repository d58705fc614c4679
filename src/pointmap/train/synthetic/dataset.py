"""Pairs of views of procedural scenes with exact depth, poses and intrinsics.

Each sample index maps (by hashing, together with the base seed and the split) to a scene id;
train ids are even and held-out ids odd, so the splits can never share a scene. From the scene id
everything is drawn deterministically: the layout, the scene, a capture-like trajectory of
``n_views`` cameras, the pair of views (chosen among those whose mutual co-visibility is at least
``min_covisibility``, checked on a low-resolution depth render) and the per-view exposure.

The batched path :func:`render_pair_batch` renders many pairs at once on one device (the fast path
for training on a GPU); :class:`SyntheticPairDataset` is the per-sample ``torch.utils.data.Dataset``
face of the same computation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...errors import PointmapError
from .cameras import intrinsics_from_fov, sample_trajectory
from .config import SyntheticConfig
from .layouts import make_scene
from .raycast import pack_scenes
from .render import render_views
from .scenes import Scene
from .textures import TextureBank, build_texture_bank

__all__ = [
    "ExampleCapture",
    "PairSampleDataset",
    "SyntheticPairDataset",
    "covisibility",
    "render_example_scene",
    "render_pair_batch",
    "scene_id",
]

View = dict[str, Any]


def scene_id(config: SyntheticConfig, idx: int) -> int:
    """The 63-bit scene id of sample ``idx``: even for ``train``, odd for ``val``."""
    h = hashlib.blake2b(f"pointmap-synthetic:{config.seed}:{config.split}:{int(idx)}".encode(),
                        digest_size=8).digest()
    v = int.from_bytes(h, "little") & ((1 << 63) - 1)
    return (v & ~1) | (1 if config.split == "val" else 0)


def _bank(config: SyntheticConfig, device: torch.device | str) -> TextureBank:
    return build_texture_bank(config.seed, n_procedural=config.n_textures, size=config.texture_size,
                              n_photo=config.n_photo_textures if config.photo_prob > 0 else 0,
                              photo_paths=config.photo_paths, device=device,
                              n_plain=config.n_plain_textures if config.plain_prob > 0 else 0)


# --------------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    sid: int
    scene: Scene
    poses: np.ndarray  # (n, 4, 4)
    fovs: np.ndarray  # (n,)
    motion: str
    rng: np.random.Generator


def _plan(config: SyntheticConfig, bank: TextureBank, sid: int, attempt: int, motion: str | None = None) -> _Plan:
    rng = np.random.default_rng([sid, attempt])
    names = [k for k, w in config.layouts.items() if w > 0]
    w = np.array([config.layouts[k] for k in names], dtype=float)
    layout = str(rng.choice(names, p=w / w.sum()))
    scene = make_scene(layout, rng, bank, config.photo_prob, config.plain_prob)
    poses, motion = sample_trajectory(scene, rng, config.n_views, config.baseline_range, motion=motion)
    lo, hi = config.fov_range
    if rng.uniform() < config.per_view_fov_prob:
        fovs = rng.uniform(lo, hi, size=config.n_views)
    else:
        fovs = np.full(config.n_views, rng.uniform(lo, hi))
    return _Plan(sid, scene, poses, fovs, motion, rng)


def draw_exposure(config: SyntheticConfig, rng: np.random.Generator) -> list[float]:
    """One view's exposure change ``[gain, gamma, wb_r, wb_g, wb_b]`` (see :func:`render_views`)."""
    return [float(np.exp(rng.uniform(np.log(config.gain_range[0]), np.log(config.gain_range[1])))),
            float(rng.uniform(*config.gamma_range)), *(1 + rng.normal(0, config.wb_jitter, 3))]


def usable_views(config: SyntheticConfig, plan: _Plan, frac_valid: np.ndarray, near: np.ndarray) -> np.ndarray:
    """``(n_views,)`` bool: views with enough geometry, a camera outside every object and nothing
    closer than 10 cm (``frac_valid``, ``near``: per view, fraction of valid pixels and the 5 %
    depth quantile)."""
    eyes = plan.poses[:, :3, 3]
    return (frac_valid >= config.min_valid_fraction) & ~plan.scene.contains(eyes, 0.05) & (near > 0.1)


def covisibility(depth_a: torch.Tensor, pose_a: torch.Tensor, K_a: torch.Tensor,
                 pts_b: torch.Tensor, valid_b: torch.Tensor, rel_tol: float = 0.03) -> torch.Tensor:
    """Fraction of view b's valid pixels that view a sees unoccluded.

    A point of b counts when it projects inside a's image, in front of a, and a's depth at the
    nearest pixel agrees with its depth within ``rel_tol`` (relative).

    Args:
        depth_a: ``(..., H, W)`` metres (0 = invalid). pose_a: ``(..., 4, 4)`` cam-to-world.
        K_a: ``(..., 3, 3)``. pts_b: ``(..., H', W', 3)`` world points. valid_b: ``(..., H', W')``.
    Returns:
        ``(...)`` float32 fractions in [0, 1].
    """
    H, W = depth_a.shape[-2:]
    R, t = pose_a[..., :3, :3], pose_a[..., :3, 3]
    lead = pts_b.shape[:-3]
    p = pts_b.reshape(*lead, -1, 3)
    cam = torch.einsum("...ji,...nj->...ni", R, p - t[..., None, :])  # R^T (p - t)
    z = cam[..., 2]
    uvw = torch.einsum("...ij,...nj->...ni", K_a, cam)
    u = uvw[..., 0] / z.clamp(min=1e-9)
    v = uvw[..., 1] / z.clamp(min=1e-9)
    ui, vi = u.round().long(), v.round().long()
    inside = (z > 1e-6) & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    flat = (vi.clamp(0, H - 1) * W + ui.clamp(0, W - 1))
    d_a = torch.gather(depth_a.reshape(*lead, -1), -1, flat)
    agree = inside & (d_a > 0) & ((d_a - z).abs() <= rel_tol * z)
    vb = valid_b.reshape(*lead, -1)
    return (agree & vb).sum(-1).float() / vb.sum(-1).clamp(min=1).float()


def _low_res(config: SyntheticConfig, w: int, h: int) -> tuple[int, int]:
    lw = min(w, config.covis_width)
    return lw, max(4, round(h * lw / w))


def _choose_pairs(config: SyntheticConfig, plans: list[_Plan], w: int, h: int,
                  device: torch.device) -> list[tuple[int, int, float, bool]]:
    """Per plan: ``(i, j, score, ok)`` the chosen view pair, its co-visibility score and whether it
    passes the thresholds (else the best pair found)."""
    n = config.n_views
    lw, lh = _low_res(config, w, h)
    packed = pack_scenes([p.scene for p in plans], device)
    sidx = torch.arange(len(plans), device=device).repeat_interleave(n)
    poses = torch.from_numpy(np.concatenate([p.poses for p in plans])).to(device)
    K = torch.from_numpy(np.stack([intrinsics_from_fov(f, lw, lh) for p in plans for f in p.fovs])).to(device)
    out = render_views(packed, sidx, poses, K, lh, lw, chunk_elems=config.chunk_for(device))
    B = len(plans)
    depth = out.depth.view(B, n, lh, lw)
    pts = out.pts3d.view(B, n, lh, lw, 3)
    valid = out.valid.view(B, n, lh, lw)
    # covis[b, a, c] = fraction of view c's pixels seen by view a
    cov = covisibility(depth[:, :, None].expand(B, n, n, lh, lw), poses.view(B, n, 1, 4, 4).expand(B, n, n, 4, 4),
                       K.view(B, n, 1, 3, 3).expand(B, n, n, 3, 3), pts[:, None].expand(B, n, n, lh, lw, 3),
                       valid[:, None].expand(B, n, n, lh, lw))
    mutual = torch.minimum(cov, cov.transpose(1, 2)).cpu().numpy()
    frac_valid = valid.float().mean((-1, -2)).cpu().numpy()
    dpos = torch.where(valid, depth, torch.full_like(depth, float("inf")))
    near = torch.quantile(dpos.view(B, n, -1), 0.05, dim=-1).cpu().numpy()
    result = []
    for b, plan in enumerate(plans):
        view_ok = usable_views(config, plan, frac_valid[b], near[b])
        score = mutual[b].copy()
        np.fill_diagonal(score, -1.0)
        score[~view_ok, :] = -1.0
        score[:, ~view_ok] = -1.0
        good = np.argwhere(score >= config.min_covisibility)
        if len(good):
            i, j = good[int(plan.rng.integers(len(good)))]
            result.append((int(i), int(j), float(score[i, j]), True))
        else:
            i, j = np.unravel_index(int(np.argmax(score)), score.shape)
            result.append((int(i), int(j), float(score[i, j]), False))
    return result


# --------------------------------------------------------------------------------- rendering


def _resolve_resolution(config: SyntheticConfig, idx: int, ar_idx: int | None) -> tuple[int, int]:
    res = config.resolutions
    if ar_idx is None:
        ar_idx = scene_id(config, idx) % len(res) if len(res) > 1 else 0
    return res[ar_idx % len(res)]


def render_pair_batch(config: SyntheticConfig, indices: Sequence[int], device: torch.device | str | None = None,
                      ar_idx: int | None = None) -> tuple[View, View]:
    """Render the pairs of samples ``indices`` at once on ``device`` (default ``config.device``).

    All pairs share one resolution: ``config.resolutions[ar_idx]`` (default: chosen from the first
    index). Sample ``idx`` yields the same pair as ``SyntheticPairDataset(config)[idx]`` at that
    resolution (up to floating-point reduction order).

    Returns:
        ``(view1, view2)``, dicts of batched entries (B = ``len(indices)``):
        ``img`` (B,3,H,W) float32 in [-1,1]; ``depthmap`` (B,H,W) float32 metres, 0 = invalid;
        ``camera_pose`` (B,4,4) float32 cam-to-world (OpenCV); ``camera_intrinsics`` (B,3,3) float32;
        ``pts3d`` (B,H,W,3) float32 world metres; ``valid_mask`` (B,H,W) bool; ``true_shape`` (B,2)
        int32 (H,W); ``instance``, ``dataset``, ``label`` (layout) lists of str; ``idx`` list of int;
        ``covisibility`` (B,) float32 (low-resolution estimate used to pick the pair).
    """
    device = torch.device(device if device is not None else config.device)
    indices = [int(i) for i in indices]
    if not indices:
        raise PointmapError("render_pair_batch: indices is empty")
    w, h = _resolve_resolution(config, indices[0], ar_idx)
    bank = _bank(config, device)
    sids = [scene_id(config, i) for i in indices]

    chosen: list[tuple[_Plan, tuple[int, int, float, bool]] | None] = [None] * len(indices)
    pending = list(range(len(indices)))
    for attempt in range(config.max_attempts):
        plans = [_plan(config, bank, sids[k], attempt) for k in pending]
        picks = _choose_pairs(config, plans, w, h, device)
        still = []
        for k, plan, pick in zip(pending, plans, picks):
            prev = chosen[k]
            if prev is None or pick[2] > prev[1][2]:
                chosen[k] = (plan, pick)
            if not pick[3]:
                still.append(k)
        pending = still
        if not pending:
            break

    plans = [c[0] for c in chosen]  # type: ignore[index]
    pairs = [c[1] for c in chosen]  # type: ignore[index]
    B = len(plans)
    packed = pack_scenes([p.scene for p in plans], device)
    sidx = torch.arange(B, device=device).repeat_interleave(2)
    poses_np = np.stack([p.poses[[i, j]] for p, (i, j, _, _) in zip(plans, pairs)]).reshape(2 * B, 4, 4)
    K_np = np.stack([intrinsics_from_fov(p.fovs[v], w, h) for p, (i, j, _, _) in zip(plans, pairs) for v in (i, j)])
    expo = [draw_exposure(config, p.rng) for p in plans for _ in range(2)]
    noise_std = [p.rng.uniform(0, config.noise_max) for p in plans for _ in range(2)]
    noise_seeds = [int(p.rng.integers(2**31)) for p in plans for _ in range(2)]
    poses = torch.from_numpy(poses_np).to(device)
    K = torch.from_numpy(K_np).to(device)
    out = render_views(packed, sidx, poses, K, h, w, bank=bank,
                       exposure=torch.tensor(expo, dtype=torch.float32, device=device),
                       shadows=config.shadows, chunk_elems=config.chunk_for(device))
    rgb = out.rgb
    assert rgb is not None
    noise = torch.stack([torch.randn((3, h, w), generator=torch.Generator(device=device).manual_seed(s),
                                     device=device) * sd for s, sd in zip(noise_seeds, noise_std)])
    img = (rgb + noise).clamp(0, 1) * 2 - 1

    views: list[View] = []
    for v in range(2):
        sel = slice(v, 2 * B, 2)
        views.append({
            "img": img[sel].contiguous(),
            "depthmap": out.depth[sel].contiguous(),
            "camera_pose": poses[sel].contiguous(),
            "camera_intrinsics": K[sel].contiguous(),
            "pts3d": out.pts3d[sel].contiguous(),
            "valid_mask": out.valid[sel].contiguous(),
            "true_shape": torch.tensor([[h, w]] * B, dtype=torch.int32, device=device),
            "instance": [f"{p.sid:016x}_{pr[v]}" for p, pr in zip(plans, pairs)],
            "dataset": ["synthetic"] * B,
            "label": [p.scene.layout for p in plans],
            "idx": list(indices),
            "covisibility": torch.tensor([pr[2] for pr in pairs], dtype=torch.float32, device=device),
        })
    return views[0], views[1]


class PairSampleDataset(torch.utils.data.Dataset):
    """Base of the engines' per-item pair datasets: ``length`` samples addressed by ``idx`` or by
    ``(idx, aspect_ratio_idx)`` (as the batched aspect-ratio samplers do); subclasses render one
    sample in :meth:`render`."""

    def __init__(self, config: Any, length: int) -> None:
        if length < 1:
            raise PointmapError(f"{type(self).__name__} length must be >= 1, got {length}")
        self.config = config
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[View, View]:
        idx, ar_idx = (item if isinstance(item, tuple) else (item, None))
        if not 0 <= int(idx) < self.length:
            raise IndexError(f"sample index {idx} out of range for a dataset of length {self.length}")
        return self.render(int(idx), ar_idx)

    def render(self, idx: int, ar_idx: int | None) -> tuple[View, View]:
        """The ``(view1, view2)`` of sample ``idx`` (``ar_idx``: the resolution bucket, or ``None``
        for the sample's own choice)."""
        raise NotImplementedError


class SyntheticPairDataset(PairSampleDataset):
    """``length`` deterministic synthetic pairs.

    ``dataset[idx]`` (or ``dataset[(idx, ar_idx)]`` to pick the resolution bucket, as batched
    aspect-ratio samplers do) returns ``(view1, view2)``: the entries of :func:`render_pair_batch`
    for one sample, unbatched (``img`` (3,H,W), ``depthmap`` (H,W), ``camera_pose`` (4,4),
    ``camera_intrinsics`` (3,3), ``pts3d`` (H,W,3), ``valid_mask`` (H,W), ``true_shape`` (2,) int32,
    ``instance``/``dataset``/``label`` str, ``idx`` int, ``covisibility`` float tensor).
    """

    def render(self, idx: int, ar_idx: int | None) -> tuple[View, View]:
        v1, v2 = render_pair_batch(self.config, [idx], ar_idx=ar_idx)
        return _unbatch(v1), _unbatch(v2)


def _unbatch(view: View) -> View:
    return {k: (v[0] if isinstance(v, (torch.Tensor, list)) else v) for k, v in view.items()}


# ---------------------------------------------------------------------------------- examples


@dataclass
class ExampleCapture:
    """A rendered example capture with its ground truth.

    Attributes:
        images: ``n_views`` RGB images.
        poses: ``(n, 4, 4)`` float32 cam-to-world (OpenCV axes, metres).
        intrinsics: ``(n, 3, 3)`` float32 pixels.
        depths: ``(n, H, W)`` float32 metres (0 = sky).
        layout: the scene layout.
    """

    images: list[Image.Image]
    poses: np.ndarray
    intrinsics: np.ndarray
    depths: np.ndarray
    layout: str


def render_example_scene(seed: int, n_views: int = 4, size: tuple[int, int] = (512, 384),
                         layout: str | None = None, min_covisibility: float = 0.4,
                         texture_size: int = 256, n_textures: int = 96) -> ExampleCapture:
    """Render a small capture of one procedural scene for demos and documentation.

    Only procedural textures are used (no photographs), so the images are free of third-party
    content. Consecutive views overlap by at least ``min_covisibility`` when possible (up to 8
    trajectories are tried; the most overlapping is kept).

    Args:
        seed: scene seed. n_views: number of images. size: ``(W, H)`` pixels.
        layout: one of ``LAYOUTS`` (random if ``None``).
        texture_size, n_textures: texture bank settings (side in texels, procedural count).
    """
    layouts = {layout: 1.0} if layout else {"room": 0.4, "turntable": 0.3, "street": 0.3}
    cfg = SyntheticConfig(resolution=size, seed=seed, layouts=layouts, n_views=n_views, photo_prob=0.0,
                          texture_size=texture_size, n_textures=n_textures,
                          baseline_range=(0.25, 0.5), noise_max=0.003, gain_range=(0.9, 1.1), gamma_range=(0.95, 1.05))
    bank = _bank(cfg, "cpu")
    w, h = size
    lw, lh = _low_res(cfg, w, h)
    best = None
    for attempt in range(8):
        lay = str(np.random.default_rng([seed, attempt]).choice(list(layouts))) if layout is None else layout
        motion = {"turntable": "orbit", "street": "walk"}.get(lay, "nearby")
        cfg.layouts = {lay: 1.0}
        plan = _plan(cfg, bank, scene_id(cfg, seed), attempt, motion=motion)
        plan.fovs[:] = plan.fovs[0]
        packed = pack_scenes([plan.scene])
        poses = torch.from_numpy(plan.poses)
        K = torch.from_numpy(np.stack([intrinsics_from_fov(f, lw, lh) for f in plan.fovs]))
        low = render_views(packed, torch.zeros(n_views, dtype=torch.long), poses, K, lh, lw)
        cov = [float(covisibility(low.depth[i], poses[i], K[i], low.pts3d[i + 1], low.valid[i + 1]))
               for i in range(n_views - 1)]
        score = min(min(cov), float(low.valid.float().mean(dim=(1, 2)).min()))
        if float(low.depth[low.valid].quantile(0.05)) < 0.3:  # a camera pressed against an object
            score -= 1.0
        if best is None or score > best[0]:
            best = (score, plan)
        if score >= min_covisibility:
            break
    assert best is not None
    plan = best[1]
    K = np.stack([intrinsics_from_fov(f, w, h) for f in plan.fovs])
    expo = torch.tensor([[plan.rng.uniform(0.9, 1.1), 1.0, 1.0, 1.0, 1.0] for _ in range(n_views)])
    out = render_views(pack_scenes([plan.scene]), torch.zeros(n_views, dtype=torch.long), torch.from_numpy(plan.poses),
                       torch.from_numpy(K), h, w, bank=bank, exposure=expo, shadows=True)
    assert out.rgb is not None
    arr = (out.rgb.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return ExampleCapture([Image.fromarray(a) for a in arr], plan.poses.copy(), K.astype(np.float32),
                          out.depth.numpy(), plan.scene.layout)
