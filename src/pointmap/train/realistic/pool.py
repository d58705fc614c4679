"""The synthetic view pool filled by the realistic engine, optionally mixed with the procedural one.

:class:`RealisticViewPool` is a :class:`~pointmap.train.synthetic.pool.SyntheticViewPool` (same
slots, co-visible pair tables, refresh schedule, sampling, state) whose scenes are composed from an
asset bank and rasterised; a fraction ``procedural_fraction`` of the pool samples (chosen by a hash
of the sample index, so the choice is deterministic and resumable) is rendered by the procedural
engine instead, so one pool mixes both engines.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from ..synthetic.dataset import _bank, scene_id
from ..synthetic.pool import PoolConfig, SyntheticViewPool
from ..synthetic.render import RenderOutput
from .capture import RealisticConfig, open_bank, plan_capture, render_plans

__all__ = ["RealisticViewPool"]


def _uniform(seed: int, k: int) -> float:
    h = hashlib.blake2b(f"pointmap-engine-mix:{seed}:{k}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


class RealisticViewPool(SyntheticViewPool):
    """A view pool of realistic scenes (see the module docstring).

    Args:
        config: the realistic engine's settings (its procedural-texture fields serve the
            procedural share of the pool).
        procedural_fraction: share of pool samples rendered by the procedural engine, in [0, 1].
        Others: as :class:`~pointmap.train.synthetic.pool.SyntheticViewPool`.
    """

    def __init__(self, config: RealisticConfig, pool: PoolConfig | None = None,
                 device: torch.device | str = "cpu", rank: int = 0, world: int = 1, seed: int = 0,
                 progress: bool = False, fill: bool = True, procedural_fraction: float = 0.0) -> None:
        self.procedural_fraction = float(procedural_fraction)
        self.asset_bank = open_bank(config)
        super().__init__(config, pool, device, rank, world, seed, progress, fill)

    def _texture_bank(self) -> Any:
        return _bank(self.config, self.device) if self.procedural_fraction > 0 else None

    def is_procedural(self, k: int) -> bool:
        """Whether pool sample ``k`` is rendered by the procedural engine."""
        return _uniform(self.config.seed, self._engine_index(k)) < self.procedural_fraction

    def _render_scenes(self, samples: list[int]) -> tuple[list[Any], RenderOutput, torch.Tensor, torch.Tensor]:
        proc = [k for k in samples if self.is_procedural(k)]
        real = [k for k in samples if not self.is_procedural(k)]
        parts = []
        if proc:
            parts.append((proc, *super()._render_scenes(proc)))
        if real:
            cfg = self.config
            plans = [plan_capture(cfg, self.asset_bank, scene_id(cfg, self._engine_index(k)), 0) for k in real]  # type: ignore[arg-type]
            out, poses, K = render_plans(cfg, self.asset_bank, plans, self.width, self.height, self.device)  # type: ignore[arg-type]
            parts.append((real, plans, out, poses, K))
        if len(parts) == 1:
            return parts[0][1:]
        # back to the order of ``samples`` (views are grouped by scene, n_views each)
        order = {k: i for i, k in enumerate([k for p in parts for k in p[0]])}
        V = self.n_views
        view_idx = torch.tensor([order[k] * V + v for k in samples for v in range(V)], device=self.device)
        plans = [p for part in parts for p in part[1]]
        plans = [plans[order[k]] for k in samples]

        def cat(name: str) -> torch.Tensor:
            return torch.cat([getattr(p[2], name) for p in parts])[view_idx]

        out = RenderOutput(cat("rgb"), cat("depth"), cat("pts3d"), cat("valid"))
        poses = torch.cat([p[3] for p in parts])[view_idx]
        K = torch.cat([p[4] for p in parts])[view_idx]
        return plans, out, poses, K
