"""Metric scale: a metric network's scene keeps the predictions' metres after alignment."""

from __future__ import annotations

import json

import torch

from pointmap.align import global_align
from pointmap.align.metric import metric_scale_factor, to_metric
from pointmap.export.cameras import cameras_dict
from pointmap.predictions import PairPredictions
from pointmap.testing.synthetic_pairs import make_synthetic_scene


def test_aligned_scene_is_brought_back_to_metres():
    """Predictions in true metres (the synthetic pair scales undone), noisy and with outliers:
    the aligned scene's depths come out at an arbitrary scale; after :func:`to_metric` they
    are the true depths (median ratio within 2 %) and cameras.json says metres."""
    gt = make_synthetic_scene(6, (64, 48), seed=3)
    p = gt.preds
    s = gt.pair_scales.tolist()
    metric = PairPredictions(p.pairs, [x / k for x, k in zip(p.pts3d_1, s)], p.conf_1,
                             [x / k for x, k in zip(p.pts3d_2_in_1, s)], p.conf_2)
    scene = global_align(metric)
    def ratio(sc):
        return float(torch.stack([(sc.depths[k] / gt.depths[k]).median() for k in range(6)]).median())
    assert abs(ratio(scene) - 1) > 0.05  # alignment has its own scale: the test can fail
    assert scene.units == "scene" and cameras_dict(scene)["metric"] is False
    m = to_metric(scene, metric)
    assert abs(ratio(m) - 1) < 0.02
    c = torch.linalg.inv(m.poses[:1]) @ m.poses  # relative camera distances are metric too
    cg = torch.linalg.inv(gt.poses[:1]) @ gt.poses
    d, dg = c[:, :3, 3].norm(dim=-1)[1:], cg[:, :3, 3].norm(dim=-1)[1:]
    assert float((d / dg - 1).abs().max()) < 0.05
    cams = json.loads(json.dumps(cameras_dict(m)))
    assert cams["units"] == "metres" and cams["metric"] is True
    assert "metres" in cams["convention"]["units"]
    assert abs(metric_scale_factor(m, metric) - 1) < 1e-6  # already metric: nothing to change
