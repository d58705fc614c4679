"""Regenerate docs/results.md: every evaluation task of pointmap with the bundled default model.

    python scripts/make_results.py --data path/to/data --out docs/results.md

``--data`` is the folder holding the evaluation subsets (``middlebury_mview/``, ``strecha_mvs/``,
``7scenes_tsdf_fusion_subset/``, ``tum_rgbd_samples/``, ``nyuv2_metric3d_demo/``,
``kitti_depth_metric3d_demo/``); datasets that are missing are skipped and listed. Runs on the
CPU by default (a few minutes in all on two cores). ``--reports DIR`` also keeps each run's
``results.json`` / ``summary.md`` / plots under ``DIR/<task>/<dataset>`` (one sub-folder per
confidence threshold for the tasks that take one).

``--score FILE`` also writes the decision score (:mod:`pointmap.eval.decision`) of the real-data
runs as JSON; ``--reference FILE`` (an earlier score file, e.g. the bundled model's) prints whether
the measured weights beat it with the guard holding; ``--score-only`` runs just the score's tasks
(no synthetic set, no confidence statistics) and writes no page.

Real-data tasks that take a confidence threshold run at 0 and at the model's recommended
threshold; the page reports the one chosen by :func:`choose_threshold` as *ours* and the other as
a variant row. Every sentence of the summary is computed from the measured numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pointmap.errors import PointmapError
from pointmap.eval.decision import SCORE_METRICS, compare_scores, decision_score
from pointmap.eval.cli_support import load_frames, read_scene, resolve_model
from pointmap.eval.tasks import run_eval
from pointmap.inference import infer_pairs
from pointmap.io_utils import atomic_write_text

# (label, task, dataset folder relative to --data, options). The real-data tasks that take a
# confidence threshold (THRESHOLD_TASKS) are run twice, at 0 (every pixel) and at the model's
# recommended threshold; see choose_threshold for which one the *ours* row reports.
RUNS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("temple (8 consecutive views)", "multiview_pose", "middlebury_mview/templeSparseRing", {"max_views": 8}),
    ("fountain-P11 (6 views, every 2nd)", "multiview_pose", "strecha_mvs/fountain-P11", {"max_views": 6, "stride": 2}),
    ("7-Scenes redkitchen (10 frames, 40 apart)", "multiview_pose", "7scenes_tsdf_fusion_subset", {"max_views": 10, "stride": 2}),
    ("temple (8 neighbour pairs)", "two_view_pose", "middlebury_mview/templeSparseRing", {"max_pairs": 8}),
    ("fountain-P11 (6 neighbour pairs)", "two_view_pose", "strecha_mvs/fountain-P11", {"max_pairs": 6}),
    ("7-Scenes (10 pairs, 20 frames apart)", "two_view_pose", "7scenes_tsdf_fusion_subset", {"max_pairs": 10, "stride": 5}),
    ("TUM fr1/xyz (1 pair)", "two_view_pose", "tum_rgbd_samples/rgbd_dataset_freiburg1_xyz", {}),
    ("NYUv2 (3 images, cap 10 m)", "depth", "nyuv2_metric3d_demo", {"max_depth": 10.0}),
    ("KITTI (3 images, cap 80 m)", "depth", "kitti_depth_metric3d_demo", {"max_depth": 80.0}),
    ("7-Scenes (10 images)", "depth", "7scenes_tsdf_fusion_subset", {"max_images": 10, "stride": 5}),
    ("TUM fr1/xyz (2 images)", "depth", "tum_rgbd_samples/rgbd_dataset_freiburg1_xyz", {}),
    ("TUM fr3/office (2 images)", "depth", "tum_rgbd_samples/rgbd_dataset_freiburg3_long_office_household", {}),
    ("7-Scenes (5 queries, 45 map frames)", "visloc", "7scenes_tsdf_fusion_subset", {"n_queries": 5}),
    ("7-Scenes (10 frames, 40 apart)", "reconstruction", "7scenes_tsdf_fusion_subset", {"max_views": 10, "stride": 2}),
    ("TUM fr1/xyz (2 frames)", "reconstruction", "tum_rgbd_samples/rgbd_dataset_freiburg1_xyz", {}),
    ("synthetic val (128 pairs)", "synthetic", "", {"n_pairs": 128}),
]

# Task family -> (main metric, True if higher is better) used to choose the real-data threshold.
THRESHOLD_TASKS: dict[str, tuple[str, bool]] = {
    "multiview_pose": ("mAA@30", True),
    "two_view_pose": ("AUC@20", True),
    "visloc": ("median_t_cm", False),
    "reconstruction": ("overall", False),
}

# Scenes whose first pair (frame 0, frame 1) is used for the confidence statistics.
CONF_SCENES = [("temple", "middlebury_mview/templeSparseRing"), ("fountain-P11", "strecha_mvs/fountain-P11"),
               ("7-Scenes", "7scenes_tsdf_fusion_subset"), ("TUM fr1/xyz", "tum_rgbd_samples/rgbd_dataset_freiburg1_xyz")]

# Published numbers of the released DUSt3R (ViT-L encoder, 512 DPT head, trained on 8.5 M real
# and rendered pairs), quoted from the DUSt3R paper (Wang et al., CVPR 2024). Only numbers we are
# confident about are listed.
PUBLISHED = [
    ("multi-view pose, CO3Dv2 (10 frames), global alignment", "RRA@15 96.2 %, RTA@15 86.8 %, mAA(30) 76.7 %"),
    ("multi-view pose, RealEstate10K (10 frames), global alignment", "mAA(30) 67.7 %"),
    ("multi-view reconstruction, DTU (no GT cameras)", "accuracy 2.677 mm, completeness 0.805 mm, overall 1.741 mm"),
]

COLUMNS = {
    "multiview_pose": [("RRA@15", "RRA@15", "pct"), ("RTA@15", "RTA@15", "pct"), ("mAA@30", "mAA(30)", "pct"),
                       ("rot_err_mean_deg", "mean rot err (deg)", "f1"), ("focal_rel_err_median", "focal err (rel.)", "f2")],
    "two_view_pose": [("AUC@5", "AUC@5", "pct"), ("AUC@10", "AUC@10", "pct"), ("AUC@20", "AUC@20", "pct"),
                      ("median_rot_err_deg", "median rot err (deg)", "f1"),
                      ("median_trans_err_deg", "median trans err (deg)", "f1")],
    "depth": [("abs_rel", "AbsRel", "f3"), ("delta1", "delta<1.25", "pct")],
    "visloc": [("median_t_cm", "median t (cm)", "f1"), ("median_r_deg", "median R (deg)", "f2"),
               ("acc@0.05m_5deg", "5 cm, 5 deg", "pct"), ("acc@0.25m_2deg", "25 cm, 2 deg", "pct"),
               ("acc@0.5m_5deg", "50 cm, 5 deg", "pct")],
    "reconstruction": [("accuracy", "accuracy (m)", "f3"), ("completeness", "completeness (m)", "f3"),
                       ("overall", "Chamfer (m)", "f3"), ("fscore", "F-score @5 cm", "pct")],
    "synthetic": [("rot_err_median_deg", "median rot err (deg)", "f1"), ("trans_err_median_deg", "median trans dir err (deg)", "f1"),
                  ("frac_rot_lt15", "rot < 15 deg", "pct"), ("frac_trans_lt15", "trans < 15 deg", "pct"),
                  ("abs_rel", "AbsRel", "f3"), ("delta1", "delta<1.25", "pct")],
}

TITLES = {
    "multiview_pose": "Multi-view pose (all view pairs; RRA / RTA / mAA(30))",
    "two_view_pose": "Two-view relative pose (AUC of max(rotation, translation-direction) error)",
    "depth": "Monocular depth (per-image median scaling)",
    "visloc": "Visual localization (oracle retrieval)",
    "reconstruction": "Multi-view reconstruction (after similarity alignment to GT points)",
    "synthetic": "Held-out synthetic scenes (the model's own domain)",
}


def fmt(v: Any, kind: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "fail" if isinstance(v, float) and math.isinf(v) else "-"
    if kind == "pct":
        return f"{100 * v:.1f} %"
    return f"{v:.{int(kind[1])}f}"


def methods(res: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [("ours", res["ours"])]
    out += [(f"ours: {k}", v) for k, v in res["variants"].items()]
    out += [(f"baseline: {k}", v) for k, v in res["baselines"].items()]
    return out


def task_table(task: str, runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    cols = COLUMNS[task]
    lines = ["| data | method | " + " | ".join(c[1] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for label, res in runs:
        for name, m in methods(res):
            lines.append(f"| {label} | {name} | " + " | ".join(fmt(m.get(k), kind) for k, _, kind in cols) + " |")
    return lines


def confidence_check(data: Path, model, device: str, threshold: float) -> list[tuple[str, float, float, float]]:
    """Per scene of ``CONF_SCENES`` found under ``data``: the median raw confidence of view 1 and of
    view 2 of the pair (frame 0, frame 1), and the fraction of view-2 pixels above ``threshold``."""
    out = []
    for label, rel in CONF_SCENES:
        if not (data / rel).is_dir():
            continue
        sd = read_scene(data / rel)
        ims = load_frames(sd.frames[:2], 224)
        p = infer_pairs(model, ims, [(0, 1)], device=device)
        c1, c2 = p.conf_1[0].float(), p.conf_2[0].float()
        out.append((label, float(c1.median()), float(c2.median()), float((c2 > threshold).float().mean())))
    return out


def _mean_metric(runs: list[tuple[str, dict[str, Any]]], key: str) -> float:
    vals = [float(res["ours"].get(key, float("nan"))) for _, res in runs]
    return sum(vals) / len(vals) if vals else float("nan")


def choose_threshold(task: str, by_thr: dict[float, list[tuple[str, dict[str, Any]]]],
                     recommended: float) -> tuple[float, dict[float, float]]:
    """The threshold reported as *ours* for a task family: the model's recommended one, unless
    keeping every pixel (0) gives a strictly better mean of the family's main metric
    (``THRESHOLD_TASKS``) over the family's datasets. Returns ``(threshold, {threshold: mean})``."""
    key, higher = THRESHOLD_TASKS[task]
    scores = {thr: _mean_metric(runs, key) for thr, runs in by_thr.items()}
    s0, sr = scores.get(0.0, float("nan")), scores.get(recommended, float("nan"))
    if not math.isfinite(sr) and math.isfinite(s0):
        return 0.0, scores
    differ = math.isfinite(s0) and math.isfinite(sr) and abs(s0 - sr) > 1e-9 * max(1.0, abs(sr))
    if differ and (s0 > sr) == higher:
        return 0.0, scores
    return recommended, scores


