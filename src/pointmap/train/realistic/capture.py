"""Captures of composed scenes: camera trajectories, exposure changes and capture effects, and the
per-item pair dataset of the realistic engine.

A capture reuses the procedural engine's pieces: its configuration (:class:`RealisticConfig`
extends :class:`~pointmap.train.synthetic.dataset.SyntheticConfig`), scene ids and splits
(:func:`~pointmap.train.synthetic.dataset.scene_id`), camera motions
(:func:`~pointmap.train.synthetic.cameras.sample_trajectory`), per-view exposure and white balance
(:func:`~pointmap.train.synthetic.dataset.draw_exposure`), view checks and co-visibility; it adds
an asset bank, the mesh rasteriser and capture effects (defocus blur, sensor noise, JPEG).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import PointmapError
from ..synthetic.cameras import intrinsics_from_fov, sample_trajectory
from ..synthetic.dataset import (
    PairSampleDataset,
    SyntheticConfig,
    _Plan,
    covisibility,
    draw_exposure,
    scene_id,
    usable_views,
)
from ..synthetic.render import RenderOutput
from .bank import AssetBank
from .capture_paths import handheld_shake, step_back
from .composer import compose_scene
from .meshes import pack_mesh_scenes
from .raster import render_meshes

__all__ = ["RealisticConfig", "RealisticPairDataset", "capture_effects", "plan_capture", "render_plans"]


@dataclass
class RealisticConfig(SyntheticConfig):
    """Settings of the realistic engine: those of the procedural engine (resolution, seed, split,
    layout weights, views per trajectory, baselines, fields of view, co-visibility and validity
    thresholds, exposure ranges, ``noise_max``, device; the procedural texture fields are unused)
    plus:

    Attributes:
        bank: folder of the asset bank (:mod:`pointmap.train.realistic.bank`).
        bank_texture_size: side in texels textures are resampled to for rendering (power of 2).
        blur_max: largest defocus blur (Gaussian sigma, pixels) drawn per view.
        jpeg_prob: probability that a view is JPEG-compressed; jpeg_quality: quality range.
        shadows: shadow-map shadows (default off here: rendering cost).
        tele_prob: probability that a capture is telephoto: one field of view drawn log-uniformly
            in ``tele_fov_range`` (degrees) and the cameras stepped back to frame what the drawn
            ``fov_range`` view framed (:func:`~pointmap.train.realistic.capture_paths.step_back`).
        shake_deg, shake_m: handheld shake per view (rotation std in degrees, position std in
            metres; :func:`~pointmap.train.realistic.capture_paths.handheld_shake`).
    """

    bank: str = ""
    bank_texture_size: int = 256
    blur_max: float = 0.8
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (55, 95)
    shadows: bool = False
    min_valid_fraction: float = 0.5
    tele_prob: float = 0.0
    tele_fov_range: tuple[float, float] = (10.0, 30.0)
    shake_deg: float = 0.0
    shake_m: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bank:
            raise PointmapError("RealisticConfig.bank: give the asset bank folder "
                                "(build it with `python scripts/build_asset_bank.py -o FOLDER`)")
        s = self.bank_texture_size
        if s & (s - 1) or s < 8:
            raise PointmapError(f"RealisticConfig.bank_texture_size must be a power of two >= 8, got {s}")
        if not 0 <= self.jpeg_prob <= 1 or not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise PointmapError(f"RealisticConfig: jpeg_prob in [0, 1] and 1 <= jpeg_quality <= 100 "
                                f"({self.jpeg_prob}, {self.jpeg_quality})")
        lo, hi = self.tele_fov_range
        if not 0 <= self.tele_prob <= 1 or not 1 <= lo <= hi < 179 or self.shake_deg < 0 or self.shake_m < 0:
            raise PointmapError(f"RealisticConfig: tele_prob in [0, 1], 1 <= tele_fov_range < 179 and shake >= 0 "
                                f"({self.tele_prob}, {self.tele_fov_range}, {self.shake_deg}, {self.shake_m})")


_BANKS: dict[str, AssetBank] = {}


def open_bank(config: RealisticConfig) -> AssetBank:
    """The (per-process cached) asset bank of ``config``."""
    if config.bank not in _BANKS:
        _BANKS[config.bank] = AssetBank.open(config.bank)
    return _BANKS[config.bank]


def plan_capture(config: RealisticConfig, bank: AssetBank, sid: int, attempt: int = 0,
                 motion: str | None = None, layout: str | None = None) -> _Plan:
    """Scene, trajectory (``n_views`` poses) and fields of view of scene id ``sid``."""
    rng = np.random.default_rng([sid, attempt, 7])
    if layout is None:
        names = [k for k, w in config.layouts.items() if w > 0]
        w = np.array([config.layouts[k] for k in names], dtype=float)
        layout = str(rng.choice(names, p=w / w.sum()))
    scene = compose_scene(layout, rng, bank)
    poses, motion = sample_trajectory(scene, rng, config.n_views, config.baseline_range, motion=motion,  # type: ignore[arg-type]
                                      margin=0.4)
    lo, hi = config.fov_range
    if rng.uniform() < config.per_view_fov_prob:
        fovs = rng.uniform(lo, hi, size=config.n_views)
    else:
        fovs = np.full(config.n_views, rng.uniform(lo, hi))
    if config.tele_prob > 0 and rng.uniform() < config.tele_prob:
        tlo, thi = config.tele_fov_range
        tele = float(np.exp(rng.uniform(np.log(tlo), np.log(thi))))
        poses = step_back(scene, poses, float(fovs.mean()), tele)
        fovs = tele * rng.uniform(0.97, 1.03, size=config.n_views) if len(set(fovs.tolist())) > 1 \
            else np.full(config.n_views, tele)
    if config.shake_deg > 0 or config.shake_m > 0:
        poses = handheld_shake(poses, rng, config.shake_deg, config.shake_m)
    return _Plan(sid, scene, poses, fovs, motion, rng)  # type: ignore[arg-type]


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[0]
    y = F.conv2d(F.pad(img[None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


def capture_effects(rgb: torch.Tensor, rng: np.random.Generator, blur_max: float, noise_max: float,
                    jpeg_prob: float, jpeg_quality: tuple[int, int]) -> torch.Tensor:
    """Per view of ``rgb`` ``(V, 3, H, W)`` in [0, 1]: Gaussian defocus blur (sigma uniform in
    ``[0, blur_max]`` pixels), Gaussian sensor noise (std uniform in ``[0, noise_max]``) and, with
    probability ``jpeg_prob``, a JPEG round trip at a quality drawn in ``jpeg_quality``."""
    out = []
    for img in rgb:
        s = float(rng.uniform(0, blur_max)) if blur_max > 0 else 0.0
        if s > 0.2:
            img = _gaussian_blur(img, s)
        sd = float(rng.uniform(0, noise_max)) if noise_max > 0 else 0.0
        if sd > 0:
            g = torch.Generator(device=img.device).manual_seed(int(rng.integers(2**31)))
            img = img + torch.randn(img.shape, generator=g, device=img.device) * sd
        img = img.clamp(0, 1)
        if rng.uniform() < jpeg_prob:
            arr = (img.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "JPEG", quality=int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)))
            buf.seek(0)
            dec = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
            img = torch.from_numpy(dec).permute(2, 0, 1).to(img.device)
        out.append(img)
    return torch.stack(out)


def render_plans(config: RealisticConfig, bank: AssetBank, plans: list[_Plan], width: int, height: int,
                 device: torch.device | str, color: bool = True, effects: bool = True,
                 views: list[list[int]] | None = None) -> tuple[RenderOutput, torch.Tensor, torch.Tensor]:
    """Render the views of ``plans`` (all ``n_views``, or ``views[b]`` of plan ``b``), scene after scene.

    Returns:
        the render (``rgb`` after exposure and, with ``effects``, capture effects), the poses
        ``(V, 4, 4)`` and intrinsics ``(V, 3, 3)`` used (float32 on ``device``).
    """
    device = torch.device(device)
    size = config.bank_texture_size
    batch, tex = pack_mesh_scenes([p.scene for p in plans], (lambda k: bank.texture(k, size)) if color else None,
                                  device, size)
    sel = views or [list(range(len(p.poses))) for p in plans]
    sidx = torch.tensor([b for b, vs in enumerate(sel) for _ in vs], dtype=torch.long, device=device)
    poses = torch.from_numpy(np.stack([plans[b].poses[v] for b, vs in enumerate(sel) for v in vs])).float().to(device)
    K = torch.from_numpy(np.stack([intrinsics_from_fov(plans[b].fovs[v], width, height)
                                   for b, vs in enumerate(sel) for v in vs])).float().to(device)
    expo = None
    if color:
        expo = torch.tensor([draw_exposure(config, plans[b].rng) for b, vs in enumerate(sel) for _ in vs],
                            dtype=torch.float32, device=device)
    out = render_meshes(batch, sidx, poses, K, height, width, bank=tex, exposure=expo, shadows=config.shadows)
    if color and effects and out.rgb is not None:
        rng = np.random.default_rng([plans[0].sid, 11])
        out.rgb = capture_effects(out.rgb, rng, config.blur_max, config.noise_max, config.jpeg_prob,
                                  config.jpeg_quality)
    return out, poses, K


def _choose_pair(config: RealisticConfig, bank: AssetBank, plan: _Plan, device: torch.device
                 ) -> tuple[int, int, float, bool]:
    """A co-visible pair of views of ``plan`` from a low-resolution depth render."""
    w, h = config.resolutions[0]
    lw = min(w, config.covis_width)
    lh = max(4, round(h * lw / w))
    out, poses, K = render_plans(config, bank, [plan], lw, lh, device, color=False)
    n = config.n_views
    cov = covisibility(out.depth[:, None].expand(n, n, lh, lw), poses[:, None].expand(n, n, 4, 4),
                       K[:, None].expand(n, n, 3, 3), out.pts3d[None].expand(n, n, lh, lw, 3),
                       out.valid[None].expand(n, n, lh, lw))
    mutual = torch.minimum(cov, cov.T).cpu().numpy()
    frac = out.valid.float().mean((-1, -2)).cpu().numpy()
    dpos = torch.where(out.valid, out.depth, torch.full_like(out.depth, float("inf")))
    near = torch.quantile(dpos.view(n, -1), 0.05, dim=-1).cpu().numpy()
    ok = usable_views(config, plan, frac, near)
    score = mutual.copy()
    np.fill_diagonal(score, -1)
    score[~ok] = -1
    score[:, ~ok] = -1
    good = np.argwhere(score >= config.min_covisibility)
    if len(good):
        i, j = good[int(plan.rng.integers(len(good)))]
        return int(i), int(j), float(score[i, j]), True
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(i), int(j), float(score[i, j]), False


class RealisticPairDataset(PairSampleDataset):
    """``length`` deterministic pairs of views of composed scenes (the realistic engine's
    per-item face, mixable with the procedural engine's
    :class:`~pointmap.train.synthetic.dataset.SyntheticPairDataset`).

    ``dataset[idx]`` (or ``dataset[(idx, ar_idx)]``) returns ``(view1, view2)`` with the entries of
    the procedural engine's items: ``img`` (3,H,W) in [-1, 1], ``depthmap`` (H,W) metres (0 =
    invalid), ``camera_pose`` (4,4) cam-to-world, ``camera_intrinsics`` (3,3), ``pts3d`` (H,W,3)
    world metres, ``valid_mask`` (H,W), ``true_shape`` (2,) int32, ``instance``, ``dataset``
    (``"realistic"``), ``label`` (layout), ``idx``, ``covisibility``.
    """

    def render(self, idx: int, ar_idx: int | None) -> tuple[dict, dict]:
        cfg = self.config
        bank = open_bank(cfg)
        device = torch.device(cfg.device)
        sid = scene_id(cfg, int(idx))
        res = cfg.resolutions
        w, h = res[(ar_idx if ar_idx is not None else sid % len(res)) % len(res)]
        best = None
        for attempt in range(cfg.max_attempts):
            plan = plan_capture(cfg, bank, sid, attempt)
            i, j, score, ok = _choose_pair(cfg, bank, plan, device)
            if best is None or score > best[1][2]:
                best = (plan, (i, j, score, ok))
            if ok:
                break
        assert best is not None
        plan, (i, j, score, _) = best
        out, poses, K = render_plans(cfg, bank, [plan], w, h, device, views=[[i, j]])
        assert out.rgb is not None
        views = []
        for n, v in enumerate((i, j)):
            views.append({
                "img": out.rgb[n] * 2 - 1, "depthmap": out.depth[n], "camera_pose": poses[n],
                "camera_intrinsics": K[n], "pts3d": out.pts3d[n], "valid_mask": out.valid[n],
                "true_shape": torch.tensor([h, w], dtype=torch.int32), "instance": f"{sid:016x}_{v}",
                "dataset": "realistic", "label": plan.scene.layout, "idx": int(idx),
                "covisibility": torch.tensor(score, dtype=torch.float32)})
        return views[0], views[1]
