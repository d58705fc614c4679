"""A model on held-out synthetic pairs: relative pose and depth against exact ground truth.

The scenes come from the synthetic data engine's ``val`` split (:mod:`pointmap.train.synthetic`;
its scene ids never occur in ``train``), rendered at 224 x 224 by default. For each pair
``(view 0, view 1)``:

* **pose**: camera 1's pose in camera 0's frame by PnP-RANSAC of the pair's ``pts3d_2_in_1``
  with the focal estimated from pair ``(1, 0)`` (:func:`pointmap.align.poses.pair_relative_pose`, no GT
  used); the variant uses the GT intrinsics of view 1 instead. Errors: geodesic rotation angle and
  the angle between translation directions (signed: ``t`` and ``-t`` differ), in degrees;
* **depth**: z of ``pts3d_1`` of pairs ``(0, 1)`` and ``(1, 0)`` against the GT depth of views 0
  and 1 (valid pixels), AbsRel and delta<1.25 after per-image median scaling;
* **confidence**: per pair the median raw ``conf_2`` of pair ``(0, 1)`` and its fraction of pixels
  above the threshold used (``info["confidence"]``: median and mean over pairs).

Acceptance targets checked (``results["info"]["targets"]``): rotation error < 15 deg for >= 95 %
of pairs, translation direction < 15 deg for >= 90 %, mean AbsRel <= 0.10 (all pairs count).

Breakdown by camera baseline (``results["info"]["by_baseline"]``): each pair's *baseline ratio*
is the GT distance between the two camera centres divided by the median valid GT depth of view 0
(both in scene units, so the ratio is unitless). Below about 0.02 the pair is nearly a pure
rotation and its translation direction is barely defined by the images.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import numpy as np
import torch

from ..errors import PointmapError
from ..align.poses import pair_relative_pose
from ..geometry import confident_mask, pnp_ransac
from ..inference import infer_pairs, resolve_device
from ..predictions import PairPredictions
from ..train.synthetic import SyntheticConfig, render_pair_batch
from ..arrays import as_float64, to_numpy
from . import metrics as M
from .cli_support import ModelArg, package_results, resolve_model, try_plot
from .report import plot_error_distribution

__all__ = ["BASELINE_BINS", "TARGETS", "baseline_ratio", "eval_synthetic", "synthetic_pair_errors"]

TARGETS: dict[str, tuple[str, float, str]] = {
    "frac_rot_lt15": (">=", 0.95, "rotation error < 15 deg for >= 95% of pairs"),
    "frac_trans_lt15": (">=", 0.90, "translation direction error < 15 deg for >= 90% of pairs"),
    "abs_rel": ("<=", 0.10, "depth AbsRel (median scaled) <= 0.10"),
}
"""metric -> (comparison, target, description) of the acceptance targets."""

BASELINE_BINS: tuple[float, ...] = (0.02, 0.05, 0.1)
"""Edges of the baseline-ratio bins of the breakdown: ``< 0.02``, ``0.02-0.05``, ``0.05-0.1``, ``>= 0.1``."""


def baseline_ratio(T_0_from_1: np.ndarray, depth0: np.ndarray, valid0: np.ndarray) -> float:
    """Camera baseline relative to the scene depth seen by view 0.

    Args:
        T_0_from_1: ``(4, 4)`` pose of camera 1 in camera 0's frame (translation in scene units).
        depth0: ``(H, W)`` GT depth of view 0 (scene units).
        valid0: ``(H, W)`` bool mask of the valid pixels of ``depth0``.

    Returns:
        ``|t| / median(depth0[valid0])`` (unitless); ``nan`` when view 0 has no valid positive depth.
    """
    d = np.asarray(depth0, dtype=np.float64)[np.asarray(valid0, dtype=bool)]
    d = d[np.isfinite(d) & (d > 0)]
    if d.size == 0:
        return float("nan")
    return float(np.linalg.norm(np.asarray(T_0_from_1, dtype=np.float64)[:3, 3]) / np.median(d))


def _bin_label(lo: float | None, hi: float | None) -> str:
    if lo is None:
        return f"< {hi:g}"
    if hi is None:
        return f">= {lo:g}"
    return f"{lo:g}-{hi:g}"


def _by_baseline(per_item: list[dict[str, Any]], edges: tuple[float, ...] = BASELINE_BINS) -> dict[str, dict[str, float]]:
    """Pose summaries of the pairs per baseline-ratio bin (empty bins and ``nan`` ratios omitted)."""
    ratios = np.array([it["baseline_ratio"] for it in per_item], dtype=np.float64)
    rot = np.array([it["rot_err_deg"] for it in per_item], dtype=np.float64)
    trans = np.array([it["trans_err_deg"] for it in per_item], dtype=np.float64)
    bounds = [None, *edges, None]
    out: dict[str, dict[str, float]] = {}
    for lo, hi in itertools.pairwise(bounds):
        sel = np.isfinite(ratios)
        if lo is not None:
            sel &= ratios >= lo
        if hi is not None:
            sel &= ratios < hi
        if sel.any():
            out[_bin_label(lo, hi)] = {**_summary(rot[sel], trans[sel], None),
                                       "baseline_ratio_median": float(np.median(ratios[sel]))}
    return out


def synthetic_pair_errors(
    preds: PairPredictions,
    T_0_from_1: np.ndarray,
    K1: np.ndarray | None = None,
    conf_threshold: float = 3.0,
    iterations: int = 100,
) -> tuple[float, float]:
    """Rotation and (signed) translation-direction errors in degrees of camera 1's pose in
    camera 0's frame, estimated from a two-image prediction (pairs ``(0, 1)`` and ``(1, 0)``).

    Args:
        preds: the symmetrized prediction of images 0 and 1.
        T_0_from_1: ``(4, 4)`` GT pose of camera 1 in camera 0's frame (``inv(P0) @ P1``).
        K1: GT ``(3, 3)`` intrinsics of view 1 to use (``None``: focal estimated, principal point
            at the image centre).

    Returns:
        ``(rot_err_deg, trans_err_deg)``; ``(180, 180)`` when PnP fails.
    """
    if K1 is None:
        res = pair_relative_pose(preds, 0, 1, conf_threshold=conf_threshold, iterations=iterations)
    else:
        e = preds.index(0, 1)
        mask = confident_mask(preds.conf_2[e], conf_threshold)
        res = pnp_ransac(preds.pts3d_2_in_1[e].float(), mask, focal=float(0.5 * (K1[0, 0] + K1[1, 1])),
                         pp=(float(K1[0, 2]), float(K1[1, 2])), iterations=iterations)
    if res is None:
        return 180.0, 180.0
    T = as_float64(res[1])
    r = float(M.rotation_error_deg(T[:3, :3], T_0_from_1[:3, :3]))
    t = float(M.direction_error_deg(T[:3, 3], T_0_from_1[:3, 3], sign_invariant=False))
    return r, t


def _summary(rot: np.ndarray, trans: np.ndarray, depth: list[M.DepthMetrics] | None) -> dict[str, float]:
    out = {
        "rot_err_median_deg": float(np.median(rot)),
        "trans_err_median_deg": float(np.median(trans)),
        "frac_rot_lt15": M.accuracy_at(rot, 15.0),
        "frac_trans_lt15": M.accuracy_at(trans, 15.0),
        "frac_both_lt15": M.accuracy_at(np.maximum(rot, trans), 15.0),
    }
    if depth is not None:
        a = np.array([d.abs_rel for d in depth])
        d1 = np.array([d.delta1 for d in depth])
        ok = np.isfinite(a)
        out["abs_rel"] = float(a[ok].mean()) if ok.any() else float("nan")
        out["delta1"] = float(d1[ok].mean()) if ok.any() else float("nan")
    out["n_pairs"] = len(rot)
    return out


def eval_synthetic(
    out_dir: str | os.PathLike | None = None,
    *,
    model: ModelArg = "default",
    device: str | torch.device | None = None,
    n_pairs: int = 128,
    seed: int = 0,
    batch_size: int = 16,
    conf_threshold: float | None = None,
    pnp_iterations: int = 100,
    config: SyntheticConfig | None = None,
    plots: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate a model on ``n_pairs`` held-out synthetic pairs (see the module docstring).

    Args:
        out_dir: report folder (``None``: no files).
        model: a network, checkpoint path or ``"default"``.
        n_pairs: number of validation pairs (sample indices ``0 .. n_pairs - 1``).
        seed: base seed of the data engine (0 is the one the bundled model was validated on).
        batch_size: pairs rendered and inferred together.
        conf_threshold: raw confidence above which ``conf_2`` pixels enter PnP (``None``: the
            model's ``recommended_conf_threshold``); the value used is ``info["conf_threshold"]``.
        config: a full :class:`SyntheticConfig` (default: ``split='val'``, 224 x 224, ``seed``).

    Returns:
        ``(results, per_item)``; per item: one pair with its errors. ``results["info"]["targets"]``
        says for each acceptance target its value and whether it holds.
    """
    if n_pairs < 1 or batch_size < 1:
        raise PointmapError(f"n_pairs and batch_size must be >= 1, got {n_pairs} and {batch_size}")
    t0 = time.perf_counter()
    cfg = config or SyntheticConfig(split="val", resolution=(224, 224), seed=seed)
    net = resolve_model(model, device)
    dev = resolve_device(device)
    if conf_threshold is None:
        conf_threshold = float(getattr(net, "recommended_conf_threshold", 3.0))
    conf_threshold = float(conf_threshold)
    rot, trans, rot_k, trans_k, rot_id = [], [], [], [], []
    depth, depth_c, per_item = [], [], []
    t_render = t_inf = 0.0
    for s in range(0, n_pairs, batch_size):
        ids = list(range(s, min(n_pairs, s + batch_size)))
        t1 = time.perf_counter()
        v1, v2 = render_pair_batch(cfg, ids, device="cpu")
        t_render += time.perf_counter() - t1
        imgs = [v[k] for k in range(len(ids)) for v in (v1["img"], v2["img"])]
        pairs = [p for b in range(len(ids)) for p in ((2 * b, 2 * b + 1), (2 * b + 1, 2 * b))]
        t1 = time.perf_counter()
        preds = infer_pairs(net, imgs, pairs, batch_size=batch_size, device=dev)
        t_inf += time.perf_counter() - t1
        for b, idx in enumerate(ids):
            e01, e10 = 2 * b, 2 * b + 1
            sub = PairPredictions([(0, 1), (1, 0)], [preds.pts3d_1[e01], preds.pts3d_1[e10]],
                                  [preds.conf_1[e01], preds.conf_1[e10]],
                                  [preds.pts3d_2_in_1[e01], preds.pts3d_2_in_1[e10]],
                                  [preds.conf_2[e01], preds.conf_2[e10]], n_images=2)
            P0, P1 = as_float64(v1["camera_pose"][b]), as_float64(v2["camera_pose"][b])
            T = np.linalg.inv(P0) @ P1
            r, t = synthetic_pair_errors(sub, T, None, conf_threshold, pnp_iterations)
            rk, tk = synthetic_pair_errors(sub, T, as_float64(v2["camera_intrinsics"][b]), conf_threshold, pnp_iterations)
            ri = float(M.rotation_error_deg(np.eye(3), T[:3, :3]))
            rot.append(r), trans.append(t), rot_k.append(rk), trans_k.append(tk), rot_id.append(ri)
            item = {"idx": idx, "layout": v1["label"][b], "covisibility": float(v1["covisibility"][b]),
                    "gt_rot_deg": ri, "rot_err_deg": r, "trans_err_deg": t, "rot_err_gt_K_deg": rk,
                    "trans_err_gt_K_deg": tk,
                    "baseline_ratio": baseline_ratio(T, as_float64(v1["depthmap"][b]),
                                                     to_numpy(v1["valid_mask"][b], bool)),
                    "conf_2_median": float(preds.conf_2[e01].float().median()),
                    "conf_2_frac_above": float((preds.conf_2[e01] > conf_threshold).float().mean())}
            for view, e in ((v1, e01), (v2, e10)):
                gt = as_float64(view["depthmap"][b])
                gt[~to_numpy(view["valid_mask"][b], bool)] = 0.0
                dm = M.depth_metrics(as_float64(preds.pts3d_1[e][..., 2]), gt)
                depth.append(dm)
                depth_c.append(M.depth_metrics(M.constant_depth(gt.shape), gt))
            item["abs_rel_view0"], item["abs_rel_view1"] = depth[-2].abs_rel, depth[-1].abs_rel
            per_item.append(item)
    R, Tt = np.array(rot), np.array(trans)
    ours = _summary(R, Tt, depth)
    variants = {"GT intrinsics for PnP": _summary(np.array(rot_k), np.array(trans_k), None)}
    baselines = {"identity / constant depth (trivial)": _summary(np.array(rot_id), np.full(len(rot_id), 90.0), depth_c)}
    targets = {}
    for key, (op, target, desc) in TARGETS.items():
        v = ours[key]
        ok = bool(np.isfinite(v) and (v >= target if op == ">=" else v <= target))
        targets[key] = {"description": desc, "value": v, "target": target, "pass": ok}
    layouts = sorted({it["layout"] for it in per_item})
    by_layout = {lay: _summary(np.array([it["rot_err_deg"] for it in per_item if it["layout"] == lay]),
                               np.array([it["trans_err_deg"] for it in per_item if it["layout"] == lay]), None)
                 for lay in layouts}
    info = {"split": cfg.split, "seed": cfg.seed, "resolution": list(cfg.resolutions[0]),
            "conf_threshold": conf_threshold, "targets": targets, "by_layout": by_layout,
            "by_baseline": _by_baseline(per_item),
            "confidence": {"conf_2_median": float(np.median([it["conf_2_median"] for it in per_item])),
                           "conf_2_frac_above": float(np.mean([it["conf_2_frac_above"] for it in per_item]))},
            "timings_s": {"render": round(t_render, 3), "inference": round(t_inf, 3),
                          "total": round(time.perf_counter() - t0, 3)}}
    figs: dict[str, Any] = {}
    if plots:
        try_plot(lambda: plot_error_distribution({"rotation": R, "translation direction": Tt}, "error (deg)",
                                                 thresholds=(15.0,), max_value=90.0), figs, "pose_errors")
    return package_results("synthetic", f"val-seed{cfg.seed}", ours, variants, baselines, info, per_item, out_dir, figs)
