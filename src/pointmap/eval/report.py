"""Evaluation reports: JSON results, a Markdown summary table, and plots.

``write_report`` writes into ``out_dir``:

* ``results.json``: ``{"task", "results", "baselines", "per_item", "plots"}``. Non-finite
  numbers (``nan``, ``inf``) become ``null`` so the file is standard JSON; numpy scalars and
  arrays become plain numbers and lists.
* ``summary.md``: one table with a row per metric and a column for ours and each baseline, then
  links to the plots.
* ``<name>.png`` for each figure in ``plots``.

Plot functions (:func:`plot_error_distribution`, :func:`plot_trajectories`,
:func:`plot_depth_error`) return a ``matplotlib.figure.Figure`` built without pyplot (no global
state, no display needed). matplotlib is imported lazily: it is only needed for plots
(the ``eval`` extra: :func:`pointmap.errors.install_hint`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..errors import PointmapError, install_hint
from ..io_utils import atomic_write, atomic_write_text
from ..arrays import as_float64, to_numpy
from .metrics import Similarity, abs_rel_map, similarity_align_poses

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "to_jsonable",
    "markdown_table",
    "write_report",
    "save_figure",
    "plot_error_distribution",
    "plot_trajectories",
    "plot_depth_error",
]


def _figure(**kwargs) -> "Figure":
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PointmapError(f"plots need matplotlib: {install_hint('eval')}") from exc
    return Figure(**kwargs)


def to_jsonable(x: Any) -> Any:
    """Recursively convert numpy / torch values to JSON types; non-finite floats become None."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        x = x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def markdown_table(results: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """A Markdown table: rows = metrics of ``results`` (then any metric only a baseline has),
    columns = ``ours`` and each baseline; missing values show as ``-``."""
    baselines = baselines or {}
    keys = [k for k in results if not isinstance(results[k], (Mapping, list, tuple, np.ndarray))]
    for b in baselines.values():
        keys += [k for k in b if k not in keys and not isinstance(b[k], (Mapping, list, tuple, np.ndarray))]
    cols = ["metric", "ours", *baselines]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for k in keys:
        row = [k, _fmt(results.get(k))] + [_fmt(b.get(k)) for b in baselines.values()]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def save_figure(fig: "Figure", path: str | Path, dpi: int = 120) -> Path:
    """Save a figure as PNG atomically."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return path