def merge_thresholds(chosen: float, runs: dict[float, tuple[dict[str, Any], float]]) -> tuple[dict[str, Any], float]:
    """The chosen run's results with the other threshold's *ours* added as a variant row."""
    res, seconds = runs[chosen]
    res = {**res, "variants": dict(res["variants"]), "info": {**res["info"], "conf_threshold": chosen}}
    for thr, (other, _) in runs.items():
        if thr != chosen:
            res["variants"][f"conf_threshold={thr:g}"] = other["ours"]
    return res, seconds


def render(results: list[tuple[str, str, dict[str, Any]]], skipped: list[str], conf: list, choices: dict,
           model, elapsed: float, threads: int) -> str:
    by_task: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for label, task, res in results:
        by_task.setdefault(task, []).append((label, res))
    rec = float(model.recommended_conf_threshold)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    L = ["# Evaluation results of the bundled default model", "",
         "Measured with `pointmap`'s bundled default model (`load_model(\"default\")`: a small DUSt3R, "
         f"{n_params / 1e6:.1f} M parameters, {cfg.img_size[0]} x {cfg.img_size[1]} input, {cfg.head_type} heads, "
         "trained by this project on synthetic scenes only (procedural ones of `pointmap.train.synthetic` "
         "and the world-like rooms, streets and object captures of `pointmap.train.realistic`); see "
         "`docs/training.md`). It is a demonstration model for the library, not a replacement for the "
         "released DUSt3R checkpoints.", "",
         "Regenerate this page (CPU; the time of the last run is given below):", "",
         "```", "python scripts/make_results.py --data path/to/data --out docs/results.md", "```", "",
         f"Last run: {platform.processor() or platform.machine()}, {threads} CPU threads, torch {torch.__version__}, "
         f"{elapsed / 60:.1f} min in total. Each task can be run on its own with "
         "`pointmap eval TASK DATASET --out DIR` (or `pointmap.eval.tasks.run_eval`).", "",
         "**How to read the tables.** *ours* is the default pipeline (pair inference + global alignment, "
         "or the two-view scene); *ours: ...* rows are variants of it; *baseline* rows are trivial "
         "predictors that any useful method must beat. The data are small subsets (a handful of views "
         "per scene), so differences of a few percent are noise. `fail` = no estimate (counted as wrong). "
         "The confidence threshold of each run is stated under its table and in the run list at the end.", ""]
    L += threshold_section(conf, choices, by_task, rec)
    L += ["## Published numbers of the released DUSt3R (context only, not measured here)", "",
          "These are numbers reported in the DUSt3R paper (Wang et al., CVPR 2024) for the released "
          "ViT-Large 512 DPT model, **a different, much larger model (about 570 M parameters) trained on "
          "millions of real and rendered image pairs**, on full benchmarks that are not the small "
          "subsets used here. They show what the method can reach; they are not comparable one to one "
          "with the rows below. Numbers we could not recall with certainty are omitted.", "",
          "| benchmark | published (DUSt3R 512, paper) |", "|---|---|"]
    L += [f"| {a} | {b} |" for a, b in PUBLISHED]
    L.append("")
    for task in COLUMNS:
        if task not in by_task:
            continue
        L += [f"## {TITLES[task]}", ""] + task_table(task, by_task[task]) + [""]
        L += NOTES.get(task, [])
        if task in choices:
            thr = choices[task][0]
            L += ["", f"*ours* used `conf_threshold={thr:g}` on every run of this table; the "
                  f"*ours: conf_threshold=...* row is the same pipeline at the other threshold (see "
                  "*Confidence and the real-data threshold*)."]
        if task == "synthetic":
            L += synthetic_details(by_task[task][0][1])
        L.append("")
    L += summary(by_task, conf, rec)
    if skipped:
        L += ["", "Skipped (data not found): " + ", ".join(skipped) + "."]
    L += ["", "Runs (the confidence threshold is that of the *ours* row; `-` = the task has none; seconds on "
          "the CPU, one run at one threshold):", "",
          "| task | data | conf_threshold | seconds |", "|---|---|---|---|"]
    for label, task, res in results:
        thr = res["info"].get("conf_threshold")
        L.append(f"| {task} | {label} | {'-' if thr is None else f'{thr:g}'} | "
                 f"{res['info'].get('timings_s', {}).get('total', float('nan')):.1f} |")
    return "\n".join(L) + "\n"


