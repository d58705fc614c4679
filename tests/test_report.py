"""Report writer: files exist, JSON round-trips, plots render to readable PNGs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pointmap.eval import metrics as M
from pointmap.eval import report as R

pytest.importorskip("matplotlib")


def _poses(n=8):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    P = np.tile(np.eye(4), (n, 1, 1))
    P[:, :3, 3] = np.stack([np.cos(t), np.zeros(n), np.sin(t)], 1) * 2
    for k in range(n):  # look at the centre
        z = -P[k, :3, 3] / 2
        x = np.cross([0, 1, 0], z)
        P[k, :3, :3] = np.stack([x, np.cross(z, x), z], 1)
    return P


def test_write_report_roundtrip(tmp_path):
    gt = _poses()
    rng = np.random.default_rng(0)
    est = gt.copy()
    est[:, :3, 3] += rng.normal(scale=0.05, size=(8, 3))
    ours = M.multiview_pose_metrics(est, gt)
    base = M.multiview_pose_metrics(M.identity_poses(8), gt)
    per_item = [{"scene": "a", **ours}, {"scene": "b", "RRA@15": float("nan"), "arr": np.arange(3)}]
    r, t, _ = M.relative_pose_errors(est, gt)
    rb, tb, _ = M.relative_pose_errors(M.identity_poses(8), gt)
    plots = {
        "errors": R.plot_error_distribution({"ours": np.maximum(r, t), "identity": np.maximum(rb, tb)}, thresholds=[15]),
        "trajectory": R.plot_trajectories(M.Similarity(np.eye(3), np.ones(3), 3.0).apply_poses(est), gt),
    }
    paths = R.write_report(tmp_path / "rep", "multiview_pose/synthetic", ours, per_item, {"identity": base}, plots)
    for key in ("json", "markdown", "errors", "trajectory"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    doc = json.loads(paths["json"].read_text())
    assert doc["task"] == "multiview_pose/synthetic"
    assert doc["results"] == pytest.approx(ours)
    assert doc["baselines"]["identity"]["RTA@15"] == 0.0  # zero translations score 90 degrees
    assert doc["per_item"][1]["RRA@15"] is None and doc["per_item"][1]["arr"] == [0, 1, 2]
    assert doc["plots"] == {"errors": "errors.png", "trajectory": "trajectory.png"}
    md = paths["markdown"].read_text()
    assert "| metric | ours | identity |" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| RTA@15 |"))
    assert row.split("|")[3].strip() == "0"
    assert "![trajectory](trajectory.png)" in md
    with Image.open(paths["trajectory"]) as im:
        assert im.size[0] > 200 and im.size[1] > 200


def test_markdown_missing_values():
    table = R.markdown_table({"a": 1.23456, "b": float("nan")}, {"base": {"a": 2, "c": 0.5}})
    lines = table.splitlines()
    assert lines[2] == "| a | 1.235 | 2 |"
    assert lines[3] == "| b | - | - |"
    assert lines[4] == "| c | - | 0.5 |"


def test_depth_error_plot(tmp_path):
    yy, xx = np.mgrid[0:48, 0:64]
    gt = 1.0 + xx / 32.0
    gt[:5] = 0.0
    pred = 0.5 * gt * (1 + 0.2 * (yy > 30))
    img = np.zeros((48, 64, 3), np.uint8)
    fig = R.plot_depth_error(pred, gt, image=img)
    p = R.save_figure(fig, tmp_path / "depth.png")
    with Image.open(p) as im:
        assert im.size[0] > 400
    err = M.abs_rel_map(pred, gt)
    assert np.isnan(err[:5]).all() and np.nanmax(err) > 0.1


def test_bad_plot_name(tmp_path):
    fig = R.plot_error_distribution({"x": [1.0, 2.0]})
    with pytest.raises(Exception, match="file name"):
        R.write_report(tmp_path, "t", {}, plots={"../x": fig})
