"""Multi-view reconstruction: accuracy / completeness / Chamfer of the aligned point cloud after a
similarity alignment to the GT points; baseline: unit-depth planes with identity poses."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from collections.abc import Sequence

from ...align import AlignConfig
from ...api import reconstruct_images
from ...arrays import as_float64, to_numpy
from ...errors import DatasetError
from .. import metrics as M
from ..cli_support import package_results, read_scene, select_indices, try_plot
from ..report import plot_trajectories
from .common import TaskOptions, gt_points_at_network, network_inputs, require_poses, timed

__all__ = ["eval_reconstruction", "reconstruction_scores", "trivial_planes"]


def trivial_planes(shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Trivial reconstruction: each image a fronto-parallel plane at depth 1, identity pose,
    focal = image width, principal point ``(W/2, H/2)``; ``(H, W, 3)`` per image."""
    out = []
    for H, W in shapes:
        v, u = np.mgrid[0:H, 0:W].astype(np.float64)
        out.append(np.stack([(u - W / 2) / W, (v - H / 2) / W, np.ones_like(u)], -1))
    return out


def reconstruction_scores(
    pred_pts: Sequence[np.ndarray | torch.Tensor],
    pred_masks: Sequence[np.ndarray | torch.Tensor],
    gt_pts: Sequence[np.ndarray],
    threshold: float | None = None,
    max_points: int | None = 200_000,
    trim: float = 0.8,
) -> tuple[dict[str, float], M.Similarity]:
    """Accuracy / completeness / Chamfer of predicted pointmaps after a similarity alignment.

    The similarity (Umeyama) is fitted on the pixel correspondences predicted point <-> GT point of
    masked pixels with GT, then refitted on the ``trim`` fraction with the smallest residuals.
    The predicted cloud is every masked point; the GT cloud every GT point of the same pixels
    (same field of view as the prediction).

    Args:
        pred_pts: per image ``(H, W, 3)`` predicted world points (any frame and scale).
        pred_masks: per image ``(H, W)`` bool, the points to score.
        gt_pts: per image ``(H, W, 3)`` GT world points, NaN where unknown (GT units).
        threshold: distance (GT units) for precision / recall / F-score.

    Returns:
        ``(metrics, similarity)``; metrics as :func:`metrics.reconstruction_metrics` plus
        ``n_correspondences``. No correspondence gives NaN metrics and the identity.
    """
    P = [as_float64(p).reshape(-1, 3) for p in pred_pts]
    Mk = [to_numpy(m, bool).reshape(-1) for m in pred_masks]
    G = [np.asarray(g, dtype=np.float64).reshape(-1, 3) for g in gt_pts]
    src = np.concatenate([p[m & np.isfinite(g).all(-1) & np.isfinite(p).all(-1)] for p, m, g in zip(P, Mk, G)])
    dst = np.concatenate([g[m & np.isfinite(g).all(-1) & np.isfinite(p).all(-1)] for p, m, g in zip(P, Mk, G)])
    pred_cloud = np.concatenate([p[m] for p, m in zip(P, Mk)])
    gt_cloud = np.concatenate([g[np.isfinite(g).all(-1)] for g in G])
    if len(src) < 3:
        out = M.reconstruction_metrics(np.zeros((0, 3)), gt_cloud, threshold=threshold, max_points=max_points)
        out["n_correspondences"] = len(src)
        return out, M.Similarity.identity()
    sim = M.similarity_align_points(src, dst)
    if 0 < trim < 1 and len(src) >= 10:
        res = np.linalg.norm(sim.apply_points(src) - dst, axis=-1)
        keep = res <= np.quantile(res, trim)
        sim = M.similarity_align_points(src[keep], dst[keep])
    out = M.reconstruction_metrics(pred_cloud, gt_cloud, align=sim, threshold=threshold, max_points=max_points)
    out["n_correspondences"] = len(src)
    return out, sim


def eval_reconstruction(
    dataset_path: str | os.PathLike | None,
    out_dir: str | os.PathLike | None = None,
    options: TaskOptions | None = None,
    *,
    max_views: int | None = 10,
    stride: int = 1,
    start: int = 0,
    graph: str = "complete",
    threshold: float = 0.05,
    align: AlignConfig | None = None,
    max_points: int | None = 50_000,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Multi-view reconstruction accuracy / completeness / Chamfer (GT units, metres) on a scene
    with GT depth and poses, after a similarity alignment fitted on predicted-to-GT point
    correspondences (:func:`reconstruction_scores`). Views as in :func:`eval_multiview_pose`;
    the predicted cloud is the confident points (``conf > conf_threshold``) of the aligned scene.
    ``threshold`` sets precision / recall / F-score. Baseline: :func:`trivial_planes`, aligned the
    same way.
    """
    o = options or TaskOptions()
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, o.layout)
    require_poses(sd, "the reconstruction task")
    idx = [i for i in select_indices(len(sd), None, stride, start) if sd.frames[i].has_depth][: max_views or None]
    if len(idx) < 2:
        raise DatasetError(f"the reconstruction task needs at least 2 frames with GT depth and pose; "
                           f"{len(idx)} selected from {sd.root}")
    frames = [sd.frames[i] for i in idx]
    net, conf_threshold, images = network_inputs(o, frames)
    rec = reconstruct_images(images, net, graph=graph, device=o.device,
                             align=align or AlignConfig(conf_threshold=conf_threshold))
    scene = rec.scene
    gt_pts = [gt_points_at_network(f, im.meta) for f, im in zip(frames, images)]
    t_score = time.perf_counter()
    ours, sim = reconstruction_scores(scene.pts3d, scene.masks, gt_pts, threshold, max_points)
    planes = trivial_planes([tuple(g.shape[:2]) for g in gt_pts])
    base, _ = reconstruction_scores(planes, [np.ones(p.shape[:2], bool) for p in planes], gt_pts, threshold, max_points)
    per_item = []
    pts, masks = scene.pts3d, [to_numpy(m, bool) for m in scene.masks]
    for k, f in enumerate(frames):
        one = M.reconstruction_metrics(as_float64(pts[k])[masks[k]], gt_pts[k].reshape(-1, 3), align=sim,
                                       max_points=min(max_points or 20_000, 20_000))
        per_item.append({"frame": f.name, **{k2: one[k2] for k2 in ("accuracy", "completeness", "overall", "n_pred")},
                         "confident_fraction": float(to_numpy(scene.masks[k], bool).mean())})
    info = {"views": [f.name for f in frames], "graph": graph, "threshold": threshold, "units": sd.extras.get("units"),
            "alignment": "similarity on predicted-to-GT pixel correspondences (trimmed Umeyama)",
            "similarity_scale": sim.s, "max_points": max_points,
            "timings_s": {**{k: round(v, 3) for k, v in rec.timings.items()}, "scoring": timed(t_score),
                          "total": timed(t0)}}
    figs: dict[str, Any] = {}
    if o.plots:
        gt_c2w = np.stack([f.cam2world for f in frames])
        try_plot(lambda: plot_trajectories(as_float64(scene.poses), gt_c2w, align=sim), figs, "trajectory")
    return package_results("reconstruction", sd.name, ours, {}, {"unit-depth planes (trivial)": base},
                           info, per_item, out_dir, figs)