def threshold_section(conf: list, choices: dict, by_task: dict, rec: float) -> list[str]:
    L = ["## Confidence and the real-data threshold", "",
         f"The model stores a recommended raw-confidence threshold of {rec:g} (`model.recommended_conf_threshold`). "
         f"Confidence of the pair (frame 0, frame 1) of each scene (raw values, 1 is the minimum):", "",
         f"| data | median conf_1 | median conf_2 | conf_2 > {rec:g} |", "|---|---|---|---|"]
    L += [f"| {c[0]} | {c[1]:.2f} | {c[2]:.2f} | {fmt(c[3], 'pct')} |" for c in conf]
    syn = by_task.get("synthetic")
    if syn:
        ci = syn[0][1]["info"].get("confidence")
        thr = syn[0][1]["info"].get("conf_threshold")
        if ci and thr is not None:
            L.append(f"| synthetic val (median / mean over pairs) | - | {ci['conf_2_median']:.2f} | "
                     f"{fmt(ci['conf_2_frac_above'], 'pct')} (> {thr:g}) |")
    if choices:
        L += ["", "Each real-data task that takes a threshold was run at `conf_threshold=0` (every pixel) and at "
              f"{rec:g}. The *ours* rows report {rec:g} unless 0 gave a strictly better mean of the task's main "
              "metric over its datasets (ties keep the recommended value). The choice is made on these same "
              "small subsets, so the *ours* rows are slightly optimistic; the other threshold is always shown "
              "as a variant row.", "",
              "| task | main metric | mean at 0 | mean at " + f"{rec:g}" + " | used |", "|---|---|---|---|---|"]
        for task, (thr, scores) in choices.items():
            key, higher = THRESHOLD_TASKS[task]
            kind = "pct" if higher else "f3"
            L.append(f"| {task} | {key} ({'higher' if higher else 'lower'} is better) | "
                     f"{fmt(scores.get(0.0), kind)} | {fmt(scores.get(rec), kind)} | {thr:g} |")
    L.append("")
    return L


