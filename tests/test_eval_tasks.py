"""Evaluation tasks: exact scores for perfect predictions, end-to-end runs with a tiny random
network on a tiny dataset, and clear errors for bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import roma
import torch
from PIL import Image

from pointmap.errors import DatasetError, PointmapError
from pointmap.eval import metrics as M
from pointmap.eval import synthetic_eval as SE
from pointmap.align import poses as AP
from pointmap.eval import tasks as T
from pointmap.eval.tasks import depth as depth_task
from pointmap.eval.cli_support import (
    gt_depth_at_network,
    select_indices,
)
from pointmap.eval.synthetic_eval import TARGETS, eval_synthetic, synthetic_pair_errors
from pointmap.eval.synthetic_eval import baseline_ratio as synthetic_baseline_ratio
from pointmap.images import load_image_arrays
from pointmap.model import DUSt3R, ModelConfig
from pointmap.predictions import PairPredictions
from pointmap.geometry import depth_to_world
from pointmap.testing.synthetic_pairs import make_synthetic_scene

TINY = ModelConfig(img_size=(224, 224), enc_embed_dim=32, enc_depth=1, enc_num_heads=2,
                   dec_embed_dim=32, dec_depth=1, dec_num_heads=2, head_type="linear")


@pytest.fixture(scope="module")
def tiny_model() -> DUSt3R:
    torch.manual_seed(0)
    return DUSt3R(TINY).eval()


def _pose(angle_deg: float, t: tuple[float, float, float]) -> np.ndarray:
    P = np.eye(4)
    P[:3, :3] = roma.rotvec_to_rotmat(torch.tensor([0.0, np.radians(angle_deg), 0.0], dtype=torch.float64)).numpy()
    P[:3, 3] = t
    return P


@pytest.fixture()
def sevenscenes_dir(tmp_path):
    """A 4-frame dataset in the 7-Scenes layout: 80x60 textured images, planar depth (mm), poses."""
    root = tmp_path / "seq-01"
    root.mkdir()
    (root / "camera-intrinsics.txt").write_text("70 0 40\n0 70 30\n0 0 1\n")
    rng = np.random.default_rng(0)
    for k in range(4):
        stem = root / f"frame-{k:06d}"
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(f"{stem}.color.png")
        depth = (1500 + 10 * np.arange(80)[None, :] + 0 * np.arange(60)[:, None]).astype(np.uint16)
        depth[:5, :5] = 0  # some invalid pixels
        Image.fromarray(depth).save(f"{stem}.depth.png")
        np.savetxt(f"{stem}.pose.txt", _pose(3.0 * k, (0.05 * k, 0.0, 0.01 * k)))
    return root


# ------------------------------------------------------------------------------------------------
# GT resampling and intrinsics
# ------------------------------------------------------------------------------------------------


def test_gt_depth_at_network_samples_the_nearest_original_pixel():
    H0, W0 = 480, 640
    depth = np.tile(np.arange(W0, dtype=np.float32), (H0, 1)) + 1000 * np.arange(H0, dtype=np.float32)[:, None]
    meta = load_image_arrays([np.zeros((H0, W0, 3), np.uint8)], size=224)[0].meta
    out = gt_depth_at_network(depth, meta)
    assert out.shape == (224, 224)
    col, row = out % 1000, out // 1000
    # network pixel u sits over original x = (u + left + 0.5) * s - 0.5 (s = 640/299)
    s = W0 / meta.resized_size[0]
    u = np.arange(224)
    expect_x = (u + meta.crop_box[0] + 0.5) * s - 0.5
    assert np.abs(col[0] - expect_x).max() <= 0.5 + 1e-9
    expect_y = (u + 0.5) * (H0 / 224) - 0.5
    assert np.abs(row[:, 0] - expect_y).max() <= 0.5 + 1e-9
    # the crop keeps the centre: the middle network column is over the image's middle
    assert abs(col[0, 112] - 320) < 2


def test_gt_depth_identity_meta_is_exact():
    depth = np.random.default_rng(0).uniform(1, 5, (64, 64)).astype(np.float32)
    meta = load_image_arrays([np.zeros((64, 64, 3), np.uint8)], size=64, square_ok=True)[0].meta
    assert meta.crop_box == (0, 0, 64, 64) and meta.resized_size == (64, 64)
    np.testing.assert_array_equal(gt_depth_at_network(depth, meta), depth)


def test_intrinsics_to_network_inverts_intrinsics_to_original():
    meta = load_image_arrays([np.zeros((480, 640, 3), np.uint8)], size=224)[0].meta
    K = np.array([[585.0, 0.0, 320.0], [0.0, 580.0, 240.0], [0.0, 0.0, 1.0]])
    Kn = meta.intrinsics_to_network(K)
    back = meta.intrinsics_to_original(torch.from_numpy(Kn)).numpy()
    np.testing.assert_allclose(back, K, atol=1e-9)
    assert abs(Kn[0, 2] - 112) < 1.0 and abs(Kn[1, 2] - 112) < 1.0


def test_select_indices():
    assert select_indices(10, 3, 2, 1) == [1, 3, 5]
    assert select_indices(4) == [0, 1, 2, 3]
    with pytest.raises(PointmapError):
        select_indices(4, stride=0)
    with pytest.raises(PointmapError):
        select_indices(4, start=7)


# ------------------------------------------------------------------------------------------------
# Perfect predictions score perfectly
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_scene():
    return make_synthetic_scene(n_images=4, size=(64, 48), noise=0.0, distortion=0.0, n_blobs=0, seed=3)


def test_reference_pnp_poses_of_exact_pointmaps_are_exact(clean_scene):
    poses, ok = AP.reference_pnp_poses(clean_scene.preds, reference=0, conf_threshold=1.0)
    assert all(ok)
    out = M.multiview_pose_metrics(poses, clean_scene.poses.numpy())
    assert out["RRA@5"] == 1.0 and out["RTA@5"] == 1.0
    assert out["rot_err_mean_deg"] < 0.5 and out["trans_err_mean_deg"] < 0.5
    ident = M.multiview_pose_metrics(M.identity_poses(4), clean_scene.poses.numpy())
    assert ident["RTA@30"] == 0.0


def test_two_view_estimates_of_exact_pointmaps_are_exact(clean_scene):
    sub = clean_scene.preds.subset([1, 2])
    assert sub.pairs == [(0, 1), (1, 0)] and sub.n_images == 2
    P = clean_scene.poses.numpy().astype(np.float64)
    T_gt = np.linalg.inv(P[2]) @ P[1]
    for name, T_est in AP.two_view_estimates(sub, conf_threshold=1.0).items():
        err = M.two_view_pose_error(T_est, T_gt)
        assert err < 0.5, name
    assert M.pose_auc([0.0, 0.0])["AUC@5"] == 1.0


def test_place_query_with_exact_pointmaps(clean_scene):
    s = clean_scene
    k = s.preds.index(0, 1)
    db_world = depth_to_world(s.depths[1].double(), s.intrinsics[1].double(), s.poses[1].double()).numpy()
    view = AP.QueryView(s.preds.pts3d_1[k], s.preds.conf_1[k], s.preds.pts3d_2_in_1[k], s.preds.conf_2[k], db_world)
    p = AP.place_query([view], s.intrinsics[0].numpy(), conf_threshold=1.0)
    assert p.n_matches > 100 and p.conf_fallback == 0 and p.placed
    assert p.inliers > 0.9 * p.n_matches and p.confidence == p.inliers / p.n_matches
    t_err, r_err = M.localization_errors(p.cam2world[None], s.poses[0].numpy()[None])
    assert t_err[0] < 0.02 and r_err[0] < 0.5
    # a database view whose world points are scrambled gives no consistent pose: not placed
    scrambled = np.random.default_rng(0).permutation(db_world.reshape(-1, 3)).reshape(db_world.shape)
    bad = AP.place_query([AP.QueryView(view.pts_query, view.conf_query, view.pts_db_in_query, view.conf_db,
                                       scrambled)], s.intrinsics[0].numpy(), conf_threshold=1.0)
    assert not bad.placed and bad.confidence < 0.1


def test_nearest_database_frame_prefers_same_direction():
    q = _pose(0, (0, 0, 0))
    db = np.stack([_pose(180, (0.01, 0, 0)), _pose(10, (0.5, 0, 0)), _pose(5, (1.0, 0, 0))])
    assert AP.nearest_database_frame(q, db) == 1
    assert AP.nearest_database_frame(q, db, max_angle_deg=1.0) == 0  # none within 1 deg: nearest centre


def test_reconstruction_scores_perfect_and_trivial():
    rng = np.random.default_rng(0)
    gt = [np.dstack([rng.uniform(-1, 1, (12, 16)), rng.uniform(-1, 1, (12, 16)), rng.uniform(2, 4, (12, 16))]) for _ in range(3)]
    gt[0][0, 0] = np.nan  # unknown GT
    sim = M.Similarity(roma.random_rotmat(dtype=torch.float64).numpy(), np.array([1.0, 2.0, 3.0]), 0.3)
    pred = [sim.apply_points(np.nan_to_num(g)) for g in gt]
    masks = [np.ones((12, 16), bool)] * 3
    out, fitted = T.reconstruction_scores(pred, masks, gt, threshold=0.01)
    assert out["accuracy"] < 1e-2 and out["completeness"] < 1e-9 and out["fscore"] > 0.99
    assert abs(fitted.s * sim.s - 1) < 1e-6
    planes = T.trivial_planes([(12, 16)] * 3)
    base, _ = T.reconstruction_scores(planes, masks, gt, threshold=0.01)
    assert base["overall"] > 10 * out["overall"]
    empty, _ = T.reconstruction_scores(pred, [np.zeros((12, 16), bool)] * 3, gt)
    assert np.isnan(empty["accuracy"]) and empty["n_correspondences"] == 0


def test_depth_task_with_gt_derived_predictions_scores_zero(sevenscenes_dir, tiny_model, monkeypatch, tmp_path):
    """Replace the network output by GT depth (times an arbitrary scale): AbsRel 0, delta1 1."""
    from pointmap.eval.readers import read_dataset

    frames = read_dataset(sevenscenes_dir).frames

    def fake_infer(model, images, pairs, **kw):
        pts, conf = [], []
        for i, j in pairs:
            gt = gt_depth_at_network(frames[i].load_depth(), images[i].meta)
            z = torch.from_numpy(np.where(gt > 0, 3.7 * gt, 1.0)).float()
            pts.append(torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], -1))
            conf.append(torch.full_like(z, 5.0))
        return PairPredictions(list(pairs), pts, conf, pts, conf, n_images=len(images))

    monkeypatch.setattr(depth_task, "infer_pairs", fake_infer)
    res, items = T.eval_depth(sevenscenes_dir, tmp_path / "rep", T.TaskOptions(model=tiny_model, device="cpu", plots=False))
    assert res["ours"]["abs_rel"] < 1e-6 and res["ours"]["delta1"] == 1.0 and res["ours"]["n_images"] == 4
    assert res["baselines"]["constant depth (trivial)"]["abs_rel"] > 0.01
    assert len(items) == 4 and all(abs(it["scale"] - 1 / 3.7) < 1e-5 for it in items)


def test_synthetic_pair_errors_of_exact_pointmaps():
    from pointmap.train.synthetic import SyntheticConfig, render_pair_batch

    v1, v2 = render_pair_batch(SyntheticConfig(split="val", resolution=(48, 48), n_textures=8, texture_size=32,
                                               shadows=False), [0])
    P0, P1 = v1["camera_pose"][0].double(), v2["camera_pose"][0].double()

    def cam(pts, P):
        Pi = torch.linalg.inv(P)
        return torch.nan_to_num((pts.double() @ Pi[:3, :3].T + Pi[:3, 3]).float())

    c1 = v1["valid_mask"][0].float() * 4 + 1.01
    c2 = v2["valid_mask"][0].float() * 4 + 1.01
    preds = PairPredictions([(0, 1), (1, 0)], [cam(v1["pts3d"][0], P0), cam(v2["pts3d"][0], P1)], [c1, c2],
                            [cam(v2["pts3d"][0], P0), cam(v1["pts3d"][0], P1)], [c2, c1], n_images=2)
    T_gt = (torch.linalg.inv(P0) @ P1).numpy()
    r, t = synthetic_pair_errors(preds, T_gt)
    assert r < 0.1 and t < 0.5
    r, t = synthetic_pair_errors(preds, T_gt, K1=v2["camera_intrinsics"][0].numpy())
    assert r < 0.1 and t < 0.5


# ------------------------------------------------------------------------------------------------
# End to end with a tiny random network
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task,opts,n_items", [
    ("multiview_pose", {"max_views": 3}, 3),
    ("two-view-pose", {"max_pairs": 2}, 2),
    ("depth", {"max_images": 2}, 2),
    ("visloc", {"n_queries": 1}, 1),
    ("reconstruction", {"max_views": 3, "conf_threshold": 0.0}, 3),
])
def test_tasks_end_to_end(task, opts, n_items, sevenscenes_dir, tiny_model, tmp_path):
    out = tmp_path / "report"
    res, items = T.run_eval(task, sevenscenes_dir, out, model=tiny_model, device="cpu", plots=False, **opts)
    assert set(res) == {"task", "dataset", "ours", "variants", "baselines", "info"}
    assert res["baselines"] and len(items) == n_items
    doc = json.loads((out / "results.json").read_text())
    assert doc["task"].startswith(res["task"]) and doc["per_item"] and "ours" in (out / "summary.md").read_text()
    for b in res["baselines"].values():
        assert set(b) <= set(res["ours"]) | {"n_images"}


def test_multiview_pose_report_with_plots(sevenscenes_dir, tiny_model, tmp_path):
    pytest.importorskip("matplotlib")
    res, _ = T.eval_multiview_pose(sevenscenes_dir, tmp_path, T.TaskOptions(model=tiny_model, device="cpu"), max_views=3)
    assert (tmp_path / "trajectory.png").is_file() and (tmp_path / "pair_errors.png").is_file()
    assert res["ours"]["n_pairs"] == 3 and 0.0 <= res["ours"]["RRA@15"] <= 1.0


def test_baseline_ratio_analytic():
    T01 = np.eye(4)
    T01[:3, 3] = (0.3, 0.0, 0.4)  # |t| = 0.5
    depth = np.full((4, 5), 10.0)
    depth[0] = 1000.0  # invalid pixels must not count
    valid = np.ones((4, 5), dtype=bool)
    valid[0] = False
    assert synthetic_baseline_ratio(T01, depth, valid) == pytest.approx(0.05)
    assert np.isnan(synthetic_baseline_ratio(T01, depth, np.zeros_like(valid)))


def test_by_baseline_bins():
    ratios = [0.001, 0.019, 0.02, 0.049, 0.07, 0.1, 0.5, float("nan")]
    items = [{"baseline_ratio": r, "rot_err_deg": 1.0, "trans_err_deg": 5.0 if r < 0.05 else 40.0} for r in ratios]
    bins = SE._by_baseline(items)
    assert list(bins) == ["< 0.02", "0.02-0.05", "0.05-0.1", ">= 0.1"]
    assert [b["n_pairs"] for b in bins.values()] == [2, 2, 1, 2]  # the nan ratio is in no bin
    assert bins["< 0.02"]["frac_trans_lt15"] == 1.0 and bins[">= 0.1"]["frac_trans_lt15"] == 0.0
    assert bins[">= 0.1"]["trans_err_median_deg"] == 40.0


def test_synthetic_end_to_end(tiny_model, tmp_path):
    tiny_model.recommended_conf_threshold = 1.25
    try:
        res, items = T.run_eval("synthetic", None, tmp_path, model=tiny_model, device="cpu", n_pairs=2,
                                batch_size=2, plots=False)
    finally:
        tiny_model.recommended_conf_threshold = 3.0
    assert res["info"]["conf_threshold"] == 1.25  # None -> the model's recommended threshold
    assert all(np.isfinite(it["baseline_ratio"]) and it["baseline_ratio"] > 0 for it in items)
    assert sum(b["n_pairs"] for b in res["info"]["by_baseline"].values()) == 2
    assert len(items) == 2 and res["ours"]["n_pairs"] == 2
    assert set(res["info"]["targets"]) == set(TARGETS)
    assert all(isinstance(v["pass"], bool) for v in res["info"]["targets"].values())
    assert (tmp_path / "results.json").is_file()
    res, _ = eval_synthetic(model=tiny_model, device="cpu", n_pairs=1, batch_size=1, conf_threshold=0.0, plots=False)
    assert res["info"]["conf_threshold"] == 0.0
    with pytest.raises(PointmapError):
        eval_synthetic(model=tiny_model, n_pairs=0)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_bad_dataset_path(tmp_path, tiny_model):
    with pytest.raises(DatasetError, match="does not exist"):
        T.run_eval("depth", tmp_path / "missing", None, model=tiny_model)


def test_missing_file(sevenscenes_dir, tiny_model):
    (sevenscenes_dir / "frame-000002.color.png").unlink()
    with pytest.raises(DatasetError, match="frame-000002"):
        T.run_eval("multiview_pose", sevenscenes_dir, None, model=tiny_model)


def test_unknown_layout_task_and_option(sevenscenes_dir, tiny_model, tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset layout 'bogus'"):
        T.run_eval("depth", sevenscenes_dir, None, model=tiny_model, layout="bogus")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="cannot recognise"):
        T.run_eval("depth", tmp_path / "empty", None, model=tiny_model)
    with pytest.raises(PointmapError, match="unknown eval task 'bogus'"):
        T.run_eval("bogus", sevenscenes_dir, None, model=tiny_model)
    with pytest.raises(PointmapError, match="max_viewz"):
        T.run_eval("multiview_pose", sevenscenes_dir, None, model=tiny_model, max_viewz=3)


def test_dataset_without_poses_or_depth(tmp_path, tiny_model):
    root = tmp_path / "rgbd_dataset_freiburg3_demo"
    (root / "rgb").mkdir(parents=True)
    for k in range(2):
        Image.fromarray(np.full((48, 64, 3), 40 * k, np.uint8)).save(root / "rgb" / f"{100 + k}.000000.png")
    with pytest.raises(DatasetError, match="needs GT camera poses"):
        T.run_eval("multiview_pose", root, None, model=tiny_model)
    with pytest.raises(DatasetError, match="needs GT depth"):
        T.run_eval("depth", root, None, model=tiny_model)


# ------------------------------------------------------------------------------------------------
# Real data (skipped without the evaluation folder)
# ------------------------------------------------------------------------------------------------


def test_bundled_model_depth_on_nyuv2(data_dir):
    res, items = T.run_eval("depth", data_dir / "nyuv2_metric3d_demo", None, device="cpu", max_images=1, plots=False)
    assert len(items) == 1 and items[0]["n_valid"] > 10_000
    assert 0.0 < res["ours"]["abs_rel"] < 1.0
    assert 0.0 < res["baselines"]["constant depth (trivial)"]["abs_rel"] < 1.0
