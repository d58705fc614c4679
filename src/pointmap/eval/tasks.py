"""Evaluation tasks: a model on a dataset scene, scored against ground truth and trivial baselines.

Every task reads a scene (:func:`pointmap.eval.read_dataset`), runs the network (and global
alignment where the task needs it), scores the result with :mod:`pointmap.eval.metrics` and
returns ``(results, per_item)`` (see :func:`pointmap.eval.cli_support.package_results`); with
``out_dir`` it also writes ``results.json``, ``summary.md`` and plots there.

Tasks (``run_eval`` names):

* ``multiview_pose``: RRA / RTA / mAA(30) over all view pairs, poses from global alignment and,
  as a variant, from PnP of each view against a reference view's pointmap; baseline identity poses.
* ``two_view_pose``: relative pose of frame pairs, AUC@5/10/20 of ``max(rot, trans)`` error
  (SuperGlue protocol); poses from the two-view scene (:func:`pointmap.align.pair_scene`) and, as
  a variant, from :func:`pointmap.geometry.relative_pose`; baseline identity.
* ``depth``: monocular depth (the image fed as both views), AbsRel and delta<1.25 after per-image
  median scaling; baseline constant depth.
* ``visloc``: visual localization of query frames against posed RGB-D database frames (oracle
  retrieval by GT pose); baseline: the retrieved database frame's pose.
* ``reconstruction``: accuracy / completeness / Chamfer of the aligned point cloud after a
  similarity alignment to the GT points; baseline: unit-depth planes with identity poses.
* ``synthetic``: held-out synthetic pairs (:mod:`pointmap.eval.synthetic_eval`).

Ground truth is compared at the network resolution: GT depth is sampled at the original pixel
nearest to each network pixel (:func:`gt_depth_at_network`) and GT intrinsics are mapped through
the resize and crop (:func:`intrinsics_to_network`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..align import AlignConfig, pair_scene
from ..api import reconstruct_images
from ..errors import DatasetError, PointmapError
from ..geometry import pnp_ransac_points, reciprocal_matches, relative_pose
from ..images import ImageMeta
from ..inference import infer_pairs, resolve_device
from ..predictions import PairPredictions
from ..scene import depth_to_world
from . import metrics as M
from .cli_support import (
    ModelArg,
    check_options,
    gt_depth_at_network,
    intrinsics_to_network,
    load_frames,
    network_size,
    package_results,
    read_scene,
    resolve_model,
    select_indices,
    try_plot,
)
from .readers import Frame, SceneData
from .report import plot_depth_error, plot_error_distribution, plot_trajectories
from .synthetic_eval import eval_synthetic

__all__ = [
    "TASKS",
    "eval_depth",
    "eval_multiview_pose",
    "eval_reconstruction",
    "eval_two_view_pose",
    "eval_visloc",
    "gt_points_at_network",
    "localize_query",
    "nearest_database_frame",
    "pair_predictions",
    "reconstruction_scores",
    "reference_pnp_poses",
    "run_eval",
    "trivial_planes",
    "two_view_estimates",
]

_NAN_POSE = np.full((4, 4), np.nan)


# ------------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------------


def _posed(sd: SceneData, what: str) -> None:
    if not sd.has_poses:
        raise DatasetError(f"{what} needs GT camera poses, but scene {sd.name} ({sd.root}, layout "
                           f"{sd.layout}) has frames without one")


def _f64(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return M.as_numpy(x)


def pair_predictions(preds: PairPredictions, a: int, b: int) -> PairPredictions:
    """The two ordered pairs ``(a, b)``, ``(b, a)`` of ``preds`` re-indexed as images 0 and 1."""
    ks = [preds.index(a, b), preds.index(b, a)]
    pick = lambda name: [getattr(preds, name)[k] for k in ks]
    return PairPredictions([(0, 1), (1, 0)], pick("pts3d_1"), pick("conf_1"), pick("pts3d_2_in_1"),
                           pick("conf_2"), n_images=2)


def gt_points_at_network(frame: Frame, meta: ImageMeta) -> np.ndarray:
    """GT world points ``(H, W, 3)`` of the network pixels of ``frame`` (NaN without GT depth).

    The GT depth is sampled at the original pixel nearest to each network pixel and lifted with
    the GT intrinsics mapped to the network image and the GT camera-to-world pose.
    """
    if frame.cam2world is None:
        raise DatasetError(f"frame {frame.name} ({frame.image_path}) has no GT pose")
    depth = gt_depth_at_network(frame.load_depth(), meta)
    K = intrinsics_to_network(frame.K, meta)
    pts = depth_to_world(torch.from_numpy(depth.astype(np.float64)), torch.from_numpy(K),
                         torch.from_numpy(frame.cam2world)).numpy()
    pts[depth <= 0] = np.nan
    return pts


def _network_inputs(model: ModelArg, device: str | torch.device | None, frames: Sequence[Frame],
                    size: int | None, conf_threshold: float | None) -> tuple[Any, float, list[Any]]:
    """The network, the confidence threshold (the model's recommendation when ``None``) and
    ``frames`` loaded at the network's input size."""
    net = resolve_model(model, device)
    if conf_threshold is None:
        conf_threshold = net.recommended_conf_threshold
    return net, conf_threshold, load_frames(frames, network_size(net, size), net.config.patch_size)


def _timed(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


# ------------------------------------------------------------------------------------------------
# Multi-view pose
# ------------------------------------------------------------------------------------------------


def reference_pnp_poses(
    preds: PairPredictions, reference: int = 0, conf_threshold: float = 3.0, iterations: int = 100,
) -> tuple[np.ndarray, list[bool]]:
    """Camera-to-world poses ``(N, 4, 4)`` in the reference camera's frame, one PnP per view.

    View ``j``'s pose comes from PnP-RANSAC of its points as predicted in pair ``(reference, j)``
    (:func:`pointmap.geometry.relative_pose`, focal from pair ``(j, reference)``); the reference
    view has the identity. Each pair has its own arbitrary scale, so its translation is rescaled
    to make the reference view's own pointmap (``pts3d_1`` of the pair) have median depth 1 in
    every pair. Views whose pair is missing or whose PnP fails get the identity, flagged ``False``
    in the returned list.
    """
    n = preds.n_images
    poses = np.tile(np.eye(4), (n, 1, 1))
    ok = [True] * n
    for j in range(n):
        if j == reference:
            continue
        res = None
        if (reference, j) in preds.pairs:
            res = relative_pose(preds, reference, j, conf_threshold=conf_threshold, iterations=iterations)
        z = float(preds.pts3d_1[preds.index(reference, j)][..., 2].median()) if res is not None else 0.0
        if res is None or not np.isfinite(z) or z <= 0:
            ok[j] = False
        else:
            poses[j] = _f64(res[1])
            poses[j, :3, 3] /= z
    return poses, ok


def eval_multiview_pose(
    dataset_path: str | os.PathLike | None,
    out_dir: str | os.PathLike | None = None,
    *,
    model: ModelArg = "default",
    layout: str | None = None,
    device: str | torch.device | None = None,
    max_views: int | None = 8,
    stride: int = 1,
    start: int = 0,
    graph: str = "complete",
    reference: int = 0,
    conf_threshold: float | None = None,
    pnp_iterations: int = 100,
    size: int | None = None,
    align: AlignConfig | None = None,
    plots: bool = True,
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
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, layout)
    _posed(sd, "the multi-view pose task")
    idx = select_indices(len(sd), max_views, stride, start)
    if len(idx) < 2:
        raise PointmapError(f"the multi-view pose task needs at least 2 views; {len(idx)} selected from {sd.root}")
    if not 0 <= reference < len(idx):
        raise PointmapError(f"reference view {reference} is outside the {len(idx)} selected views")
    frames = [sd.frames[i] for i in idx]
    net, conf_threshold, images = _network_inputs(model, device, frames, size, conf_threshold)
    rec = reconstruct_images(images, net, graph=graph, device=device,
                             align=align or AlignConfig(conf_threshold=conf_threshold))
    est = _f64(rec.scene.poses)
    pnp, pnp_ok = reference_pnp_poses(rec.predictions, reference, conf_threshold, pnp_iterations)
    gt = np.stack([f.cam2world for f in frames])
    ident = M.identity_poses(len(frames))

    ours = M.multiview_pose_metrics(est, gt)
    f_gt = np.array([0.5 * (K[0, 0] + K[1, 1]) for K in (intrinsics_to_network(f.K, im.meta) for f, im in zip(frames, images))])
    f_est = _f64(rec.scene.focals)
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
            "timings_s": {**{k: round(v, 3) for k, v in rec.timings.items()}, "total": _timed(t0)}}
    figs: dict[str, Any] = {}
    if plots:
        try_plot(lambda: plot_error_distribution(
            {"ours rot": r, "ours trans": t, "PnP rot": rp, "PnP trans": tp}, "relative error (deg)",
            thresholds=(15.0, 30.0), max_value=180.0), figs, "pair_errors")
        try_plot(lambda: plot_trajectories(est, gt, labels=names), figs, "trajectory")
    return package_results("multiview_pose", sd.name, ours, variants, baselines, info, per_item, out_dir, figs)


# ------------------------------------------------------------------------------------------------
# Two-view relative pose
# ------------------------------------------------------------------------------------------------


def two_view_estimates(
    preds: PairPredictions, conf_threshold: float = 3.0, iterations: int = 100,
) -> dict[str, np.ndarray]:
    """Relative pose ``T_0to1`` ``(4, 4)`` (camera-0 to camera-1 coordinates) of a symmetrized
    two-image prediction, from :func:`pair_scene` (``"pair_scene"``) and from PnP of pair ``(0, 1)``
    (``"relative_pose"``); a failed PnP gives a NaN matrix."""
    scene = pair_scene(preds, conf_threshold=conf_threshold, pnp_iterations=iterations)
    P = _f64(scene.poses)
    out = {"pair_scene": np.linalg.inv(P[1]) @ P[0]}
    res = relative_pose(preds, 0, 1, conf_threshold=conf_threshold, iterations=iterations)
    out["relative_pose"] = _NAN_POSE.copy() if res is None else np.linalg.inv(_f64(res[1]))
    return out


def _pose_error(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[float, float, float]:
    """``(max error, rotation error, translation-direction error)`` in degrees; inf when NaN."""
    if not np.isfinite(T_est).all():
        return float("inf"), float("inf"), float("inf")
    r = float(M.rotation_error_deg(T_est[:3, :3], T_gt[:3, :3]))
    t = float(M.direction_error_deg(T_est[:3, 3], T_gt[:3, 3], sign_invariant=True))
    return max(r, t), r, t


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
    *,
    model: ModelArg = "default",
    layout: str | None = None,
    device: str | torch.device | None = None,
    max_pairs: int | None = 10,
    gap: int = 1,
    stride: int = 1,
    start: int = 0,
    conf_threshold: float | None = None,
    pnp_iterations: int = 100,
    size: int | None = None,
    plots: bool = True,
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
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, layout)
    if sd.pairs:
        recs = sd.pairs[: max_pairs or len(sd.pairs)]
        pairs = [(p.i, p.j) for p in recs]
        gts = [np.asarray(p.T_0to1, dtype=np.float64) for p in recs]
    else:
        _posed(sd, "the two-view pose task")
        if gap < 1 or len(sd) <= gap:
            raise PointmapError(f"gap={gap} leaves no frame pair among the {len(sd)} frames of {sd.root}")
        pairs = [(i, i + gap) for i in select_indices(len(sd) - gap, max_pairs, stride, start)]
        gts = [np.linalg.inv(sd.frames[j].cam2world) @ sd.frames[i].cam2world for i, j in pairs]
    used = sorted({k for p in pairs for k in p})
    pos = {k: n for n, k in enumerate(used)}
    net, conf_threshold, images = _network_inputs(model, device, [sd.frames[k] for k in used], size, conf_threshold)
    ordered = [(pos[i], pos[j]) for i, j in pairs]
    t1 = time.perf_counter()
    preds = infer_pairs(net, images, ordered + [(b, a) for a, b in ordered], device=resolve_device(device))
    t_inf = _timed(t1)

    err: dict[str, list[tuple[float, float, float]]] = {"pair_scene": [], "relative_pose": [], "identity": []}
    per_item = []
    for (i, j), (a, b), T_gt in zip(pairs, ordered, gts):
        est = two_view_estimates(pair_predictions(preds, a, b), conf_threshold, pnp_iterations)
        item: dict[str, Any] = {"frame_i": sd.frames[i].name, "frame_j": sd.frames[j].name,
                                "gt_rot_deg": float(M.rotation_error_deg(T_gt[:3, :3], np.eye(3))),
                                "pair_scene_identity": bool(np.array_equal(est["pair_scene"], np.eye(4)))}
        est["identity"] = np.eye(4)
        for name, T in est.items():
            e = _pose_error(T, T_gt)
            err[name].append(e)
            item[f"err_{name}_deg"], item[f"rot_err_{name}_deg"], item[f"trans_err_{name}_deg"] = e
        per_item.append(item)
    summ = {k: _auc_summary(*(np.array(c, dtype=np.float64).reshape(-1, 3).T)) for k, c in err.items()}
    summ["pair_scene"]["identity_fallbacks"] = int(sum(it["pair_scene_identity"] for it in per_item))
    info = {"pairs": [[sd.frames[i].name, sd.frames[j].name] for i, j in pairs], "gap": gap,
            "timings_s": {"inference": t_inf, "total": _timed(t0)}}
    figs: dict[str, Any] = {}
    if plots:
        try_plot(lambda: plot_error_distribution(
            {k: np.array(v).reshape(-1, 3)[:, 0] for k, v in err.items()}, "max(rot, trans) error (deg)",
            thresholds=(5.0, 10.0, 20.0), max_value=90.0), figs, "pose_errors")
    return package_results("two_view_pose", sd.name, summ["pair_scene"], {"relative_pose (PnP)": summ["relative_pose"]},
                           {"identity (trivial)": summ["identity"]}, info, per_item, out_dir, figs)


# ------------------------------------------------------------------------------------------------
# Monocular depth
# ------------------------------------------------------------------------------------------------


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
    *,
    model: ModelArg = "default",
    layout: str | None = None,
    device: str | torch.device | None = None,
    max_images: int | None = 10,
    stride: int = 1,
    start: int = 0,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    size: int | None = None,
    plots: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Monocular depth: each image is fed as both views (pair ``(k, k)``) and the z of its
    ``pts3d_1`` is its depth. Per image, AbsRel and delta<1.25 after median scaling against the GT
    sampled at the network pixels (nearest original pixel); scores are means over images.
    Baseline: a constant depth map (after median scaling: the GT median).

    Only frames with a depth map are used (``start``, ``stride``, ``max_images`` select among them).
    """
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, layout)
    with_depth = [f for f in sd.frames if f.has_depth]
    if not with_depth:
        raise DatasetError(f"the depth task needs GT depth maps, but no frame of {sd.root} has one")
    frames = [with_depth[i] for i in select_indices(len(with_depth), max_images, stride, start)]
    net, _, images = _network_inputs(model, device, frames, size, None)
    t1 = time.perf_counter()
    preds = infer_pairs(net, images, [(k, k) for k in range(len(images))], device=resolve_device(device))
    t_inf = _timed(t1)
    ours, const, per_item, maps = [], [], [], []
    for k, (f, im) in enumerate(zip(frames, images)):
        gt = gt_depth_at_network(f.load_depth(), im.meta)
        pred = _f64(preds.pts3d_1[k][..., 2])
        dm = M.depth_metrics(pred, gt, max_depth=max_depth, min_depth=min_depth)
        dc = M.depth_metrics(M.constant_depth(gt.shape), gt, max_depth=max_depth, min_depth=min_depth)
        ours.append(dm)
        const.append(dc)
        maps.append((pred, gt, im))
        per_item.append({"frame": f.name, **dm.to_dict(), "abs_rel_constant": dc.abs_rel, "delta1_constant": dc.delta1})
    info = {"frames": [f.name for f in frames], "min_depth": min_depth, "max_depth": max_depth,
            "timings_s": {"inference": t_inf, "total": _timed(t0)}}
    figs: dict[str, Any] = {}
    if plots and maps:
        pred, gt, im = maps[0]
        try_plot(lambda: plot_depth_error(pred, gt, image=im.rgb.numpy(), max_depth=max_depth), figs, "depth_example")
    return package_results("depth", sd.name, _mean_depth(ours), {}, {"constant depth (trivial)": _mean_depth(const)},
                           info, per_item, out_dir, figs)


# ------------------------------------------------------------------------------------------------
# Visual localization
# ------------------------------------------------------------------------------------------------


def nearest_database_frame(query_c2w: np.ndarray, db_c2w: np.ndarray, max_angle_deg: float = 45.0) -> int:
    """Oracle retrieval: index of the database camera ``db_c2w (M, 4, 4)`` whose centre is
    nearest to the query's among those viewing within ``max_angle_deg`` of the query's direction
    (nearest centre overall when none does)."""
    d = np.linalg.norm(db_c2w[:, :3, 3] - query_c2w[:3, 3], axis=-1)
    cos = np.clip(db_c2w[:, :3, 2] @ query_c2w[:3, 2], -1.0, 1.0)
    ok = np.degrees(np.arccos(cos)) < max_angle_deg
    return int(np.argmin(np.where(ok, d, np.inf))) if ok.any() else int(np.argmin(d))


def localize_query(
    pts_query: torch.Tensor,
    conf_query: torch.Tensor,
    pts_db_in_query: torch.Tensor,
    conf_db: torch.Tensor,
    db_world: np.ndarray,
    K_query: np.ndarray,
    conf_threshold: float = 3.0,
    iterations: int = 1000,
    reproj_error: float = 5.0,
    min_matches: int = 20,
) -> tuple[np.ndarray, dict[str, int]]:
    """Camera-to-world pose of a query from the pair (query, database) and database GT geometry.

    Confident pixels of both images (``conf > conf_threshold``; database pixels also need GT) are
    matched by reciprocal 3D nearest neighbours of the pair's pointmaps (both in the query camera's
    frame); each matched database pixel is replaced by its GT world point and PnP-RANSAC solves the
    query pose with its known intrinsics. With fewer than ``min_matches`` confident matches every
    pixel is matched instead (``stats["conf_fallback"] = 1``).

    Args:
        pts_query: ``(H, W, 3)`` query points (``pts3d_1`` of pair (query, db)); conf_query ``(H, W)``.
        pts_db_in_query: ``(H', W', 3)`` database points in the query frame; conf_db ``(H', W')``.
        db_world: ``(H', W', 3)`` GT world points of the database pixels (NaN where unknown), metres.
        K_query: ``(3, 3)`` query intrinsics at the network resolution (``fx ~ fy``: their mean is
            used as the focal).
        iterations, reproj_error: RANSAC iterations and inlier threshold (network pixels).

    Returns:
        ``(cam2world (4, 4) float64, {"n_matches": M, "conf_fallback": 0 | 1})``; the pose is
        NaN when PnP fails.
    """
    H, W = pts_query.shape[:2]
    valid_db = torch.from_numpy(np.isfinite(db_world).all(-1))
    uv_q, uv_db = reciprocal_matches(pts_query, pts_db_in_query, conf_query > conf_threshold,
                                     (conf_db > conf_threshold) & valid_db)
    stats = {"n_matches": len(uv_q), "conf_fallback": 0}
    if len(uv_q) < min_matches:  # too few confident pixels: match all of them instead
        uv_q, uv_db = reciprocal_matches(pts_query, pts_db_in_query, None, valid_db)
        stats = {"n_matches": len(uv_q), "conf_fallback": 1}
    if len(uv_q) < 4:
        return _NAN_POSE.copy(), stats
    X = db_world[uv_db[:, 1].numpy(), uv_db[:, 0].numpy()]
    f = 0.5 * (K_query[0, 0] + K_query[1, 1])
    res = pnp_ransac_points(X, uv_q.double(), (H, W), focal=f, pp=(K_query[0, 2], K_query[1, 2]),
                            iterations=iterations, reproj_error=reproj_error)
    return (_NAN_POSE.copy() if res is None else _f64(res[1])), stats


def eval_visloc(
    dataset_path: str | os.PathLike | None,
    out_dir: str | os.PathLike | None = None,
    *,
    model: ModelArg = "default",
    layout: str | None = None,
    device: str | torch.device | None = None,
    n_queries: int = 5,
    max_angle_deg: float = 45.0,
    conf_threshold: float | None = None,
    pnp_iterations: int = 1000,
    reproj_error: float = 5.0,
    size: int | None = None,
    plots: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Visual localization of ``n_queries`` evenly spaced frames against the other frames (the
    database: GT poses and depth), with **oracle retrieval**: each query is paired with the
    database frame nearest by GT pose (:func:`nearest_database_frame`). See
    :func:`localize_query` for the pose solver. Metrics: median translation (cm) and rotation
    (degrees) errors and accuracies at the (m, deg) thresholds of :mod:`metrics` (5 cm / 5 deg is
    the 7-Scenes one). Baseline: the retrieved database frame's GT pose as the answer.
    """
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, layout)
    _posed(sd, "the localization task")
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
    net, conf_threshold, images = _network_inputs(model, device, [frames[k] for k in order], size, conf_threshold)
    t1 = time.perf_counter()
    preds = infer_pairs(net, images, [(2 * n, 2 * n + 1) for n in range(len(q_idx))], device=resolve_device(device))
    t_inf = _timed(t1)
    est, per_item = [], []
    for n, (q, r) in enumerate(zip(q_idx, retrieved)):
        fq, fr = frames[q], frames[r]
        mq, mr = images[2 * n].meta, images[2 * n + 1].meta
        T, stats = localize_query(preds.pts3d_1[n], preds.conf_1[n], preds.pts3d_2_in_1[n], preds.conf_2[n],
                                  gt_points_at_network(fr, mr), intrinsics_to_network(fq.K, mq),
                                  conf_threshold, pnp_iterations, reproj_error)
        est.append(T)
        t_err, r_err = M.localization_errors(T[None], fq.cam2world[None])
        tb, rb = M.localization_errors(fr.cam2world[None], fq.cam2world[None])
        per_item.append({"query": fq.name, "database": fr.name, **stats, "t_err_cm": t_err[0] * 100,
                         "r_err_deg": r_err[0], "t_err_retrieved_cm": tb[0] * 100, "r_err_retrieved_deg": rb[0]})
    gt = np.stack([frames[q].cam2world for q in q_idx])
    ours = M.localization_metrics(np.stack(est), gt)
    base = M.localization_metrics(np.stack([frames[r].cam2world for r in retrieved]), gt)
    info = {"retrieval": "oracle: nearest database frame by GT pose", "queries": [frames[q].name for q in q_idx],
            "n_database": len(db_idx), "timings_s": {"inference": t_inf, "total": _timed(t0)}}
    return package_results("visloc", sd.name, ours, {}, {"retrieved database pose": base}, info, per_item, out_dir)