def synthetic_details(res: dict[str, Any]) -> list[str]:
    info = res["info"]
    L = []
    if info.get("conf_threshold") is not None:
        L += ["", f"PnP used the pixels with `conf_2 > {info['conf_threshold']:g}` (the model's recommended threshold)."]
    L += ["", "Acceptance targets (held-out synthetic pairs, all pairs count):", "",
          "| target | measured | holds |", "|---|---|---|"]
    for t in info["targets"].values():
        L.append(f"| {t['description']} | {fmt(t['value'], 'f3')} | {'yes' if t['pass'] else '**no**'} |")
    L += ["", "Per layout (rotation / translation direction below 15 deg):", "",
          "| layout | pairs | rot < 15 deg | trans < 15 deg |", "|---|---|---|---|"]
    for lay, m in info["by_layout"].items():
        L.append(f"| {lay} | {m['n_pairs']} | {fmt(m['frac_rot_lt15'], 'pct')} | {fmt(m['frac_trans_lt15'], 'pct')} |")
    if info.get("by_baseline"):
        L += ["", "Per camera baseline (GT distance between the camera centres / median GT depth of view 0; "
              "below about 0.02 the pair is nearly a pure rotation and its translation direction is barely "
              "defined):", "",
              "| baseline ratio | pairs | rot < 15 deg | trans < 15 deg | median trans dir err (deg) |",
              "|---|---|---|---|---|"]
        for name, m in info["by_baseline"].items():
            L.append(f"| {name} | {m['n_pairs']} | {fmt(m['frac_rot_lt15'], 'pct')} | "
                     f"{fmt(m['frac_trans_lt15'], 'pct')} | {fmt(m['trans_err_median_deg'], 'f1')} |")
    return L


