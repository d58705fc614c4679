"""Evaluation tasks: a model on a dataset scene, scored against ground truth and trivial baselines.

Every task reads a scene (:func:`pointmap.eval.read_dataset`), runs the network (and global
alignment where the task needs it), scores the result with :mod:`pointmap.eval.metrics` and
returns ``(results, per_item)`` (see :func:`pointmap.eval.cli_support.package_results`); with
``out_dir`` it also writes ``results.json``, ``summary.md`` and plots there. Each task is its own
module; they share one :class:`TaskOptions` (model, layout, device, size, threshold, plots) and
take their own options as keyword arguments. Pose solvers live in :mod:`pointmap.align.poses`.

Tasks (``run_eval`` names):

* ``multiview_pose``: RRA / RTA / mAA(30) over all view pairs, poses from global alignment and,
  as a variant, from PnP of each view against a reference view's pointmap; baseline identity poses.
* ``two_view_pose``: relative pose of frame pairs, AUC@5/10/20 of ``max(rot, trans)`` error
  (SuperGlue protocol); poses from the two-view scene (:func:`pointmap.align.pair_scene`) and, as
  a variant, from :func:`pointmap.align.poses.pair_relative_pose`; baseline identity.
* ``depth``: monocular depth (the image fed as both views), AbsRel and delta<1.25 after per-image
  median scaling; baseline constant depth.
* ``visloc``: visual localization of query frames against posed RGB-D database frames (oracle
  retrieval by GT pose); baseline: the retrieved database frame's pose.
* ``reconstruction``: accuracy / completeness / Chamfer of the aligned point cloud after a
  similarity alignment to the GT points; baseline: unit-depth planes with identity poses.
* ``synthetic``: held-out synthetic pairs (:mod:`pointmap.eval.synthetic_eval`).

Ground truth is compared at the network resolution: GT depth is sampled at the original pixel
nearest to each network pixel (:func:`gt_depth_at_network`) and GT intrinsics are mapped through
the resize and crop (:meth:`ImageMeta.intrinsics_to_network`).
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

import torch

from ...errors import PointmapError
from ..cli_support import ModelArg, check_options
from ..synthetic_eval import eval_synthetic
from .common import TaskOptions, gt_points_at_network
from .depth import eval_depth
from .multiview_pose import eval_multiview_pose
from .reconstruction import eval_reconstruction, reconstruction_scores, trivial_planes
from .two_view_pose import eval_two_view_pose
from .visloc import eval_visloc

__all__ = [
    "TASKS",
    "TaskOptions",
    "eval_depth",
    "eval_multiview_pose",
    "eval_reconstruction",
    "eval_two_view_pose",
    "eval_visloc",
    "gt_points_at_network",
    "reconstruction_scores",
    "run_eval",
    "trivial_planes",
]

TASKS = {
    "multiview_pose": eval_multiview_pose,
    "two_view_pose": eval_two_view_pose,
    "depth": eval_depth,
    "visloc": eval_visloc,
    "reconstruction": eval_reconstruction,
    "synthetic": eval_synthetic,
}
"""Task name -> function (``synthetic`` takes no dataset path)."""

_SHARED = tuple(f.name for f in fields(TaskOptions))


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
        opts: the other :class:`TaskOptions` fields and the task's own keyword options (e.g.
            ``max_views=8``); unknown ones raise.

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
    check_options(name, fn, opts, shared=_SHARED)
    shared = TaskOptions(model=model, layout=layout, device=device,
                         **{k: opts.pop(k) for k in list(opts) if k in _SHARED})
    return fn(dataset_path, out_dir, shared, **opts)
