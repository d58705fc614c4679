"""A device-resident pool of rendered synthetic views that serves training batches.

Rendering one pair per scene (:func:`~pointmap.train.synthetic.render_pair_batch`) spends most of
its work on building the scene, checking co-visibility and ray casting two views. The pool instead
renders *every* view of a scene's trajectory once, keeps the views on the training device
(``uint8`` colour, ``float32`` depth) and draws many co-visible pairs from them, so the GPU trains
instead of waiting for the renderer:

* slot ``s`` of the pool holds one scene (``n_views`` views) and the list of its view pairs whose
  mutual co-visibility is at least ``min_covisibility`` (both views passing the validity checks of
  the pair engine);
* a batch draws ``B`` slots (uniformly among slots with a valid pair), one pair per slot, a random
  order per pair, and a fresh colour jitter and sensor noise per view (the exposure change of
  each view is part of its render); world points are unprojected from depth;
* every ``refresh_every`` batches the ``refresh_scenes`` oldest slots are re-rendered with new
  scenes, so the pool keeps changing over a long run.

Everything is deterministic: the scene of pool sample ``k`` is the engine's sample
``k * world + rank`` (so ranks never share scenes and ``val`` never meets ``train``), the slot
contents follow from the number of batches served, and batch sampling uses a private generator;
:meth:`SyntheticViewPool.state_dict` / :meth:`load_state_dict` resume a pool exactly (up to the
floating-point order of a re-render).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import PointmapError
from .cameras import intrinsics_from_fov
from .config import SyntheticConfig
from .dataset import (
    _bank,
    _plan,
    covisibility,
    draw_exposure,
    scene_id,
    usable_views,
)
from .raycast import pack_scenes
from .render import RenderOutput, pixel_rays, render_views

__all__ = ["PoolConfig", "SyntheticViewPool"]


@dataclass
class PoolConfig:
    """Size and refresh schedule of a :class:`SyntheticViewPool`.

    Attributes:
        n_scenes: scenes held at once (``n_scenes * n_views`` views on the device).
        refresh_every: batches between two refreshes (0: never refresh).
        refresh_scenes: scenes re-rendered per refresh (the oldest ones).
        render_chunk: scenes rendered per call of the ray caster.
        covis_stride: pixel stride of the co-visibility check.
        brightness, contrast, saturation: per-view colour jitter amplitudes (factor drawn
            uniformly in ``[1 - a, 1 + a]``); 0 disables.
    """

    n_scenes: int = 2048
    refresh_every: int = 20
    refresh_scenes: int = 32
    render_chunk: int = 32
    covis_stride: int = 4
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3

    def __post_init__(self) -> None:
        if self.n_scenes < 1 or self.render_chunk < 1 or self.covis_stride < 1:
            raise PointmapError(f"PoolConfig: n_scenes, render_chunk and covis_stride must be >= 1 ({self})")
        if self.refresh_every < 0 or not 0 <= self.refresh_scenes <= self.n_scenes:
            raise PointmapError(f"PoolConfig: need refresh_every >= 0 and 0 <= refresh_scenes <= n_scenes ({self})")


class SyntheticViewPool:
    """Rendered views of ``pool.n_scenes`` synthetic scenes on ``device``, served as pair batches.

    Args:
        config: the data engine settings (split, seed, resolution — the first bucket is used —,
            layouts, views per scene, co-visibility and validity thresholds, exposure ranges).
        pool: pool size and refresh schedule.
        device: where views are rendered and kept.
        rank, world: this process and the number of processes (disjoint scenes per rank).
        seed: seed of the batch sampler and of the colour jitter.
        progress: show a progress bar while filling the pool.
        fill: render the first scenes now (``False`` when :meth:`load_state_dict` follows).
    """

    def __init__(self, config: SyntheticConfig, pool: PoolConfig | None = None,
                 device: torch.device | str = "cpu", rank: int = 0, world: int = 1, seed: int = 0,
                 progress: bool = False, fill: bool = True) -> None:
        self.config = config
        self.pool = pool or PoolConfig()
        self.device = torch.device(device)
        self.rank, self.world = int(rank), int(world)
        self.seed = int(seed)
        self.width, self.height = config.resolutions[0]
        self.n_views = config.n_views
        S, V, H, W = self.pool.n_scenes, self.n_views, self.height, self.width
        dev = self.device
        need = S * V * H * W * (3 + 4)  # uint8 colour + float32 depth
        if dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(dev)
            if need > 0.8 * free:
                raise PointmapError(f"the synthetic view pool needs {need / 2**30:.1f} GiB for {S} scenes x {V} views "
                                    f"at {W}x{H}, more than 80% of the {free / 2**30:.1f} GiB free on {dev}; "
                                    "lower n_scenes")
        self.img = torch.zeros((S, V, 3, H, W), dtype=torch.uint8, device=dev)
        self.depth = torch.zeros((S, V, H, W), dtype=torch.float32, device=dev)
        self.pose = torch.eye(4, device=dev).repeat(S, V, 1, 1)
        self.K = torch.eye(3, device=dev).repeat(S, V, 1, 1)
        n_pairs_max = V * (V - 1) // 2
        self.pair_tab = torch.zeros((S, n_pairs_max, 2), dtype=torch.long, device=dev)
        self.n_pairs = torch.zeros(S, dtype=torch.long, device=dev)
        self.covis = torch.zeros((S, n_pairs_max), dtype=torch.float32, device=dev)
        self.slot_sample = np.full(S, -1, dtype=np.int64)
        self.labels: list[str] = [""] * S
        self._bank = self._texture_bank()
        self.next_sample = 0
        self.cursor = 0
        self.batches = 0
        self.gen = torch.Generator(device="cpu").manual_seed(self.seed * 1000003 + self.rank)
        self.gen_dev = torch.Generator(device=dev).manual_seed(self.seed * 1000003 + self.rank)
        self._progress = progress
        self.render_seconds = 0.0
        if fill:
            self.fill()

    # ------------------------------------------------------------------ rendering

    def _texture_bank(self) -> Any:
        """The procedural engine's texture bank on the pool's device (engines may override)."""
        return _bank(self.config, self.device)

    def _engine_index(self, k: int) -> int:
        return k * self.world + self.rank

    def _fill(self, slots: list[int], samples: list[int] | None = None) -> None:
        """Render new scenes into ``slots`` (next pool samples, or the given ``samples``)."""
        import time

        t0 = time.perf_counter()
        if samples is None:
            samples = list(range(self.next_sample, self.next_sample + len(slots)))
            self.next_sample += len(slots)
        chunk = self.pool.render_chunk
        bar = None
        if self._progress and len(slots) > chunk:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(slots), unit="scene", desc="render pool", dynamic_ncols=True)
        for a in range(0, len(slots), chunk):
            self._render_into(slots[a:a + chunk], samples[a:a + chunk])
            if bar is not None:
                bar.update(len(slots[a:a + chunk]))
        if bar is not None:
            bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.render_seconds += time.perf_counter() - t0

    def _render_scenes(self, samples: list[int]) -> tuple[list[Any], RenderOutput, torch.Tensor, torch.Tensor]:
        """Render all ``n_views`` views of the pool samples ``samples`` (scene after scene).

        Returns the plans (``scene.layout``, ``scene.contains``, ``poses`` are used), the render
        (``V = len(samples) * n_views`` views with colour), poses ``(V, 4, 4)`` and intrinsics
        ``(V, 3, 3)`` on the pool's device. Engines other than the procedural one override this.
        """
        cfg, dev, V, H, W = self.config, self.device, self.n_views, self.height, self.width
        plans = [_plan(cfg, self._bank, scene_id(cfg, self._engine_index(k)), 0) for k in samples]
        B = len(plans)
        packed = pack_scenes([p.scene for p in plans], dev)
        sidx = torch.arange(B, device=dev).repeat_interleave(V)
        poses = torch.from_numpy(np.concatenate([p.poses for p in plans])).float().to(dev)
        K = torch.from_numpy(np.stack([intrinsics_from_fov(f, W, H) for p in plans for f in p.fovs])).float().to(dev)
        expo = [draw_exposure(cfg, p.rng) for p in plans for _ in range(V)]
        out = render_views(packed, sidx, poses, K, H, W, bank=self._bank,
                           exposure=torch.tensor(expo, dtype=torch.float32, device=dev), shadows=cfg.shadows,
                           chunk_elems=cfg.chunk_for(dev))
        return plans, out, poses, K

    @torch.no_grad()
    def _render_into(self, slots: list[int], samples: list[int]) -> None:
        cfg, dev, V, H, W = self.config, self.device, self.n_views, self.height, self.width
        plans, out, poses, K = self._render_scenes(samples)
        B = len(plans)
        assert out.rgb is not None
        st = self.pool.covis_stride
        depth = out.depth.view(B, V, H, W)
        pts = out.pts3d.view(B, V, H, W, 3)[:, :, ::st, ::st]
        valid = out.valid.view(B, V, H, W)
        h2, w2 = pts.shape[2:4]
        # cov[b, a, c]: fraction of view c's valid pixels that view a sees unoccluded
        cov = covisibility(depth[:, :, None].expand(B, V, V, H, W), poses.view(B, V, 1, 4, 4).expand(B, V, V, 4, 4),
                           K.view(B, V, 1, 3, 3).expand(B, V, V, 3, 3), pts[:, None].expand(B, V, V, h2, w2, 3),
                           valid[:, None, :, ::st, ::st].expand(B, V, V, h2, w2))
        mutual = torch.minimum(cov, cov.transpose(1, 2)).cpu().numpy()
        frac_valid = valid.float().mean((-1, -2)).cpu().numpy()
        dpos = torch.where(valid, depth, torch.full_like(depth, float("inf")))
        near = torch.quantile(dpos.view(B, V, -1)[..., ::7], 0.05, dim=-1).cpu().numpy()
        iu, ju = np.triu_indices(V, 1)
        for b, (slot, k, plan) in enumerate(zip(slots, samples, plans)):
            ok = usable_views(cfg, plan, frac_valid[b], near[b])
            sc = mutual[b][iu, ju]
            good = (sc >= cfg.min_covisibility) & ok[iu] & ok[ju]
            n = int(good.sum())
            self.n_pairs[slot] = n
            if n:
                self.pair_tab[slot, :n] = torch.from_numpy(np.stack([iu[good], ju[good]], 1)).to(dev)
                self.covis[slot, :n] = torch.from_numpy(sc[good].astype(np.float32)).to(dev)
            self.img[slot] = (out.rgb.view(B, V, 3, H, W)[b] * 255 + 0.5).to(torch.uint8)
            self.depth[slot] = depth[b]
            self.pose[slot] = poses.view(B, V, 4, 4)[b]
            self.K[slot] = K.view(B, V, 3, 3)[b]
            self.slot_sample[slot] = k
            self.labels[slot] = plan.scene.layout

    def fill(self) -> None:
        """Render the next ``n_scenes`` pool samples into every slot."""
        self._fill(list(range(self.pool.n_scenes)))

    def refresh(self) -> None:
        """Replace the ``refresh_scenes`` oldest scenes with new ones."""
        n = self.pool.refresh_scenes
        if n == 0:
            return
        S = self.pool.n_scenes
        slots = [(self.cursor + i) % S for i in range(n)]
        self.cursor = (self.cursor + n) % S
        self._fill(slots)

    # ------------------------------------------------------------------ sampling

    @property
    def n_valid_pairs(self) -> int:
        """Number of co-visible view pairs currently in the pool."""
        return int(self.n_pairs.sum())

    def _jitter(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Per-image brightness, contrast and saturation jitter of ``(N, 3, H, W)`` in [0, 1]."""
        p = self.pool
        N = img.shape[0]
        f = (torch.rand((3, N, 1, 1, 1), generator=g) * 2 - 1).to(img.device)
        amp = torch.tensor([p.brightness, p.contrast, p.saturation], device=img.device).view(3, 1, 1, 1, 1)
        f = 1 + f * amp
        img = img * f[0]
        gray = (0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2])[:, None]
        img = (img - gray.mean((2, 3), keepdim=True)) * f[1] + gray.mean((2, 3), keepdim=True)
        gray = (0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2])[:, None]
        img = (img - gray) * f[2] + gray
        return img.clamp(0, 1)

    def sample(self, batch_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """One batch of ``batch_size`` pairs ``(view1, view2)`` on the pool's device.

        Entries as :func:`~pointmap.train.synthetic.render_pair_batch` (``img`` in [-1, 1],
        ``depthmap``, ``camera_pose``, ``camera_intrinsics``, ``pts3d`` world points,
        ``valid_mask``, ``true_shape``, ``label``, ``idx`` = pool sample, ``covisibility``).
        Refreshes the pool first when the schedule says so.
        """
        if self.pool.refresh_every and self.batches and self.batches % self.pool.refresh_every == 0:
            self.refresh()
        self.batches += 1
        g = self.gen
        has = (self.n_pairs > 0).nonzero().flatten().cpu()
        if len(has) == 0:
            raise PointmapError("the synthetic view pool holds no co-visible pair; lower min_covisibility")
        slots = has[torch.randint(len(has), (batch_size,), generator=g)]
        u = torch.rand(batch_size, generator=g)
        k = (u * self.n_pairs.cpu()[slots]).long()
        swap = torch.rand(batch_size, generator=g) < 0.5
        slots_d, k_d = slots.to(self.device), k.to(self.device)
        ij = self.pair_tab[slots_d, k_d]  # (B, 2)
        swap_d = swap.to(self.device)
        vi = torch.where(swap_d, ij[:, 1], ij[:, 0])
        vj = torch.where(swap_d, ij[:, 0], ij[:, 1])
        cov = self.covis[slots_d, k_d]
        H, W = self.height, self.width
        both = torch.cat([self.img[slots_d, vi], self.img[slots_d, vj]]).float() / 255.0
        both = self._jitter(both, g)
        sd = torch.rand((2 * batch_size, 1, 1, 1), generator=g).to(self.device) * self.config.noise_max
        noise = torch.randn(both.shape, generator=self.gen_dev, device=self.device)
        both = (both + noise * sd).clamp(0, 1) * 2 - 1
        views = []
        for n, v in enumerate((vi, vj)):
            depth = self.depth[slots_d, v]
            pose = self.pose[slots_d, v]
            K = self.K[slots_d, v]
            o, d = pixel_rays(pose, K, H, W)
            pts = (o + depth.view(batch_size, -1, 1) * d).view(batch_size, H, W, 3)
            valid = depth > 0
            pts = torch.where(valid[..., None], pts, torch.zeros_like(pts))
            views.append({
                "img": both[n * batch_size:(n + 1) * batch_size].contiguous(),
                "depthmap": depth,
                "camera_pose": pose,
                "camera_intrinsics": K,
                "pts3d": pts,
                "valid_mask": valid,
                "true_shape": torch.tensor([[H, W]] * batch_size, dtype=torch.int32, device=self.device),
                "label": [self.labels[int(s)] for s in slots],
                "idx": [int(self.slot_sample[int(s)]) for s in slots],
                "covisibility": cov,
            })
        return views[0], views[1]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`load_state_dict` needs to continue exactly here."""
        return {"slot_sample": self.slot_sample.tolist(), "next_sample": self.next_sample,
                "cursor": self.cursor, "batches": self.batches, "gen": self.gen.get_state(),
                "gen_dev": self.gen_dev.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a pool saved by :meth:`state_dict` (re-renders the scenes it held)."""
        slots = list(range(self.pool.n_scenes))
        samples = [int(k) for k in state["slot_sample"]]
        if len(samples) != len(slots):
            raise PointmapError(f"pool state holds {len(samples)} scenes, this pool {len(slots)}")
        self._fill(slots, samples)
        self.next_sample = int(state["next_sample"])
        self.cursor = int(state["cursor"])
        self.batches = int(state["batches"])
        self.gen.set_state(state["gen"])
        self.gen_dev.set_state(state["gen_dev"])
