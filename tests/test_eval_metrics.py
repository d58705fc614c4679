"""Metrics against analytic cases and synthetic ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import roma
import torch

from pointmap.eval import metrics as M


def _random_poses(n: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    R = roma.random_rotmat(n, generator=g, dtype=torch.float64).numpy()
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64).numpy() * 2
    return T


def _rot(axis: str, deg: float) -> np.ndarray:
    v = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1]}[axis]
    return roma.rotvec_to_rotmat(torch.tensor(v, dtype=torch.float64) * math.radians(deg)).numpy()


def _sim(seed: int = 1) -> M.Similarity:
    g = torch.Generator().manual_seed(seed)
    return M.Similarity(roma.random_rotmat(generator=g, dtype=torch.float64).numpy(), np.array([0.3, -2.0, 5.0]), 2.7)


# ----------------------------------------------------------------------------------- pose errors


def test_identical_poses_zero_error():
    gt = _random_poses(6)
    out = M.multiview_pose_metrics(gt, gt)
    assert out["n_pairs"] == 15
    assert out["RRA@5"] == out["RTA@5"] == out["mAA@30"] == 1.0
    r, t, _ = M.relative_pose_errors(gt, gt)
    assert np.abs(r).max() < 1e-5 and np.abs(t).max() < 1e-5


def test_similarity_invariance():
    gt = _random_poses(5)
    est = _sim().apply_poses(gt)
    r, t, pairs = M.relative_pose_errors(est, gt, sign_invariant=False)
    assert len(pairs) == 10
    assert r.max() < 1e-6 and t.max() < 1e-5


def test_known_rotation_perturbation():
    gt = _random_poses(4)
    est = gt.copy()
    est[2, :3, :3] = est[2, :3, :3] @ _rot("y", 10.0)  # rotate camera 2 about its own y axis
    est[2, :3, 3] = gt[2, :3, 3]
    r, _, pairs = M.relative_pose_errors(est, gt)
    involved = (pairs == 2).any(1)
    np.testing.assert_allclose(r[involved], 10.0, atol=1e-6)
    np.testing.assert_allclose(r[~involved], 0.0, atol=1e-6)
    out = M.multiview_pose_metrics(est, gt, taus=(5, 15))
    assert out["RRA@5"] == pytest.approx(0.5) and out["RRA@15"] == 1.0


def test_180_degree_flip_no_nan():
    gt = _random_poses(3)
    est = gt.copy()
    est[1, :3, :3] = est[1, :3, :3] @ _rot("z", 180.0)
    r, t, pairs = M.relative_pose_errors(est, gt)
    assert np.isfinite(r).all() and np.isfinite(t).all()
    np.testing.assert_allclose(r[(pairs == 1).any(1)], 180.0, atol=1e-6)
    assert M.rotation_error_deg(np.eye(3), _rot("x", 180.0)) == pytest.approx(180.0)
    # exact antipodal translation directions
    assert M.direction_error_deg([1, 0, 0], [-1, 0, 0]) == pytest.approx(180.0)
    assert M.direction_error_deg([1, 0, 0], [-1, 0, 0], sign_invariant=True) == pytest.approx(0.0)
    assert M.direction_error_deg([1, 0, 0], [0, 2, 0]) == pytest.approx(90.0)


def test_single_camera_has_no_pairs():
    out = M.multiview_pose_metrics(_random_poses(1), _random_poses(1))
    assert out["n_pairs"] == 0
    assert math.isnan(out["RRA@15"]) and math.isnan(out["mAA@30"])


def test_zero_translation_scores_90():
    gt = _random_poses(3)
    r, t, _ = M.relative_pose_errors(M.identity_poses(3), gt)
    np.testing.assert_allclose(t, 90.0)
    assert np.isfinite(r).all()


def test_maa_analytic_and_bruteforce():
    rot = np.array([0.5, 1.5, 29.5, 45.0])
    trans = np.array([0.1, 0.2, 3.0, 1.0])
    # thresholds 1..30: t=1 -> 1/4, t=2..29 -> 2/4, t=30 -> 3/4
    assert M.mean_average_accuracy(rot, trans) == pytest.approx((0.25 + 28 * 0.5 + 0.75) / 30)
    rng = np.random.default_rng(0)
    r, t = rng.uniform(0, 40, 200), rng.uniform(0, 40, 200)
    brute = np.mean([np.mean(np.maximum(r, t) < tau) for tau in range(1, 31)])
    assert M.mean_average_accuracy(r, t) == pytest.approx(brute)
    assert math.isnan(M.mean_average_accuracy([], []))


# ------------------------------------------------------------------------------------ two-view


def test_pose_auc_analytic():
    assert M.pose_auc([0.0])["AUC@5"] == pytest.approx(1.0)
    assert M.pose_auc([np.inf, np.inf])["AUC@10"] == 0.0
    # curve (0,0) -> (2,.5) -> (4,1) -> (5,1): area 0.5 + 1.5 + 1 = 3
    assert M.pose_auc([4.0, 2.0], thresholds=(5,))["AUC@5"] == pytest.approx(0.6)
    # errors above the threshold only lower the curve: (0,0)->(2,1/3) flat to 5: (1/3 + 2/3*... )
    e = [2.0, 8.0, 30.0]
    auc = M.pose_auc(e, thresholds=(5,))["AUC@5"]
    assert auc == pytest.approx((0.5 * 2 * (1 / 3) + 3 * (1 / 3)) / 5)
    assert math.isnan(M.pose_auc([])["AUC@20"])


def test_two_view_pose_error():
    T = np.eye(4)
    T[:3, 3] = [0, 0, 1]
    E = np.eye(4)
    E[:3, :3] = _rot("x", 7.0)
    E[:3, 3] = [0, 0, -3]  # opposite direction: 0 under the essential-matrix ambiguity
    assert M.two_view_pose_error(E, T) == pytest.approx(7.0)
    assert M.two_view_pose_error(E, T, sign_invariant=False) == pytest.approx(180.0)


# ---------------------------------------------------------------------------------------- depth


def test_depth_median_scaling_exact():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 5.0, (20, 30))
    gt[:3] = 0.0
    m = M.depth_metrics(2.5 * gt, gt)
    assert m.abs_rel == pytest.approx(0.0, abs=1e-12) and m.delta1 == 1.0
    assert m.n_valid == 17 * 30 and m.scale == pytest.approx(0.4)
    raw = M.depth_metrics(2.5 * gt, gt, median_scaling=False)
    assert raw.abs_rel == pytest.approx(1.5) and raw.delta1 == 0.0


def test_depth_analytic_values_and_caps():
    gt = np.array([[1.0, 1.0, 1.0, 50.0, np.nan, 0.0]])
    pred = np.array([[1.0, 1.0, 1.5, 50.0, 3.0, 3.0]])
    m = M.depth_metrics(pred, gt, max_depth=10.0)  # valid: the first three
    assert m.n_valid == 3 and m.scale == pytest.approx(1.0)
    assert m.abs_rel == pytest.approx(0.5 / 3) and m.delta1 == pytest.approx(2 / 3)
    amap = M.abs_rel_map(pred, gt, max_depth=10.0)
    assert np.isnan(amap[0, 3:]).all() and amap[0, 2] == pytest.approx(0.5)


def test_depth_empty_mask_and_bad_prediction():
    m = M.depth_metrics(np.ones((4, 4)), np.zeros((4, 4)))
    assert m.n_valid == 0 and math.isnan(m.abs_rel) and math.isnan(m.delta1)
    neg = M.depth_metrics(-np.ones((2, 2)), np.ones((2, 2)))  # non-positive median: undefined
    assert math.isnan(neg.abs_rel)
    gt = np.ones((1, 3))
    part = M.depth_metrics(np.array([[1.0, 1.0, -1.0]]), gt)  # a negative pixel fails delta1
    assert part.delta1 == pytest.approx(2 / 3)


def test_constant_depth_baseline():
    gt = np.array([[1.0, 2.0, 4.0]])
    m = M.depth_metrics(M.constant_depth(gt.shape, 7.0), gt)  # becomes the GT median, 2
    assert m.abs_rel == pytest.approx((1 / 1 + 0 + 2 / 4) / 3)


# --------------------------------------------------------------------------------- localization


def test_localization_thresholds():
    gt = _random_poses(4)
    est = gt.copy()
    est[0, :3, 3] += [0.03, 0, 0]                        # 3 cm, 0 deg
    est[1, :3, 3] += [0, 0.2, 0]                         # 20 cm
    est[1, :3, :3] = est[1, :3, :3] @ _rot("x", 1.5)     # 1.5 deg
    est[2, :3, 3] += [0, 0, 3.0]                         # 3 m, 0 deg
    est[3] = np.nan                                      # failed
    t, r = M.localization_errors(est, gt)
    np.testing.assert_allclose(t[:3], [0.03, 0.2, 3.0], atol=1e-9)
    np.testing.assert_allclose(r[:3], [0.0, 1.5, 0.0], atol=1e-5)
    assert np.isinf(t[3]) and np.isinf(r[3])
    out = M.localization_metrics(est, gt)
    assert out["acc@0.1m_1deg"] == 0.25
    assert out["acc@0.25m_2deg"] == 0.5
    assert out["acc@5m_10deg"] == 0.75
    assert out["acc@0.05m_5deg"] == 0.25
    assert out["median_t_cm"] == pytest.approx((20 + 300) / 2)
    assert out["n_queries"] == 4


# ------------------------------------------------------------------------ alignment and chamfer


def test_similarity_align_poses_recovers_transform():
    gt = _random_poses(7)
    sim = _sim(3)
    est = sim.apply_poses(gt)  # est world = sim(gt world); aligning must undo it
    a = M.similarity_align_poses(est, gt)
    np.testing.assert_allclose(a.apply_poses(est), gt, atol=1e-8)
    assert a.s == pytest.approx(1 / sim.s)


@pytest.mark.parametrize("n", [1, 2])
def test_similarity_align_poses_few_cameras(n):
    gt = _random_poses(n, seed=4)
    est = _sim(5).apply_poses(gt)
    a = M.similarity_align_poses(est, gt)
    np.testing.assert_allclose(a.apply_poses(est), gt, atol=1e-8)


def test_reconstruction_metrics_analytic():
    xs, ys = np.meshgrid(np.arange(10.0), np.arange(10.0))
    gt = np.stack([xs.ravel(), ys.ravel(), np.zeros(100)], 1)
    pred = gt + [0, 0, 0.01]
    out = M.reconstruction_metrics(pred, gt, threshold=0.05)
    assert out["accuracy"] == pytest.approx(0.01) and out["completeness"] == pytest.approx(0.01)
    assert out["overall"] == pytest.approx(0.01) and out["fscore"] == 1.0
    gt2 = np.vstack([gt, [[4.5, 4.5, 10.01]]])  # one GT point 10 above the nearest prediction
    out2 = M.reconstruction_metrics(pred, gt2)
    assert out2["accuracy"] == pytest.approx(0.01)
    assert out2["completeness"] == pytest.approx((100 * 0.01 + math.sqrt(0.5 + 100.0)) / 101)


def test_reconstruction_after_alignment_and_empty():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(500, 3))
    sim = _sim(6)
    pred = sim.apply_points(gt)
    a = M.similarity_align_points(pred, gt)
    out = M.reconstruction_metrics(pred, gt, align=a)
    assert out["overall"] < 1e-8
    empty = M.reconstruction_metrics(np.zeros((0, 3)), gt)
    assert math.isnan(empty["accuracy"]) and empty["n_pred"] == 0
    with pytest.raises(ValueError):
        M.similarity_align_points(gt[:2], gt[:2])


def test_torch_inputs_accepted():
    gt = torch.from_numpy(_random_poses(3))
    assert M.multiview_pose_metrics(gt, gt)["mAA@30"] == 1.0
