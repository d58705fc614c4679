"""Pieces every evaluation task shares: the options, network inputs at the network's size, GT
points at the network pixels."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import DatasetError
from ...geometry import depth_to_world
from ...images import ImageMeta
from ..cli_support import ModelArg, gt_depth_at_network, load_frames, network_size, resolve_model
from ..readers import Frame, SceneData

__all__ = ["TaskOptions", "gt_points_at_network", "network_inputs", "require_poses", "timed"]


@dataclass
class TaskOptions:
    """Options shared by every dataset task (:data:`pointmap.eval.tasks.TASKS`).

    Attributes:
        model: a loaded network, a checkpoint path / hub id, or ``"default"`` (bundled model).
        layout: dataset layout to force (default: detected).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        size: preprocessing size (default: the model's native size).
        conf_threshold: raw-confidence threshold (default: the model's recommendation); the depth
            task does not threshold.
        plots: draw the report's figures (needs matplotlib).
    """

    model: ModelArg = "default"
    layout: str | None = None
    device: str | torch.device | None = None
    size: int | None = None
    conf_threshold: float | None = None
    plots: bool = True


def require_poses(sd: SceneData, what: str) -> None:
    """Raise :class:`DatasetError` when a frame of ``sd`` has no GT pose."""
    if not sd.has_poses:
        raise DatasetError(f"{what} needs GT camera poses, but scene {sd.name} ({sd.root}, layout "
                           f"{sd.layout}) has frames without one")


def gt_points_at_network(frame: Frame, meta: ImageMeta) -> np.ndarray:
    """GT world points ``(H, W, 3)`` of the network pixels of ``frame`` (NaN without GT depth).

    The GT depth is sampled at the original pixel nearest to each network pixel and lifted with
    the GT intrinsics mapped to the network image and the GT camera-to-world pose.
    """
    if frame.cam2world is None:
        raise DatasetError(f"frame {frame.name} ({frame.image_path}) has no GT pose")
    depth = gt_depth_at_network(frame.load_depth(), meta)
    K = meta.intrinsics_to_network(frame.K)
    pts = depth_to_world(torch.from_numpy(depth.astype(np.float64)), torch.from_numpy(K),
                         torch.from_numpy(frame.cam2world)).numpy()
    pts[depth <= 0] = np.nan
    return pts


def network_inputs(o: TaskOptions, frames: Sequence[Frame]) -> tuple[Any, float, list[Any]]:
    """The network, the confidence threshold (the model's recommendation when not set) and
    ``frames`` loaded at the network's input size."""
    net = resolve_model(o.model, o.device)
    conf_threshold = net.recommended_conf_threshold if o.conf_threshold is None else o.conf_threshold
    return net, conf_threshold, load_frames(frames, network_size(net, o.size), net.config.patch_size)


def timed(t0: float) -> float:
    """Seconds since ``t0`` (``time.perf_counter``), rounded to milliseconds."""
    return round(time.perf_counter() - t0, 3)