# ------------------------------------------------------------------------------------------------
# Multi-view reconstruction
# ------------------------------------------------------------------------------------------------


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
    P = [_f64(p).reshape(-1, 3) for p in pred_pts]
    Mk = [M.as_numpy(m, dtype=bool).reshape(-1) for m in pred_masks]
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
    *,
    model: ModelArg = "default",
    layout: str | None = None,
    device: str | torch.device | None = None,
    max_views: int | None = 10,
    stride: int = 1,
    start: int = 0,
    graph: str = "complete",
    conf_threshold: float | None = None,
    threshold: float = 0.05,
    size: int | None = None,
    align: AlignConfig | None = None,
    max_points: int | None = 50_000,
    plots: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Multi-view reconstruction accuracy / completeness / Chamfer (GT units, metres) on a scene
    with GT depth and poses, after a similarity alignment fitted on predicted-to-GT point
    correspondences (:func:`reconstruction_scores`). Views as in :func:`eval_multiview_pose`;
    the predicted cloud is the confident points (``conf > conf_threshold``) of the aligned scene.
    ``threshold`` sets precision / recall / F-score. Baseline: :func:`trivial_planes`, aligned the
    same way.
    """
    t0 = time.perf_counter()
    sd = read_scene(dataset_path, layout)
    _posed(sd, "the reconstruction task")
    idx = [i for i in select_indices(len(sd), None, stride, start) if sd.frames[i].has_depth][: max_views or None]
    if len(idx) < 2:
        raise DatasetError(f"the reconstruction task needs at least 2 frames with GT depth and pose; "
                           f"{len(idx)} selected from {sd.root}")
    frames = [sd.frames[i] for i in idx]
    net, conf_threshold, images = _network_inputs(model, device, frames, size, conf_threshold)
    rec = reconstruct_images(images, net, graph=graph, device=device,
                             align=align or AlignConfig(conf_threshold=conf_threshold))
    scene = rec.scene
    gt_pts = [gt_points_at_network(f, im.meta) for f, im in zip(frames, images)]
    t_score = time.perf_counter()
    ours, sim = reconstruction_scores(scene.pts3d, scene.masks, gt_pts, threshold, max_points)
    planes = trivial_planes([tuple(g.shape[:2]) for g in gt_pts])
    base, _ = reconstruction_scores(planes, [np.ones(p.shape[:2], bool) for p in planes], gt_pts, threshold, max_points)
    per_item = []
    pts, masks = scene.pts3d, [M.as_numpy(m, dtype=bool) for m in scene.masks]
    for k, f in enumerate(frames):
        one = M.reconstruction_metrics(_f64(pts[k])[masks[k]], gt_pts[k].reshape(-1, 3), align=sim,
                                       max_points=min(max_points or 20_000, 20_000))
        per_item.append({"frame": f.name, **{k2: one[k2] for k2 in ("accuracy", "completeness", "overall", "n_pred")},
                         "confident_fraction": float(M.as_numpy(scene.masks[k], dtype=bool).mean())})
    info = {"views": [f.name for f in frames], "graph": graph, "threshold": threshold, "units": sd.extras.get("units"),
            "alignment": "similarity on predicted-to-GT pixel correspondences (trimmed Umeyama)",
            "similarity_scale": sim.s, "max_points": max_points,
            "timings_s": {**{k: round(v, 3) for k, v in rec.timings.items()}, "scoring": _timed(t_score),
                          "total": _timed(t0)}}
    figs: dict[str, Any] = {}
    if plots:
        gt_c2w = np.stack([f.cam2world for f in frames])
        try_plot(lambda: plot_trajectories(_f64(scene.poses), gt_c2w, align=sim), figs, "trajectory")
    return package_results("reconstruction", sd.name, ours, {}, {"unit-depth planes (trivial)": base},
                           info, per_item, out_dir, figs)


# ------------------------------------------------------------------------------------------------
# Dispatcher
# ------------------------------------------------------------------------------------------------


TASKS = {
    "multiview_pose": eval_multiview_pose,
    "two_view_pose": eval_two_view_pose,
    "depth": eval_depth,
    "visloc": eval_visloc,
    "reconstruction": eval_reconstruction,
    "synthetic": eval_synthetic,
}
"""Task name -> function (``synthetic`` takes no dataset path)."""


def run_eval(
    task: str,
    dataset_path: str | os.PathLike | None,
    out_dir: str | os.PathLike | None,
    model: ModelArg = "default",
    layout: str | None = None,
    device: str | torch.device | None = None,
    **opts: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run evaluation ``task`` on ``dataset_path`` and write its report to ``out_dir``.

    Args:
        task: one of :data:`TASKS` (``-`` and ``_`` are interchangeable).
        dataset_path: the scene folder (ignored by ``synthetic``, which renders its own scenes).
        out_dir: report folder, or ``None`` for no files.
        model: a loaded network, a checkpoint path / hub id, or ``"default"`` (bundled model).
        layout: dataset layout to force (default: detected).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        opts: the task's keyword options (e.g. ``max_views=8``); unknown ones raise.

    Returns:
        ``(results, per_item)`` of the task.

    Raises:
        PointmapError: unknown task or option; DatasetError for a bad dataset path or layout.
    """
    name = str(task).strip().lower().replace("-", "_")
    if name not in TASKS:
        raise PointmapError(f"unknown eval task '{task}'; choose one of {', '.join(TASKS)}")
    if name == "synthetic":
        check_options(name, eval_synthetic, opts)
        return eval_synthetic(out_dir, model=model, device=device, **opts)
    fn = TASKS[name]
    check_options(name, fn, opts)
    return fn(dataset_path, out_dir, model=model, layout=layout, device=device, **opts)
