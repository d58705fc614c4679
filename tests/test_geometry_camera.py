"""Camera functions of :mod:`pointmap.geometry`, kornia style: batch shapes, round trips
(``project(unproject(d)) == pixels``), skew, and gradcheck in float64."""

import pytest
import roma
import torch

from pointmap.geometry import (
    depth_to_world,
    intrinsics_matrix,
    inverse_pose,
    pixel_grid,
    project,
    rigid_registration,
    unproject_depth,
)
from pointmap.geometry.camera import pixels_to_world, unproject_pixels

H, W = 5, 7


def _K(batch=(), skew=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    f = 20 + 10 * torch.rand(batch + (2,), generator=g, dtype=dtype)
    pp = torch.tensor([W / 2, H / 2], dtype=dtype) + torch.rand(batch + (2,), generator=g, dtype=dtype)
    K = intrinsics_matrix(f, pp)
    K[..., 0, 1] = skew
    return K


def _depth(batch=(), dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return 1 + 3 * torch.rand(batch + (H, W), generator=g, dtype=dtype)


def _pose(batch=(), dtype=torch.float64):
    g = torch.Generator().manual_seed(2)
    T = torch.eye(4, dtype=dtype).repeat(batch + (1, 1))
    T[..., :3, :3] = roma.rotvec_to_rotmat(0.3 * torch.randn(batch + (3,), generator=g, dtype=dtype))
    T[..., :3, 3] = torch.randn(batch + (3,), generator=g, dtype=dtype)
    return T


@pytest.mark.parametrize("batch", [(), (1,), (3,), (2, 3)])
def test_unproject_and_depth_to_world_batch_shapes(batch):
    d, K, T = _depth(batch), _K(batch), _pose(batch)
    assert unproject_depth(d, K).shape == batch + (H, W, 3)
    assert depth_to_world(d, K, T).shape == batch + (H, W, 3)
    flat = unproject_depth(d.reshape(-1, H, W), K.reshape(-1, 3, 3)).reshape(batch + (H, W, 3))
    assert torch.equal(unproject_depth(d, K), flat)  # batching is element-wise
    uv, z = project(unproject_depth(d, K).flatten(-3, -2), K)
    assert uv.shape == batch + (H * W, 2) and z.shape == batch + (H * W,)


@pytest.mark.parametrize("skew", [0.0, 1.5, -4.0])
def test_project_unproject_round_trip_with_skew(skew):
    d, K = _depth((2,)), _K((2,), skew=skew)
    pts = unproject_depth(d, K)
    assert torch.allclose(pts[..., 2], d)
    uv, z = project(pts.flatten(-3, -2), K)
    grid = pixel_grid(H, W, dtype=torch.float64).reshape(-1, 2).expand_as(uv)
    assert torch.allclose(uv, grid, atol=1e-10) and torch.allclose(z, d.flatten(-2))


def test_skew_moves_x_only_and_by_the_analytic_amount():
    d = torch.full((H, W), 2.0, dtype=torch.float64)
    K0, Ks = _K(), _K(skew=3.0)
    p0, ps = unproject_depth(d, K0), unproject_depth(d, Ks)
    assert torch.equal(p0[..., 1:], ps[..., 1:])
    v = torch.arange(H, dtype=torch.float64)[:, None]
    expect = -3.0 * (v - K0[1, 2]) / K0[1, 1] / K0[0, 0] * d
    assert torch.allclose(ps[..., 0] - p0[..., 0], expect, atol=1e-12)


def test_depth_to_world_is_pose_of_unprojection_and_inverts_with_inverse_pose():
    d, K, T = _depth((2,)), _K((2,), skew=0.7), _pose((2,))
    world = depth_to_world(d, K, T)
    cam = unproject_depth(d, K)
    for b in range(2):
        assert torch.allclose(world[b], cam[b] @ T[b, :3, :3].T + T[b, :3, 3])
    Ti = inverse_pose(T)
    local = world @ Ti[:, None, :3, :3].transpose(-1, -2) + Ti[:, None, None, :3, 3]
    assert torch.allclose(local, cam, atol=1e-10)


def test_gradcheck_camera_functions():
    d = _depth((1,))[..., :3, :4].clone().requires_grad_(True)
    K = _K((1,), skew=0.5).requires_grad_(True)
    T = _pose((1,)).requires_grad_(True)
    assert torch.autograd.gradcheck(unproject_depth, (d, K))
    assert torch.autograd.gradcheck(depth_to_world, (d, K, T))
    pts = (torch.rand(1, 6, 3, dtype=torch.float64) + torch.tensor([0, 0, 1.0], dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, k: project(p, k)[0], (pts, K))


def test_gradcheck_rigid_registration():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = (2 * x @ roma.rotvec_to_rotmat(torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64)).T + 1
         + 0.01 * torch.randn(8, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: rigid_registration(x, t)[0], (y,))


@pytest.mark.parametrize("skew", [0.0, 0.7])
def test_points_at_chosen_pixels_are_the_full_maps_at_those_pixels(skew):
    K, d, T = _K((2,), skew), _depth((2,)), _pose((2,))
    idx = torch.tensor([0, 3, 8, 20, H * W - 1])
    uv = pixel_grid(H, W, dtype=torch.float64).reshape(H * W, 2)[idx]
    got = pixels_to_world(uv.expand(2, -1, -1), d.reshape(2, H * W)[:, idx], K, T)
    assert torch.equal(got, depth_to_world(d, K, T).reshape(2, H * W, 3)[:, idx])  # the same bits
    cam = unproject_pixels(uv, d[1].reshape(-1)[idx], K[1])
    assert torch.equal(cam, unproject_depth(d[1], K[1]).reshape(H * W, 3)[idx])
