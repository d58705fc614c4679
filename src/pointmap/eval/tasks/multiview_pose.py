"""Multi-view relative pose accuracy (CO3Dv2 / RealEstate10K protocol): RRA / RTA / mAA(30) over
all view pairs, poses from global alignment and, as a variant, from PnP of each view against a
reference view's pointmap; baseline identity poses."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ...align import AlignConfig
from ...align.poses import reference_pnp_poses
from ...api import reconstruct_images
from ...arrays import as_float64
from ...errors import PointmapError
from .. import metrics as M
from ..cli_support import package_results, read_scene, select_indices, try_plot
from ..report import plot_error_distribution, plot_trajectories
from .common import TaskOptions, network_inputs, require_poses, timed

__all__ = ["eval_multiview_pose"]


def eval_multiview_pose(
    dataset_path: str | os.PathLike | None,
    out_dir: str | os.PathLike | None = None,
    options: TaskOptions | None = None,
    *,
    max_views: int | None = 8,
    stride: int = 1,
    start: int = 0,
    graph: str = "complete",
    reference: int = 0,
    pnp_iterations: int = 100,
    align: AlignConfig | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Multi-view relative pose accuracy (CO3Dv2 / RealEstate10K protocol) on one posed scene.

    Views ``start, start + stride, ...`` (at most ``max_views``) go through pair inference
    (``graph``) and :func:`pointmap.align.global_align` (ours); the variant poses every view by
    PnP against view ``reference``'s pointmaps. Scores over all ``N (N - 1) / 2`` view pairs:
    ``RRA@5/15/30``, ``RTA@5/15/30`` (fractions), ``mAA@30`` and mean errors in degrees, plus the
    median relative focal error against the GT focal mapped to the network image.

    Returns:
        ``(results, per_item)``; per item: one view pair with its rotation / translation errors
        (degrees) for ours and the PnP variant.
    """
    o = options or TaskOptions()
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, o.layout)
    require_poses(sd, "the multi-view pose task")
    idx = select_indices(len(sd), max_views, stride, start)
    if len(idx) < 2:
        raise PointmapError(f"the multi-view pose task needs at least 2 views; {len(idx)} selected from {sd.root}")
    if not 0 <= reference < len(idx):
        raise PointmapError(f"reference view {reference} is outside the {len(idx)} selected views")
    frames = [sd.frames[i] for i in idx]
    net, conf_threshold, images = network_inputs(o, frames)
    rec = reconstruct_images(images, net, graph=graph, device=o.device,
                             align=align or AlignConfig(conf_threshold=conf_threshold))
    est = as_float64(rec.scene.poses)
    pnp, pnp_ok = reference_pnp_poses(rec.predictions, reference, conf_threshold, pnp_iterations)
    gt = np.stack([f.cam2world for f in frames])
    ident = M.identity_poses(len(frames))

    ours = M.multiview_pose_metrics(est, gt)
    f_gt = np.array([0.5 * (K[0, 0] + K[1, 1]) for K in (im.meta.intrinsics_to_network(f.K) for f, im in zip(frames, images))])
    f_est = as_float64(rec.scene.focals)
    ours["focal_rel_err_median"] = float(np.median(np.abs(f_est / f_gt - 1)))
    variants = {f"PnP to view {reference}": M.multiview_pose_metrics(pnp, gt)}
    variants[f"PnP to view {reference}"]["pnp_failures"] = int(len(frames) - sum(pnp_ok))
    baselines = {"identity (trivial)": M.multiview_pose_metrics(ident, gt)}

    r, t, pairs = M.relative_pose_errors(est, gt)
    rp, tp, _ = M.relative_pose_errors(pnp, gt)
    names = [f.name for f in frames]
    per_item = [{"view_i": names[i], "view_j": names[j], "rot_err_deg": r[k], "trans_err_deg": t[k],
                 "rot_err_pnp_deg": rp[k], "trans_err_pnp_deg": tp[k]} for k, (i, j) in enumerate(pairs)]
    info = {"views": names, "n_views": len(frames), "graph": graph, "n_pairs_inferred": len(rec.pairs),
            "placed": [bool(p) for p in rec.scene.placed], "focal_est_px": f_est, "focal_gt_px": f_gt,
            "timings_s": {**{k: round(v, 3) for k, v in rec.timings.items()}, "total": timed(t0)}}
    figs: dict[str, Any] = {}
    if o.plots:
        try_plot(lambda: plot_error_distribution(
            {"ours rot": r, "ours trans": t, "PnP rot": rp, "PnP trans": tp}, "relative error (deg)",
            thresholds=(15.0, 30.0), max_value=180.0), figs, "pair_errors")
        try_plot(lambda: plot_trajectories(est, gt, labels=names), figs, "trajectory")
    return package_results("multiview_pose", sd.name, ours, variants, baselines, info, per_item, out_dir, figs)
