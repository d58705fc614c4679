"""Monocular depth: the image fed as both views, AbsRel and delta<1.25 after per-image median
scaling; baseline constant depth."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from collections.abc import Sequence

from ...arrays import as_float64
from ...errors import DatasetError
from ...inference import infer_pairs, resolve_device
from .. import metrics as M
from ..cli_support import gt_depth_at_network, package_results, read_scene, select_indices, try_plot
from ..report import plot_depth_error
from .common import TaskOptions, network_inputs, timed

__all__ = ["eval_depth"]


def _mean_depth(items: Sequence[M.DepthMetrics]) -> dict[str, float]:
    a = np.array([d.abs_rel for d in items], dtype=np.float64)
    d1 = np.array([d.delta1 for d in items], dtype=np.float64)
    ok = np.isfinite(a)
    return {"abs_rel": float(a[ok].mean()) if ok.any() else float("nan"),
            "delta1": float(d1[ok].mean()) if ok.any() else float("nan"),
            "n_images": int(ok.sum())}


def eval_depth(
    dataset_path: str | os.PathLike | None,
    out_dir: str | os.PathLike | None = None,
    options: TaskOptions | None = None,
    *,
    max_images: int | None = 10,
    stride: int = 1,
    start: int = 0,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Monocular depth: each image is fed as both views (pair ``(k, k)``) and the z of its
    ``pts3d_1`` is its depth. Per image, AbsRel and delta<1.25 after median scaling against the GT
    sampled at the network pixels (nearest original pixel); scores are means over images.
    Baseline: a constant depth map (after median scaling: the GT median).

    Only frames with a depth map are used (``start``, ``stride``, ``max_images`` select among them).
    """
    o = options or TaskOptions()
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, o.layout)
    with_depth = [f for f in sd.frames if f.has_depth]
    if not with_depth:
        raise DatasetError(f"the depth task needs GT depth maps, but no frame of {sd.root} has one")
    frames = [with_depth[i] for i in select_indices(len(with_depth), max_images, stride, start)]
    net, _, images = network_inputs(o, frames)
    t1 = time.perf_counter()
    preds = infer_pairs(net, images, [(k, k) for k in range(len(images))], device=resolve_device(o.device))
    t_inf = timed(t1)
    ours, const, per_item, maps = [], [], [], []
    for k, (f, im) in enumerate(zip(frames, images)):
        gt = gt_depth_at_network(f.load_depth(), im.meta)
        pred = as_float64(preds.pts3d_1[k][..., 2])
        dm = M.depth_metrics(pred, gt, max_depth=max_depth, min_depth=min_depth)
        dc = M.depth_metrics(M.constant_depth(gt.shape), gt, max_depth=max_depth, min_depth=min_depth)
        ours.append(dm)
        const.append(dc)
        maps.append((pred, gt, im))
        per_item.append({"frame": f.name, **dm.to_dict(), "abs_rel_constant": dc.abs_rel, "delta1_constant": dc.delta1})
    info = {"frames": [f.name for f in frames], "min_depth": min_depth, "max_depth": max_depth,
            "timings_s": {"inference": t_inf, "total": timed(t0)}}
    figs: dict[str, Any] = {}
    if o.plots and maps:
        pred, gt, im = maps[0]
        try_plot(lambda: plot_depth_error(pred, gt, image=im.rgb.numpy(), max_depth=max_depth), figs, "depth_example")
    return package_results("depth", sd.name, _mean_depth(ours), {}, {"constant depth (trivial)": _mean_depth(const)},
                           info, per_item, out_dir, figs)