NOTES = {
    "multiview_pose": [
        "Poses from global alignment (*ours*) and from PnP of every view against view 0's pointmaps "
        "(*PnP to view 0*, each pair rescaled so view 0's own pointmap has median depth 1). RRA / RTA "
        "count view pairs with relative rotation / translation-direction error below 15 deg; the "
        "translation direction is sign invariant, as in the CO3Dv2 protocol, so identity poses score "
        "90 deg. Focal error: median |f_est / f_gt - 1| against the GT focal mapped to the network image. "
        "No COLMAP baseline on this page: it is optional and was not implemented in this version "
        "(`pycolmap` itself can run offline), so only the trivial baseline is shown."],
    "two_view_pose": [
        "*ours*: the two-view scene (`pair_scene`); *relative_pose (PnP)*: PnP of the pair (0, 1) with "
        "the focal from pair (1, 0). Pairs of consecutive selected frames; GT from the dataset poses. "
        "The identity baseline always scores 0 (its translation direction is undefined)."],
    "depth": [
        "Each image is fed as both views (pair (0, 0)); the z of its pointmap is the depth. GT depth is "
        "sampled at the original pixel nearest to each network pixel (224 x 224 centre crop). AbsRel and "
        "delta<1.25 after per-image median scaling, averaged over images. The Eigen crop is not applied."],
    "visloc": [
        "**Oracle retrieval**: each query is paired with the database frame nearest by GT pose (viewing "
        "directions within 45 deg), so retrieval errors are excluded. Pair (query, database), reciprocal "
        "3D matches of the two pointmaps, database pixels lifted to 3D with GT depth and pose, PnP-RANSAC "
        "(1000 iterations, 5 px at 224 x 224) with the query's GT intrinsics mapped to the network image. "
        "The baseline answers with the retrieved database frame's own pose: the pose solver is only "
        "useful where it beats that."],
    "reconstruction": [
        "The points of the aligned scene above the run's confidence threshold, after one similarity fitted on "
        "predicted-to-GT point pairs of the same pixels (Umeyama, refitted on the 80 % best pairs). GT "
        "points: GT depth of the same network pixels lifted with GT intrinsics and poses (same field of "
        "view as the prediction). Accuracy = mean distance prediction -> GT, completeness = GT -> "
        "prediction, Chamfer = their mean, in metres. Baseline: every image a plane at unit depth with "
        "the identity pose, aligned the same way."],
    "synthetic": [
        "Pairs from the engine's `val` split (scene ids never used for training), 224 x 224. Pose of "
        "camera 1 in camera 0's frame by PnP of `pts3d_2_in_1` with the focal estimated from the other "
        "pair (*ours*) or the GT intrinsics (variant); translation direction error is **signed** here. "
        "Depth: z of `pts3d_1` of both ordered pairs, median scaled. The baseline is identity pose and "
        "constant depth."],
}


def _label(label: str) -> str:
    return label.split(" (")[0]


def _vs(a: float, b: float, higher: bool) -> str:
    """``'better than'`` / ``'worse than'`` / ``'equal to'`` for value ``a`` against ``b``."""
    if not (math.isfinite(a) and math.isfinite(b)):
        fa, fb = math.isfinite(a), math.isfinite(b)
        return "equal to" if fa == fb else ("better than" if fa else "worse than")
    if abs(a - b) <= 1e-9 * max(1.0, abs(b)):
        return "equal to"
    return "better than" if (a > b) == higher else "worse than"