def write_report(
    out_dir: str | Path,
    task: str,
    results: Mapping[str, Any],
    per_item: Sequence[Mapping[str, Any]] = (),
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
    plots: Mapping[str, "Figure"] | None = None,
) -> dict[str, Path]:
    """Write ``results.json``, ``summary.md`` and one PNG per figure into ``out_dir``.

    Args:
        out_dir: output folder (created if needed; existing report files are replaced).
        task: task name, e.g. ``"multiview_pose/co3d"``.
        results: aggregated metrics of our method, ``{metric: value}``.
        per_item: per-scene / per-image metric dicts (kept in the JSON).
        baselines: ``{baseline name: {metric: value}}`` shown as extra columns.
        plots: ``{name: matplotlib Figure}``, saved as ``<name>.png``.

    Returns:
        ``{"json": path, "markdown": path, <plot name>: path, ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    baselines = dict(baselines or {})
    plots = dict(plots or {})
    paths: dict[str, Path] = {}
    for name, fig in plots.items():
        if not name or any(c in name for c in "/\\") or name.startswith("."):
            raise PointmapError(f"plot name '{name}' cannot be used as a file name")
        paths[name] = save_figure(fig, out / f"{name}.png")
    doc = {
        "task": task,
        "results": to_jsonable(results),
        "baselines": to_jsonable(baselines),
        "per_item": to_jsonable(list(per_item)),
        "plots": {k: p.name for k, p in paths.items()},
    }
    paths["json"] = out / "results.json"
    atomic_write_text(paths["json"], json.dumps(doc, indent=1, allow_nan=False))
    md = [f"# {task}", "", markdown_table(results, baselines), ""]
    if per_item:
        md += [f"{len(per_item)} items; per-item values in `results.json`.", ""]
    for name, p in paths.items():
        if name != "json":
            md += [f"## {name}", "", f"![{name}]({p.name})", ""]
    paths["markdown"] = out / "summary.md"
    atomic_write_text(paths["markdown"], "\n".join(md))
    return paths


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------


def plot_error_distribution(
    errors: Mapping[str, Any],
    xlabel: str = "error (deg)",
    thresholds: Sequence[float] = (),
    max_value: float | None = None,
    bins: int = 40,
) -> "Figure":
    """Histogram (left) and cumulative distribution (right) of one or more error sets.

    Args:
        errors: ``{label: errors (N,)}``, e.g. ours and baselines; non-finite values count in
            the CDF as beyond the axis.
        xlabel: axis label with units.
        thresholds: vertical lines (e.g. the RRA thresholds).
        max_value: x-axis limit (default: the 99th percentile of all finite errors).
    """
    data = {k: as_float64(v).ravel() for k, v in errors.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in data.values()] or [np.zeros(0)])
    top = max_value if max_value is not None else (float(np.percentile(finite, 99)) if finite.size else 1.0)
    top = top if top > 0 else 1.0
    fig = _figure(figsize=(10, 3.8))
    ax_h, ax_c = fig.subplots(1, 2)
    edges = np.linspace(0, top, bins + 1)
    for label, v in data.items():
        ax_h.hist(np.clip(v[np.isfinite(v)], 0, top), bins=edges, alpha=0.5, label=label)
        s = np.sort(np.where(np.isfinite(v), v, np.inf))
        if s.size:
            ax_c.step(np.r_[0.0, s], np.r_[0.0, np.arange(1, s.size + 1) / s.size], where="post", label=label)
    for t in thresholds:
        for ax in (ax_h, ax_c):
            ax.axvline(t, color="gray", ls=":", lw=1)
    ax_h.set(xlabel=xlabel, ylabel="count", title="distribution", xlim=(0, top))
    ax_c.set(xlabel=xlabel, ylabel="fraction <= x", title="cumulative", xlim=(0, top), ylim=(0, 1.01))
    ax_c.grid(alpha=0.3)
    ax_h.legend(fontsize=8)
    return fig


def plot_trajectories(
    est_c2w, gt_c2w, align: bool | Similarity = True, labels: Sequence[str] | None = None, arrow_scale: float = 0.1
) -> "Figure":
    """Top view of estimated vs GT camera centres (and viewing directions).

    The estimate is first mapped into the GT frame with :func:`similarity_align_poses` (or the
    given :class:`Similarity`; ``False`` for none). The view plane is spanned by the two main
    directions of the GT centres (PCA), so "top view" works for any world up axis.

    Args:
        est_c2w, gt_c2w: ``(N, 4, 4)`` camera-to-world poses.
        arrow_scale: viewing-direction arrow length as a fraction of the trajectory extent.
    """
    gt = as_float64(gt_c2w)
    est = as_float64(est_c2w)
    if align is True:
        est = similarity_align_poses(est, gt).apply_poses(est)
    elif isinstance(align, Similarity):
        est = align.apply_poses(est)
    cg, ce = gt[:, :3, 3], est[:, :3, 3]
    mean = cg.mean(0)
    if len(cg) >= 2:
        _, _, Vt = np.linalg.svd(cg - mean)
        basis = Vt[:2]
    else:
        basis = np.eye(3)[[0, 2]]
    extent = max(float(np.ptp((cg - mean) @ basis.T, axis=0).max()), 1e-9)
    fig = _figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    for name, c, P, col in (("GT", cg, gt, "tab:green"), ("estimate", ce, est, "tab:red")):
        xy = (c - mean) @ basis.T
        ax.plot(xy[:, 0], xy[:, 1], "-o", color=col, ms=3, lw=1, label=name)
        d = P[:, :3, 2] @ basis.T * extent * arrow_scale
        ax.quiver(xy[:, 0], xy[:, 1], d[:, 0], d[:, 1], color=col, angles="xy", scale_units="xy", scale=1, width=0.004)
    xy_g, xy_e = (cg - mean) @ basis.T, (ce - mean) @ basis.T
    for a, b in zip(xy_g, xy_e):
        ax.plot([a[0], b[0]], [a[1], b[1]], color="gray", lw=0.5)
    if labels is not None:
        for (x, y), t in zip(xy_g, labels):
            ax.annotate(str(t), (x, y), fontsize=6)
    ax.set_aspect("equal")
    ax.set(title="camera trajectory (top view, GT units)", xlabel="main axis 1", ylabel="main axis 2")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_depth_error(
    pred, gt, image=None, median_scaling: bool = True, max_depth: float | None = None, vmax_rel: float = 0.3
) -> "Figure":
    """Panels: optional image, GT depth, (median-scaled) predicted depth and the colour-mapped
    abs-rel error map ``|s d_pred - d_gt| / d_gt`` (grey where GT is invalid).

    Args:
        pred, gt: ``(H, W)`` depth maps (GT in metres, 0 = invalid).
        image: optional ``(H, W, 3)`` uint8 or float image shown first.
        vmax_rel: upper end of the abs-rel colour scale.
    """
    p, g = as_float64(pred), as_float64(gt)
    err = abs_rel_map(p, g, median_scaling=median_scaling, max_depth=max_depth)
    valid = np.isfinite(err)
    s = float(np.median(g[valid]) / np.median(p[valid])) if median_scaling and valid.any() and np.median(p[valid]) > 0 else 1.0
    panels = ([("image", image)] if image is not None else []) + [("GT depth (m)", g), ("prediction (scaled)", s * p), ("abs rel", err)]
    fig = _figure(figsize=(3.6 * len(panels), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    gv = g[(g > 0) & np.isfinite(g)]
    lo, hi = (float(np.percentile(gv, 1)), float(np.percentile(gv, 99))) if gv.size else (0.0, 1.0)
    for ax, (title, arr) in zip(axes, panels):
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        if title == "image":
            ax.imshow(to_numpy(arr, np.float32) / (255.0 if np.asarray(arr).dtype == np.uint8 else 1.0))
        elif title == "abs rel":
            ax.set_facecolor("0.6")
            ax.axis("on")
            ax.set_xticks([]), ax.set_yticks([])
            im = ax.imshow(np.ma.masked_invalid(arr), cmap="inferno", vmin=0, vmax=vmax_rel)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        else:
            im = ax.imshow(np.ma.masked_where(~(arr > 0), arr), cmap="viridis", vmin=lo, vmax=hi)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return fig
