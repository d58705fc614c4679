"""Geometry on analytic cases: focal of an exact pinhole pointmap, Umeyama, PnP, 3D matching."""

import math

import roma
import torch

from pointmap.geometry import (
    confident_mask,
    estimate_focal,
    intrinsics_matrix,
    pnp_ransac,
    reciprocal_matches,
    rigid_registration,
    unproject_depth,
)


def _pinhole(H=24, W=32, f=40.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    depth = 2 + torch.rand(H, W, generator=g)
    K = intrinsics_matrix(torch.tensor(f), torch.tensor([W / 2, H / 2]))
    return unproject_depth(depth, K), K


def test_focal_of_exact_pinhole_pointmap():
    for f in (20.0, 40.0, 95.5):
        pts, _ = _pinhole(f=f)
        assert abs(float(estimate_focal(pts)) - f) < 1e-3 * f
        assert abs(float(estimate_focal(pts, mode="median")) - f) < 1e-3 * f
    batch = torch.stack([_pinhole(f=30.0)[0], _pinhole(f=60.0)[0]])
    assert torch.allclose(estimate_focal(batch), torch.tensor([30.0, 60.0]), rtol=1e-3)


def test_focal_with_other_principal_point():
    H, W, f = 24, 32, 50.0
    K = intrinsics_matrix(torch.tensor(f), torch.tensor([10.0, 7.0]))
    pts = unproject_depth(torch.full((H, W), 3.0), K)
    assert abs(float(estimate_focal(pts, pp=torch.tensor([10.0, 7.0]))) - f) < 1e-3
    assert abs(float(estimate_focal(pts)) - f) > 1.0  # the default (W/2, H/2) is wrong here


def test_umeyama_recovers_known_similarity():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 100, 3, generator=g)
    R = roma.random_rotmat(2)
    s = torch.tensor([0.5, 3.0])
    t = torch.randn(2, 3, generator=g)
    y = s[:, None, None] * x @ R.transpose(1, 2) + t[:, None]
    w = torch.rand(2, 100, generator=g) + 0.1
    s2, R2, t2 = rigid_registration(x, y, w)
    assert torch.allclose(s2, s, atol=1e-4)
    assert torch.allclose(R2, R, atol=1e-4)
    assert torch.allclose(t2, t, atol=1e-4)
    # weights matter: a corrupted point with zero weight does not move the estimate
    y[0, 0] += 100
    w[0, 0] = 0
    s3, R3, _ = rigid_registration(x[0], y[0], w[0])
    assert abs(float(s3) - 0.5) < 1e-4 and torch.allclose(R3, R[0], atol=1e-4)
    _, _, _ = rigid_registration(x[0], y[0], torch.zeros(100))  # all-zero weights: no NaN
    assert torch.isfinite(rigid_registration(x[0], y[0], torch.zeros(100))[0])


def test_symmetric_scale_is_exact_and_inverts_where_umeyama_shrinks():
    """Exact similarity: both scales recover it. Independent noise on both sides: Umeyama's
    scale and its reverse multiply to less than 1 (each biased low), the symmetric ones to 1."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 3, generator=g)
    R = roma.rotvec_to_rotmat(torch.tensor([0.3, -0.2, 0.4]))
    y = 2.5 * x @ R.T + torch.tensor([1.0, -2.0, 0.5])
    w = torch.rand(500, generator=g) + 0.5
    s, R2, t = rigid_registration(x, y, w, symmetric_scale=True)
    assert abs(float(s) - 2.5) < 1e-4 and torch.allclose(R2, R, atol=1e-5)
    assert torch.allclose(s * x @ R2.T + t, y, atol=1e-4)
    xn = x + 0.3 * torch.randn(500, 3, generator=g)
    yn = y + 0.75 * torch.randn(500, 3, generator=g)
    um = float(rigid_registration(xn, yn, w)[0] * rigid_registration(yn, xn, w)[0])
    sym = float(rigid_registration(xn, yn, w, symmetric_scale=True)[0]
                * rigid_registration(yn, xn, w, symmetric_scale=True)[0])
    assert um < 0.9 and abs(sym - 1) < 1e-5, (um, sym)


def test_pnp_recovers_known_pose():
    pts_cam, K = _pinhole(f=40.0)
    c2w = torch.eye(4)
    c2w[:3, :3] = roma.rotvec_to_rotmat(torch.tensor([0.1, -0.2, 0.05]))
    c2w[:3, 3] = torch.tensor([0.3, -0.1, 0.5])
    world = pts_cam @ c2w[:3, :3].T + c2w[:3, 3]
    f, P = pnp_ransac(world, focal=40.0)
    assert f == 40.0
    assert torch.allclose(P, c2w, atol=1e-3)
    f2, P2 = pnp_ransac(world, iterations=100)  # focal searched on the geometric grid
    grid = torch.logspace(math.log10(16), math.log10(96), 21)
    assert float((grid - f2).abs().min()) < 1e-3  # one of the 21 candidates (ties: smallest)
    assert pnp_ransac(world, mask=torch.zeros(24, 32, dtype=torch.bool)) is None


def test_confident_mask_keeps_the_most_confident_when_too_few_pass():
    conf = torch.arange(100.0).reshape(10, 10)
    assert torch.equal(confident_mask(conf, 50.0), conf > 50)  # 49 pass >= max(16, 5): unchanged
    m = confident_mask(conf, 98.0)  # 1 passes: the 16 most confident instead
    assert torch.equal(m, conf >= 84)
    m = confident_mask(conf, 98.0, min_fraction=0.3, min_pixels=4)
    assert torch.equal(m, conf >= 70)
    assert bool(confident_mask(torch.ones(3, 3), math.inf).all())  # capped by the image size


def test_reciprocal_matches_identity():
    pts, _ = _pinhole(H=12, W=16)
    uv_a, uv_b = reciprocal_matches(pts, pts, subsample=1)
    assert len(uv_a) == 12 * 16
    assert torch.equal(uv_a, uv_b)
    m = torch.zeros(12, 16, dtype=torch.bool)
    m[:6] = True
    uv_a, uv_b = reciprocal_matches(pts, pts, subsample=1, mask1=m, mask2=m)
    assert len(uv_a) == 6 * 16 and torch.equal(uv_a, uv_b) and int(uv_a[:, 1].max()) == 5