def summary(by_task: dict[str, list[tuple[str, dict[str, Any]]]], conf: list, rec: float) -> list[str]:
    """Bullet points whose every claim is computed from the measured numbers."""
    L = ["## Summary and failure cases", ""]
    syn = by_task.get("synthetic", [])
    if conf:
        low = [c[0] for c in conf if c[3] < 0.1]
        high = [c[0] for c in conf if c[3] >= 0.5]
        text = ("* **Confidence on real photographs.** Fraction of view-2 pixels above the recommended "
                f"threshold {rec:g}: " + ", ".join(f"{c[0]} {fmt(c[3], 'pct')}" for c in conf))
        if syn and syn[0][1]["info"].get("confidence"):
            text += f" (held-out synthetic pairs: {fmt(syn[0][1]['info']['confidence']['conf_2_frac_above'], 'pct')})"
        text += ". "
        if high:
            text += "Most pixels pass it on " + ", ".join(high) + ". "
        if low:
            text += (f"On {', '.join(low)} fewer than 10 % pass, so masks at {rec:g} are nearly empty there. ")
        L.append(text.rstrip())
    if syn:
        res = syn[0][1]
        o, b = res["ours"], res["baselines"]["identity / constant depth (trivial)"]
        targets = res["info"]["targets"]
        held = [t["description"] for t in targets.values() if t["pass"]]
        failed = [t["description"] for t in targets.values() if not t["pass"]]
        text = (f"* **Held-out synthetic scenes: {len(held)} of {len(targets)} acceptance targets hold.** "
                f"Rotation below 15 deg for {fmt(o['frac_rot_lt15'], 'pct')} of pairs (identity: "
                f"{fmt(b['frac_rot_lt15'], 'pct')}), translation direction below 15 deg for "
                f"{fmt(o['frac_trans_lt15'], 'pct')} (median error {fmt(o['trans_err_median_deg'], 'f1')} deg), "
                f"AbsRel {fmt(o['abs_rel'], 'f3')} (constant depth: {fmt(b['abs_rel'], 'f3')}). "
                + ("Holding: " + "; ".join(held) + ". " if held else "")
                + ("Not holding: " + "; ".join(failed) + "." if failed else ""))
        L.append(text.rstrip())
        bins = res["info"].get("by_baseline") or {}
        if bins:
            names = list(bins)
            lo, hi = bins[names[0]], bins[names[-1]]
            best = max(bins.items(), key=lambda kv: kv[1]["frac_trans_lt15"])
            L.append(f"* **Translation direction by baseline (synthetic).** Pairs with baseline ratio {names[0]} "
                     f"({lo['n_pairs']} of {o['n_pairs']}): {fmt(lo['frac_trans_lt15'], 'pct')} below 15 deg, median "
                     f"{fmt(lo['trans_err_median_deg'], 'f1')} deg; ratio {names[-1]} ({hi['n_pairs']} pairs): "
                     f"{fmt(hi['frac_trans_lt15'], 'pct')}, median {fmt(hi['trans_err_median_deg'], 'f1')} deg. "
                     f"The best bin ({best[0]}) reaches {fmt(best[1]['frac_trans_lt15'], 'pct')}, "
                     + ("so the translation target is missed at every baseline, not only on near-pure rotations."
                        if best[1]["frac_trans_lt15"] < 0.9 else "so the failures concentrate in the other bins."))
    mv = by_task.get("multiview_pose", [])
    if mv:
        ident = [res["baselines"]["identity (trivial)"] for _, res in mv]
        rra = sum(res["ours"]["RRA@15"] > i["RRA@15"] for (_, res), i in zip(mv, ident))
        rta = sum(res["ours"]["RTA@15"] > i["RTA@15"] for (_, res), i in zip(mv, ident))
        parts = [f"{_label(label)} RRA@15 {fmt(res['ours']['RRA@15'], 'pct')} (identity {fmt(i['RRA@15'], 'pct')}), "
                 f"RTA@15 {fmt(res['ours']['RTA@15'], 'pct')}, mAA(30) {fmt(res['ours']['mAA@30'], 'pct')}"
                 for (label, res), i in zip(mv, ident)]
        foc = [res["ours"].get("focal_rel_err_median", float("nan")) for _, res in mv]
        foc = [f for f in foc if math.isfinite(f)]
        L.append(f"* **Multi-view pose on real scenes.** Global alignment beats the identity on RRA@15 in {rra} "
                 f"of {len(mv)} scenes and on RTA@15 in {rta} of {len(mv)}: " + "; ".join(parts) + "."
                 + (f" Median relative focal errors range from {min(foc):.2f} to {max(foc):.2f}." if foc else "")
                 + " The model has seen no real photographs in training.")
    tv = by_task.get("two_view_pose", [])
    if tv:
        best = max(tv, key=lambda lr: lr[1]["ours"]["AUC@20"])
        te = [res["ours"]["median_trans_err_deg"] for _, res in tv]
        re_ = [res["ours"]["median_rot_err_deg"] for _, res in tv]
        rot_better = [_label(label) for label, res in tv
                      if res["ours"]["median_rot_err_deg"] < res["baselines"]["identity (trivial)"]["median_rot_err_deg"]]
        text = (f"* **Two-view pose: AUC@20 is at most {fmt(best[1]['ours']['AUC@20'], 'pct')}** ({_label(best[0])}). "
                f"Median translation-direction errors are {min(te):.0f} to {max(te):.0f} deg against median rotation "
                f"errors of {min(re_):.1f} to {max(re_):.1f} deg")
        text += (", so translation dominates the max(rotation, translation) error. " if min(te) > max(re_) else ". ")
        text += ("The median rotation error is below the identity's on " + ", ".join(rot_better) + "."
                 if rot_better else "The median rotation error is never below the identity's.")
        fb = sum(int(res["ours"].get("identity_fallbacks", 0)) for _, res in tv)
        n = sum(int(res["ours"].get("n_pairs", 0)) for _, res in tv)
        text += f" The two-view scene fell back to the identity on {fb} of {n} pairs"
        alt = [(name, sum(int(res["variants"].get(name, {}).get("identity_fallbacks", 0)) for _, res in tv))
               for name in tv[0][1]["variants"] if name.startswith("conf_threshold=")]
        text += "".join(f" ({k} at {name})" for name, k in alt) + "."
        L.append(text)
    d = by_task.get("depth", [])
    if d:
        cst = "constant depth (trivial)"
        wins = [_label(label) for label, res in d if res["ours"]["abs_rel"] < res["baselines"][cst]["abs_rel"]]
        loses = [_label(label) for label, res in d if _label(label) not in wins]
        worst = max(d, key=lambda lr: lr[1]["ours"]["abs_rel"] / max(lr[1]["baselines"][cst]["abs_rel"], 1e-9))
        L.append("* **Monocular depth**: AbsRel better than constant depth on " + (", ".join(wins) or "none") + "; "
                 + ("not better on " + ", ".join(loses) if loses else "never worse") + ". Relative to constant depth "
                 f"the weakest is {_label(worst[0])} (AbsRel {fmt(worst[1]['ours']['abs_rel'], 'f3')} vs "
                 f"{fmt(worst[1]['baselines'][cst]['abs_rel'], 'f3')}).")
    v = by_task.get("visloc", [])
    if v:
        o, b = v[0][1]["ours"], v[0][1]["baselines"]["retrieved database pose"]
        acc = o.get("acc@0.5m_5deg", float("nan"))
        L.append(f"* **Localization** (oracle retrieval, {o.get('n_queries', '?')} queries): median "
                 f"{fmt(o['median_t_cm'], 'f1')} cm / {fmt(o['median_r_deg'], 'f2')} deg, "
                 f"against {fmt(b['median_t_cm'], 'f1')} cm / {fmt(b['median_r_deg'], 'f2')} deg for the retrieved "
                 f"database pose (translation {_vs(o['median_t_cm'], b['median_t_cm'], False).split()[0]}, rotation "
                 f"{_vs(o['median_r_deg'], b['median_r_deg'], False).split()[0]}); within 50 cm and 5 deg: {fmt(acc, 'pct')} vs "
                 f"{fmt(b.get('acc@0.5m_5deg', float('nan')), 'pct')}.")
    r = by_task.get("reconstruction", [])
    if r:
        pl = "unit-depth planes (trivial)"
        parts = []
        for label, res in r:
            o, b = res["ours"], res["baselines"][pl]
            parts.append(f"{_label(label)}: Chamfer {fmt(o['overall'], 'f3')} m vs {fmt(b['overall'], 'f3')} m "
                         f"(accuracy {_vs(o['accuracy'], b['accuracy'], False).replace(' than', '').replace(' to', '')}, "
                         f"completeness {_vs(o['completeness'], b['completeness'], False).replace(' than', '').replace(' to', '')}), "
                         f"F-score {fmt(o['fscore'], 'pct')} vs {fmt(b['fscore'], 'pct')}")
        L.append("* **Reconstruction** against unit-depth planes aligned the same way: " + "; ".join(parts) + ".")
    L.append("* Only small subsets were run (see the *data* column of each table), so every number here has a "
             "large sampling error.")
    return L


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="folder with the evaluation datasets")
    ap.add_argument("--out", default=Path("docs/results.md"), type=Path, help="Markdown file to write")
    ap.add_argument("--reports", type=Path, default=None, help="also write per-run reports here")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--only", nargs="*", default=None, help="run only these tasks")
    ap.add_argument("--weights", default="default",
                    help="weights to measure (default: the bundled model); a candidate is measured "
                         "with --out elsewhere, then compared with docs/results.md")
    ap.add_argument("--score", type=Path, default=None, help="write the decision score (JSON) here")
    ap.add_argument("--reference", type=Path, default=None,
                    help="an earlier --score file to compare with (prints the decision)")
    ap.add_argument("--score-only", action="store_true",
                    help="run only the tasks of the decision score and write no page (needs --score)")
    args = ap.parse_args(argv)
    if args.score_only and args.score is None:
        print("error: --score-only needs --score FILE", file=sys.stderr)
        return 2
    reference = None
    if args.reference is not None:
        try:
            reference = json.loads(args.reference.read_text())
            reference["items"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: cannot read the reference score {args.reference}: {e}", file=sys.stderr)
            return 2
    if args.score_only:
        args.only = [t for t in SCORE_METRICS if not args.only or t in args.only]
    if not args.data.is_dir():
        print(f"error: data folder {args.data} does not exist", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = resolve_model(args.weights, args.device)
    rec = float(model.recommended_conf_threshold)
    thresholds = sorted({0.0, rec})
    runs: list[tuple[str, str, dict[float, tuple[dict[str, Any], float]]]] = []
    skipped = []
    for label, task, rel, opts in RUNS:
        if args.only and task not in args.only:
            continue
        path = args.data / rel if rel else None
        if path is not None and not path.exists():
            skipped.append(f"{task} on {rel}")
            continue
        per_thr: dict[float, tuple[dict[str, Any], float]] = {}
        for thr in thresholds if task in THRESHOLD_TASKS else [None]:
            o = dict(opts) if thr is None else {**opts, "conf_threshold": thr}
            out = args.reports / task / (Path(rel).name or "synthetic") if args.reports else None
            if out is not None and thr is not None:
                out = out / f"conf_threshold_{thr:g}"
            t = time.perf_counter()
            try:
                res, _ = run_eval(task, path, out, model=model, device=args.device, plots=out is not None, **o)
            except PointmapError as exc:
                print(f"[{task}] {label}: {exc}", file=sys.stderr)
                skipped.append(f"{task} on {rel} ({exc})")
                break
            secs = time.perf_counter() - t
            print(f"[{task}] {label}" + ("" if thr is None else f" conf_threshold={thr:g}") + f": {secs:.1f} s",
                  file=sys.stderr)
            per_thr[thr] = (res, secs)
        else:
            runs.append((label, task, per_thr))
    choices: dict[str, tuple[float, dict[float, float]]] = {}
    for task in THRESHOLD_TASKS:
        fam = [(label, per_thr) for label, t, per_thr in runs if t == task]
        if fam:
            by_thr = {thr: [(label, per_thr[thr][0]) for label, per_thr in fam] for thr in thresholds}
            choices[task] = choose_threshold(task, by_thr, rec)
    results = []
    for label, task, per_thr in runs:
        if task in choices:
            res, _ = merge_thresholds(choices[task][0], per_thr)
        else:
            res = per_thr[None][0]
        results.append((label, task, res))
    if args.score is not None:
        write_score(args.score, decision_score(results), reference, args.weights, time.perf_counter() - t0, skipped)
    if args.score_only:
        return 0
    conf = confidence_check(args.data, model, args.device, rec)
    text = render(results, skipped, conf, choices, model, time.perf_counter() - t0, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def write_score(path: Path, score: dict[str, Any], reference: dict[str, Any] | None, weights: str,
                seconds: float, skipped: list[str]) -> None:
    """Write the decision score (with the comparison against ``reference``, if any) as JSON and
    print its lines."""
    score = {**score, "weights": weights, "seconds": round(seconds, 1), "skipped": skipped}
    lines = [f"decision score {score['score']:.4f} ("
             + ", ".join(f"{t} {g:+.3f}" for t, g in score["tasks"].items()) + ")"]
    if reference is not None:
        cmp = compare_scores(score, reference)
        score["comparison"] = cmp
        w = cmp["worst"]
        lines.append(f"against the reference ({reference['score']:.4f}): {cmp['score_delta']:+.4f}; guard "
                     f"{'holds' if cmp['guard'] else 'FAILS'} (largest drop {w['drop']:+.3f} on {w['item']}"
                     + (f", missing {cmp['missing']}" if cmp["missing"] else "") + "); "
                     + ("BETTER" if cmp["better"] else "not better"))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(score, indent=1) + "\n")
    for line in lines:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
