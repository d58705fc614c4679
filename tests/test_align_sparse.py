"""Sparse alignment from matches on synthetic scenes with exact ground truth."""

from __future__ import annotations

import pytest
import roma
import torch

from pointmap.align.sparse import SparseConfig, sparse_align
from pointmap.geometry.registration import rigid_registration
from pointmap.scene import Scene
from pointmap.testing.synthetic_pairs import make_synthetic_scene, synthetic_matches


def _errors(scene: Scene, gt) -> tuple[float, float, float]:
    """Median rotation error (deg), max centre error / extent, max relative focal error, after
    the similarity that best maps the estimated centres onto the true ones."""
    C, Cg = scene.poses[:, :3, 3].double(), gt.poses[:, :3, 3].double()
    s, R, t = rigid_registration(C, Cg)
    rot = roma.rotmat_geodesic_distance(R @ scene.poses[:, :3, :3].double(), gt.poses[:, :3, :3].double())
    centre = ((s * C @ R.T + t) - Cg).norm(dim=-1).max() / gt.extent
    focal = ((scene.intrinsics[:, 0, 0] - gt.focals).abs() / gt.focals).max()
    return float(rot.rad2deg().median()), float(centre), float(focal)


@pytest.fixture(scope="module")
def scene8():
    gt = make_synthetic_scene(8, size=(64, 48), graph="complete", seed=1)
    return gt, synthetic_matches(gt, gt.preds.pairs, step=4, outliers=0.1, seed=0)


def test_sparse_recovers_cameras_with_outlier_matches(scene8):
    gt, matches = scene8
    scene = sparse_align(gt.preds, matches, gt.imgs)
    assert isinstance(scene, Scene) and bool(scene.placed.all())
    rot, centre, focal = _errors(scene, gt)
    assert rot < 1.0 and centre < 0.02 and focal < 0.03, (rot, centre, focal)
    # dense depth from each image's own pointmap, in the scene's frame: it lands on the truth
    s = torch.linalg.norm(scene.poses[1, :3, 3] - scene.poses[0, :3, 3]) / torch.linalg.norm(
        gt.poses[1, :3, 3] - gt.poses[0, :3, 3])
    ratio = scene.depths[0][scene.masks[0]] / (s * gt.depths[0][scene.masks[0]])
    assert abs(float(ratio.median()) - 1) < 0.05


def test_sparse_without_the_matches_stage_is_worse(scene8):
    """The optimisation matters: initialisation alone is clearly less accurate."""
    gt, matches = scene8
    init = sparse_align(gt.preds, matches, sparse=SparseConfig(coarse_iters=0, fine_iters=0))
    full = sparse_align(gt.preds, matches)
    assert _errors(full, gt)[0] < _errors(init, gt)[0]


def test_sparse_keeps_known_poses_and_focals(scene8):
    gt, matches = scene8
    known = {0: gt.poses[0], 5: gt.poses[5]}
    scene = sparse_align(gt.preds, matches, known_poses=known, known_focals={2: float(gt.focals[2])})
    for k, P in known.items():
        assert torch.equal(scene.poses[k], P)
    assert float(scene.intrinsics[2, 0, 0]) == pytest.approx(float(gt.focals[2]), rel=1e-6)
    # two known poses fix frame and scale: the other cameras are in the true frame directly
    err = (scene.poses[:, :3, 3] - gt.poses[:, :3, 3]).norm(dim=-1).max() / gt.extent
    rot = roma.rotmat_geodesic_distance(scene.poses[:, :3, :3], gt.poses[:, :3, :3]).rad2deg()
    assert float(err) < 0.03 and float(rot.median()) < 1.0, (float(err), rot)


def test_auto_alignment_method():
    from pointmap.api import SPARSE_AUTO_PAIRS, choose_align_method
    from pointmap.errors import PointmapError

    assert choose_align_method("auto", False, 10) == "dense"
    assert choose_align_method("auto", True, 10) == "sparse"
    assert choose_align_method("auto", False, SPARSE_AUTO_PAIRS) == "sparse"
    assert choose_align_method("dense", True, 10**6) == "dense"
    with pytest.raises(PointmapError, match="align_method"):
        choose_align_method("fast", False, 10)
