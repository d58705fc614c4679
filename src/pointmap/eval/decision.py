"""The decision score: one number saying how much better than the trivial baselines a model is on
the real evaluation sets, and a guard that no set got much worse than under a reference model
(the rule for shipping new bundled weights; docs/training.md#the-decision-score).

For each real-data run of ``scripts/make_results.py`` (task, data set) the *gain* of the model's
main figure over the task's trivial baseline is a number in ``[-1, 1]``:

* a success rate ``o`` (higher is better) against the baseline's ``b``: the share of the gap to
  100 % that was closed, ``(o - b) / (1 - b)``, when ``o >= b``; the share of the baseline lost,
  ``(o - b) / b``, when ``o < b``;
* an error ``o`` (lower is better) against ``b``: the share removed, ``(b - o) / b``, when
  ``o <= b``; ``(b - o) / o`` when ``o > b``.

0 means "as good as the trivial baseline", 1 "perfect" (or no error left), -1 "nothing of the
baseline's figure left" (or an infinitely larger error, or no estimate). The score is the mean over
the task families of the mean gain over the family's data sets. The guard holds for a candidate
against a reference when no (task, data set) gain dropped by more than :data:`GUARD_DROP`.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["GUARD_DROP", "SCORE_METRICS", "compare_scores", "decision_score", "gain"]

#: Task family -> (main figure, trivial baseline row, True if higher is better).
SCORE_METRICS: dict[str, tuple[str, str, bool]] = {
    "multiview_pose": ("RRA@15", "identity (trivial)", True),
    "two_view_pose": ("AUC@20", "identity (trivial)", True),
    "depth": ("abs_rel", "constant depth (trivial)", False),
    "visloc": ("median_t_cm", "retrieved database pose", False),
    "reconstruction": ("overall", "unit-depth planes (trivial)", False),
}

#: Largest drop of one (task, data set) gain the guard allows.
GUARD_DROP: float = 0.15


def gain(ours: float, base: float, higher: bool) -> float:
    """The gain in ``[-1, 1]`` of figure ``ours`` over the baseline's ``base`` (module docstring);
    a missing or non-finite ``ours`` counts as -1."""
    if ours is None or not math.isfinite(ours):
        return -1.0
    if higher:
        if ours >= base:
            return 0.0 if base >= 1.0 else (ours - base) / (1.0 - base)
        return (ours - base) / base
    if ours <= base:
        return 0.0 if base <= 0.0 else (base - ours) / base
    return (base - ours) / ours


def decision_score(results: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """The decision score of ``(label, task, results)`` runs (``results`` as
    :func:`~pointmap.eval.tasks.run_eval` returns them: ``ours`` and ``baselines`` figures); runs
    of tasks outside :data:`SCORE_METRICS` are ignored.

    Returns:
        ``{"score": float, "tasks": {task: mean gain}, "items": [{"task", "data", "metric",
        "ours", "baseline", "gain"}, ...]}``.
    """
    items = []
    for label, task, res in results:
        if task not in SCORE_METRICS:
            continue
        key, base_name, higher = SCORE_METRICS[task]
        o = res["ours"].get(key)
        b = float(res["baselines"][base_name][key])
        items.append({"task": task, "data": label, "metric": key, "ours": None if o is None else float(o),
                      "baseline": b, "gain": gain(float("nan") if o is None else float(o), b, higher)})
    tasks: dict[str, list[float]] = {}
    for it in items:
        tasks.setdefault(it["task"], []).append(it["gain"])
    means = {t: sum(g) / len(g) for t, g in tasks.items()}
    score = sum(means.values()) / len(means) if means else float("nan")
    return {"score": score, "tasks": means, "items": items}


def compare_scores(candidate: dict[str, Any], reference: dict[str, Any], max_drop: float = GUARD_DROP
                   ) -> dict[str, Any]:
    """Whether ``candidate`` beats ``reference`` (both :func:`decision_score` results).

    Returns:
        ``{"better": score strictly higher and guard holds, "score_delta", "guard": bool,
        "worst": the (task, data) item whose gain dropped most and by how much, "missing": items of
        the reference the candidate lacks (each fails the guard)}``.
    """
    cand = {(it["task"], it["data"]): it["gain"] for it in candidate["items"]}
    worst, drop, missing = None, -math.inf, []
    for it in reference["items"]:
        k = (it["task"], it["data"])
        if k not in cand:
            missing.append(list(k))
            continue
        d = it["gain"] - cand[k]
        if d > drop:
            worst, drop = list(k), d
    guard = not missing and drop <= max_drop
    delta = candidate["score"] - reference["score"]
    return {"better": bool(guard and delta > 0), "score_delta": delta, "guard": bool(guard),
            "worst": {"item": worst, "drop": drop}, "missing": missing}
