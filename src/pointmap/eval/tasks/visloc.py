"""Visual localization of query frames against posed RGB-D database frames (oracle retrieval by
GT pose); baseline: the retrieved database frame's pose."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ...align.poses import QueryView, nearest_database_frame, place_query
from ...errors import DatasetError
from ...inference import infer_pairs, resolve_device
from .. import metrics as M
from ..cli_support import package_results, read_scene
from .common import TaskOptions, gt_points_at_network, network_inputs, require_poses, timed

__all__ = ["eval_visloc"]


def eval_visloc(
    dataset_path: str | os.PathLike | None,
    out_dir: str | os.PathLike | None = None,
    options: TaskOptions | None = None,
    *,
    n_queries: int = 5,
    max_angle_deg: float = 45.0,
    pnp_iterations: int = 1000,
    reproj_error: float = 5.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Visual localization of ``n_queries`` evenly spaced frames against the other frames (the
    database: GT poses and depth), with **oracle retrieval**: each query is paired with the
    database frame nearest by GT pose (:func:`nearest_database_frame`). See
    :func:`pointmap.align.poses.place_query` for the pose solver (the one of ``pointmap localize``).
    Metrics: median translation (cm) and rotation (degrees) errors and accuracies at the (m, deg) thresholds of :mod:`metrics` (5 cm / 5 deg is
    the 7-Scenes one). Baseline: the retrieved database frame's GT pose as the answer.
    """
    o = options or TaskOptions()
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, o.layout)
    require_poses(sd, "the localization task")
    frames = [f for f in sd.frames if f.has_depth]
    if len(frames) < 2 or n_queries < 1:
        raise DatasetError(f"localization needs at least 2 frames with depth and 1 query; {sd.root} has "
                           f"{len(frames)} with depth, n_queries={n_queries}")
    n_queries = min(n_queries, len(frames) - 1)
    q_idx = sorted({int(round(x)) for x in np.linspace(0, len(frames) - 1, n_queries + 2)[1:-1]})
    db_idx = [k for k in range(len(frames)) if k not in q_idx]
    db_poses = np.stack([frames[k].cam2world for k in db_idx])
    retrieved = [db_idx[nearest_database_frame(frames[q].cam2world, db_poses, max_angle_deg)] for q in q_idx]
    order = [k for q, r in zip(q_idx, retrieved) for k in (q, r)]
    net, conf_threshold, images = network_inputs(o, [frames[k] for k in order])
    t1 = time.perf_counter()
    preds = infer_pairs(net, images, [(2 * n, 2 * n + 1) for n in range(len(q_idx))], device=resolve_device(o.device))
    t_inf = timed(t1)
    est, per_item = [], []
    for n, (q, r) in enumerate(zip(q_idx, retrieved)):
        fq, fr = frames[q], frames[r]
        mq, mr = images[2 * n].meta, images[2 * n + 1].meta
        view = QueryView(preds.pts3d_1[n], preds.conf_1[n], preds.pts3d_2_in_1[n], preds.conf_2[n],
                         gt_points_at_network(fr, mr))
        placement = place_query([view], mq.intrinsics_to_network(fq.K), conf_threshold, pnp_iterations, reproj_error)
        T, stats = placement.cam2world, placement.stats()
        est.append(T)
        t_err, r_err = M.localization_errors(T[None], fq.cam2world[None])
        tb, rb = M.localization_errors(fr.cam2world[None], fq.cam2world[None])
        per_item.append({"query": fq.name, "database": fr.name, **stats, "t_err_cm": t_err[0] * 100,
                         "r_err_deg": r_err[0], "t_err_retrieved_cm": tb[0] * 100, "r_err_retrieved_deg": rb[0]})
    gt = np.stack([frames[q].cam2world for q in q_idx])
    ours = M.localization_metrics(np.stack(est), gt)
    base = M.localization_metrics(np.stack([frames[r].cam2world for r in retrieved]), gt)
    info = {"retrieval": "oracle: nearest database frame by GT pose", "queries": [frames[q].name for q in q_idx],
            "n_database": len(db_idx), "timings_s": {"inference": t_inf, "total": timed(t0)}}
    return package_results("visloc", sd.name, ours, {}, {"retrieved database pose": base}, info, per_item, out_dir)
