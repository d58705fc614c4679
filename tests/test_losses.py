"""Losses against hand-computed values on 2-3 pixel pointmaps."""

from __future__ import annotations

import math

import pytest
import torch

from pointmap.train.losses import (
    L21,
    ConfLoss,
    Regr3D,
    Regr3DScaleShiftInv,
    build_criterion,
    normalize_pointcloud,
)


def _pose(angle: float = 0.0, t=(0.0, 0.0, 0.0)) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    T[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return T


def _to_world(T: torch.Tensor, pts_cam: torch.Tensor) -> torch.Tensor:
    return (pts_cam.double() @ T[:3, :3].T + T[:3, 3]).float()


def _case(pose1: torch.Tensor):
    """GT in view-1 camera: view1 (0,0,3), (0,4,0); view2 (0,0,5) valid, (100,0,0) invalid."""
    cam1 = torch.tensor([[[[0.0, 0, 3], [0, 4, 0]]]])  # (1, 1, 2, 3)
    cam2 = torch.tensor([[[[0.0, 0, 5], [100, 0, 0]]]])
    gt1 = {"pts3d": _to_world(pose1, cam1), "valid_mask": torch.tensor([[[True, True]]]),
           "camera_pose": pose1[None].float()}
    gt2 = {"pts3d": _to_world(pose1, cam2), "valid_mask": torch.tensor([[[True, False]]]),
           "camera_pose": _pose(0.3, (1, 2, 3))[None].float()}
    pred1 = {"pts3d": torch.tensor([[[[0.0, 0, 6], [0, 8, 0]]]], requires_grad=True),
             "conf": torch.tensor([[[2.0, 3.0]]])}
    pred2 = {"pts3d_in_other_view": torch.tensor([[[[0.0, 0, 16], [7, 7, 7]]]], requires_grad=True),
             "conf": torch.tensor([[[4.0, 100.0]]])}
    return gt1, gt2, pred1, pred2


def test_l21():
    a = torch.tensor([[0.0, 3, 4], [1, 1, 1]])
    b = torch.zeros(2, 3)
    assert torch.allclose(L21()(a, b), torch.tensor([5.0, math.sqrt(3)]))
    assert torch.allclose(L21("mean")(a, b), torch.tensor((5 + math.sqrt(3)) / 2))


@pytest.mark.parametrize("pose1", [_pose(), _pose(0.7, (0.5, -2.0, 4.0))])
def test_regr3d_hand_computed(pose1):
    gt1, gt2, pred1, pred2 = _case(pose1)
    # GT factor (3+4+5)/3 = 4 -> (0,0,.75), (0,1,0), (0,0,1.25);
    # pred factor (6+8+16)/3 = 10 -> (0,0,.6), (0,.8,0), (0,0,1.6)
    loss, details = Regr3D(L21(), norm_mode="avg_dis")(gt1, gt2, pred1, pred2)
    assert loss.item() == pytest.approx((0.15 + 0.2) / 2 + 0.35, abs=1e-5)
    assert details["Regr3D_pts3d_2"] == pytest.approx(0.35, abs=1e-5)
    loss.backward()
    assert pred2["pts3d_in_other_view"].grad[0, 0, 1].abs().sum() == 0  # invalid pixel


def test_conf_loss_hand_computed():
    gt1, gt2, pred1, pred2 = _case(_pose())
    loss, details = ConfLoss(Regr3D(L21()), alpha=0.2)(gt1, gt2, pred1, pred2)
    v1 = ((0.15 * 2 - 0.2 * math.log(2)) + (0.2 * 3 - 0.2 * math.log(3))) / 2
    v2 = 0.35 * 4 - 0.2 * math.log(4)
    assert loss.item() == pytest.approx(v1 + v2, abs=1e-5)
    assert details["conf_loss_1"] == pytest.approx(v1, abs=1e-5)
    # the invalid pixel's huge confidence is ignored; gradient reaches the confidence
    pred1["conf"].requires_grad_(True)
    loss, _ = ConfLoss(Regr3D(L21()), alpha=0.2)(gt1, gt2, pred1, pred2)
    loss.backward()
    assert pred1["conf"].grad[0, 0, 0].item() == pytest.approx((0.15 - 0.2 / 2) / 2, abs=1e-5)


@pytest.mark.parametrize(
    "mode,factor",
    [
        ("avg_dis", 4.0),
        ("median_dis", 4.0),
        ("sqrt_dis", ((math.sqrt(3) + 2 + math.sqrt(5)) / 3) ** 2),
        ("avg_log1p", (math.log(4) + math.log(5) + math.log(6)) / 3),
        ("avg_warp-log1p", (math.log(4) + math.log(5) + math.log(6)) / 3),
    ],
)
def test_normalization_factor(mode, factor):
    p1 = torch.tensor([[[[0.0, 0, 3], [0, 4, 0]]]])
    p2 = torch.tensor([[[[0.0, 0, 5], [100, 0, 0]]]])
    v1 = torch.tensor([[[True, True]]])
    v2 = torch.tensor([[[True, False]]])
    n1, n2, f = normalize_pointcloud(p1, p2, v1, v2, mode)
    assert f.item() == pytest.approx(factor, rel=1e-6)
    if mode == "avg_warp-log1p":  # points warped to distance log1p(d) then divided
        assert n1[0, 0, 0, 2].item() == pytest.approx(math.log(4) / factor, rel=1e-6)
    else:
        assert n2[0, 0, 0, 2].item() == pytest.approx(5 / factor, rel=1e-6)


def test_normalization_rejects_unknown_mode():
    p = torch.zeros(1, 1, 1, 3)
    v = torch.ones(1, 1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="norm_mode"):
        normalize_pointcloud(p, p, v, v, "mean_dis")


def test_scale_shift_inv_hand_computed():
    # GT z: 1, 2 | 3 ; pred z: 1, 2 | 5 (all on the optical axis)
    def pm(zs):
        return torch.tensor([[[[0.0, 0, z] for z in zs]]])

    gt1 = {"pts3d": pm([1, 2]), "valid_mask": torch.ones(1, 1, 2, dtype=torch.bool),
           "camera_pose": torch.eye(4)[None]}
    gt2 = {"pts3d": pm([3]), "valid_mask": torch.ones(1, 1, 1, dtype=torch.bool),
           "camera_pose": torch.eye(4)[None]}
    pred1 = {"pts3d": pm([1, 2]), "conf": torch.ones(1, 1, 2)}
    pred2 = {"pts3d_in_other_view": pm([5]), "conf": torch.ones(1, 1, 1)}
    # pred normalised by 8/3 -> 3/8, 6/8, 15/8; shifted by median 6/8 -> -3/8, 0, 9/8; scale 3/8;
    # GT shifted by 2 -> -1, 0, 1, scale 1 -> pred * (1 / (3/8)) = -1, 0, 3 -> losses 0, 0 | 2
    loss, _ = Regr3DScaleShiftInv(L21(), gt_scale=True)(gt1, gt2, pred1, pred2)
    assert loss.item() == pytest.approx(2.0, abs=1e-5)
    # a scaled + z-shifted prediction of the GT has zero loss
    pred1 = {"pts3d": pm([1, 2]) * 3 + torch.tensor([0, 0, 7.0]), "conf": torch.ones(1, 1, 2)}
    pred2 = {"pts3d_in_other_view": pm([3]) * 3 + torch.tensor([0, 0, 7.0]), "conf": torch.ones(1, 1, 1)}
    loss, _ = Regr3DScaleShiftInv(L21(), gt_scale=True)(gt1, gt2, pred1, pred2)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_build_criterion():
    c = build_criterion({"type": "conf", "alpha": 0.2})
    assert isinstance(c, ConfLoss) and c.alpha == 0.2 and c.pixel_loss.norm_mode == "avg_dis"
    t = build_criterion({"type": "scale_shift_inv"})
    assert isinstance(t, Regr3DScaleShiftInv) and t.gt_scale
    with pytest.raises(ValueError):
        build_criterion({"type": "conf", "bogus": 1})
