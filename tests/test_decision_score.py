"""The decision score of real-data evaluations and its guard (pointmap.eval.decision)."""

from __future__ import annotations

import math

import pytest

from pointmap.eval.decision import compare_scores, decision_score, gain


@pytest.mark.parametrize("ours, base, higher, want", [
    (0.4, 0.4, True, 0.0), (1.0, 0.4, True, 1.0), (0.7, 0.4, True, 0.5), (0.2, 0.4, True, -0.5),
    (0.0, 0.4, True, -1.0), (0.3, 0.0, True, 0.3), (0.0, 0.0, True, 0.0),
    (0.1, 0.2, False, 0.5), (0.0, 0.2, False, 1.0), (0.4, 0.2, False, -0.5), (0.2, 0.2, False, 0.0),
    (float("inf"), 0.2, False, -1.0), (float("nan"), 0.5, True, -1.0),
])
def test_gain_is_the_share_of_the_gap_closed_or_of_the_baseline_lost(ours, base, higher, want):
    assert gain(ours, base, higher) == pytest.approx(want)


def _res(metric: str, ours: float, base_name: str, base: float) -> dict:
    return {"ours": {metric: ours}, "baselines": {base_name: {metric: base}}, "variants": {}, "info": {}}


def _runs(rra_temple: float, absrel_nyu: float) -> list:
    return [
        ("temple", "multiview_pose", _res("RRA@15", rra_temple, "identity (trivial)", 0.0)),
        ("7-Scenes", "multiview_pose", _res("RRA@15", 0.7, "identity (trivial)", 0.4)),
        ("NYUv2", "depth", _res("abs_rel", absrel_nyu, "constant depth (trivial)", 0.2)),
        ("synthetic", "synthetic", _res("abs_rel", 0.1, "constant depth (trivial)", 0.6)),  # not scored
    ]


def test_score_is_the_mean_over_tasks_of_the_mean_over_sets():
    s = decision_score(_runs(0.5, 0.1))
    assert s["tasks"] == pytest.approx({"multiview_pose": (0.5 + 0.5) / 2, "depth": 0.5})
    assert s["score"] == pytest.approx(0.5)
    assert len(s["items"]) == 3 and {it["data"] for it in s["items"]} == {"temple", "7-Scenes", "NYUv2"}


def test_compare_needs_a_higher_score_and_no_set_much_worse():
    ref = decision_score(_runs(0.5, 0.1))
    better = decision_score(_runs(0.9, 0.1))
    cmp = compare_scores(better, ref)
    assert cmp["better"] and cmp["guard"] and cmp["score_delta"] == pytest.approx(0.1)  # (0.9 + 0.5) / 2 vs 0.5, halved
    # a higher score bought by a much worse set fails the guard: temple 0.5 -> 1.0, NYUv2 0.5 -> 0.3
    mixed = decision_score(_runs(1.0, 0.14))
    cmp = compare_scores(mixed, ref)
    assert cmp["score_delta"] > 0 and not cmp["guard"] and not cmp["better"]
    assert cmp["worst"]["item"] == ["depth", "NYUv2"] and cmp["worst"]["drop"] == pytest.approx(0.2)
    # a small drop within the guard is allowed
    small = decision_score(_runs(1.0, 0.105))  # NYUv2 gain 0.5 -> 0.475
    assert compare_scores(small, ref)["guard"]
    # a set the reference measured but the candidate lacks fails the guard
    partial = decision_score(_runs(0.9, 0.1)[:2])
    cmp = compare_scores(partial, ref)
    assert not cmp["guard"] and cmp["missing"] == [["depth", "NYUv2"]]
    assert math.isfinite(cmp["score_delta"])
