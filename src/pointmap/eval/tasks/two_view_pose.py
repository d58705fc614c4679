"""Two-view relative pose of frame pairs, AUC@5/10/20 of ``max(rot, trans)`` error (SuperGlue
protocol); poses from the two-view scene (:func:`pointmap.align.pair_scene`) and, as a variant,
from :func:`pointmap.align.poses.pair_relative_pose`; baseline identity."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ...align.poses import two_view_estimates
from ...errors import PointmapError
from ...inference import infer_pairs, resolve_device
from .. import metrics as M
from ..cli_support import package_results, read_scene, select_indices, try_plot
from ..report import plot_error_distribution
from .common import TaskOptions, network_inputs, require_poses, timed

__all__ = ["eval_two_view_pose"]


def _auc_summary(err: np.ndarray, rot: np.ndarray, trans: np.ndarray) -> dict[str, float]:
    out = M.pose_auc(err, (5.0, 10.0, 20.0))
    out["median_err_deg"] = float(np.median(err)) if err.size else float("nan")
    out["median_rot_err_deg"] = float(np.median(rot)) if rot.size else float("nan")
    out["median_trans_err_deg"] = float(np.median(trans)) if trans.size else float("nan")
    out["n_pairs"] = int(err.size)
    return out


def eval_two_view_pose(
    dataset_path: str | os.PathLike | None,
    out_dir: str | os.PathLike | None = None,
    options: TaskOptions | None = None,
    *,
    max_pairs: int | None = 10,
    gap: int = 1,
    stride: int = 1,
    start: int = 0,
    pnp_iterations: int = 100,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Two-view relative pose AUC@5/10/20 (degrees, ``max(rotation, translation direction)``).

    Pairs: the dataset's own pair list when it has one (two-view layouts), else frames
    ``(i, i + gap)`` for ``i = start, start + stride, ...`` (at most ``max_pairs``). Failed
    estimates count as infinite error. Baseline: the identity pose (error = max(GT angle, 90)).
    ``identity_fallbacks`` counts pairs where :func:`pair_scene` returned the identity (its PnP
    failed, e.g. with no pixel above ``conf_threshold``).

    Returns:
        ``(results, per_item)``; per item: one pair with its errors in degrees.
    """
    o = options or TaskOptions()
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, o.layout)
    if sd.pairs:
        recs = sd.pairs[: max_pairs or len(sd.pairs)]
        pairs = [(p.i, p.j) for p in recs]
        gts = [np.asarray(p.T_0to1, dtype=np.float64) for p in recs]
    else:
        require_poses(sd, "the two-view pose task")
        if gap < 1 or len(sd) <= gap:
            raise PointmapError(f"gap={gap} leaves no frame pair among the {len(sd)} frames of {sd.root}")
        pairs = [(i, i + gap) for i in select_indices(len(sd) - gap, max_pairs, stride, start)]
        gts = [np.linalg.inv(sd.frames[j].cam2world) @ sd.frames[i].cam2world for i, j in pairs]
    used = sorted({k for p in pairs for k in p})
    pos = {k: n for n, k in enumerate(used)}
    net, conf_threshold, images = network_inputs(o, [sd.frames[k] for k in used])
    ordered = [(pos[i], pos[j]) for i, j in pairs]
    t1 = time.perf_counter()
    preds = infer_pairs(net, images, ordered + [(b, a) for a, b in ordered], device=resolve_device(o.device))
    t_inf = timed(t1)

    err: dict[str, list[tuple[float, float, float]]] = {"pair_scene": [], "relative_pose": [], "identity": []}
    per_item = []
    for (i, j), (a, b), T_gt in zip(pairs, ordered, gts):
        est = two_view_estimates(preds.subset([a, b]), conf_threshold, pnp_iterations)
        item: dict[str, Any] = {"frame_i": sd.frames[i].name, "frame_j": sd.frames[j].name,
                                "gt_rot_deg": float(M.rotation_error_deg(T_gt[:3, :3], np.eye(3))),
                                "pair_scene_identity": bool(np.array_equal(est["pair_scene"], np.eye(4)))}
        est["identity"] = np.eye(4)
        for name, T in est.items():
            e = tuple(float(x) for x in M.two_view_pose_errors(T, T_gt))
            err[name].append(e)
            item[f"err_{name}_deg"], item[f"rot_err_{name}_deg"], item[f"trans_err_{name}_deg"] = e
        per_item.append(item)
    summ = {k: _auc_summary(*(np.array(c, dtype=np.float64).reshape(-1, 3).T)) for k, c in err.items()}
    summ["pair_scene"]["identity_fallbacks"] = int(sum(it["pair_scene_identity"] for it in per_item))
    info = {"pairs": [[sd.frames[i].name, sd.frames[j].name] for i, j in pairs], "gap": gap,
            "timings_s": {"inference": t_inf, "total": timed(t0)}}
    figs: dict[str, Any] = {}
    if o.plots:
        try_plot(lambda: plot_error_distribution(
            {k: np.array(v).reshape(-1, 3)[:, 0] for k, v in err.items()}, "max(rot, trans) error (deg)",
            thresholds=(5.0, 10.0, 20.0), max_value=90.0), figs, "pose_errors")
    return package_results("two_view_pose", sd.name, summ["pair_scene"], {"relative_pose (PnP)": summ["relative_pose"]},
                           {"identity (trivial)": summ["identity"]}, info, per_item, out_dir, figs)
