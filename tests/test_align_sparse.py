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
    # measured: 0.12 deg, 0.07 %, 0.08 % (the dense alignment: 0.14 deg, 0.17 %, 0.32 %)
    assert rot < 0.25 and centre < 0.003 and focal < 0.003, (rot, centre, focal)
    # dense depth from each image's own pointmap, in the scene's frame: it lands on the truth
    s = torch.linalg.norm(scene.poses[1, :3, 3] - scene.poses[0, :3, 3]) / torch.linalg.norm(
        gt.poses[1, :3, 3] - gt.poses[0, :3, 3])
    ratio = scene.depths[0][scene.masks[0]] / (s * gt.depths[0][scene.masks[0]])
    assert abs(float(ratio.median()) - 1) < 0.01


def test_sparse_without_the_matches_stage_is_worse(scene8):
    """The optimisation matters: initialisation alone is clearly less accurate (measured: 0.57
    against 0.12 deg)."""
    gt, matches = scene8
    init = sparse_align(gt.preds, matches, sparse=SparseConfig(coarse_iters=0, fine_iters=0))
    full = sparse_align(gt.preds, matches)
    assert 2 * _errors(full, gt)[0] < _errors(init, gt)[0]


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
    focal = ((scene.intrinsics[:, 0, 0] - gt.focals).abs() / gt.focals).max()
    # measured: 0.14 %, 0.07 deg, 0.08 %
    assert float(err) < 0.005 and float(rot.median()) < 0.2 and float(focal) < 0.003, (float(err), rot, focal)


def test_auto_alignment_method():
    from pointmap.api import SPARSE_AUTO_PAIRS, choose_align_method
    from pointmap.errors import PointmapError

    assert choose_align_method("auto", False, 10) == "dense"
    assert choose_align_method("auto", True, 10) == "sparse"
    assert choose_align_method("auto", False, SPARSE_AUTO_PAIRS) == "sparse"
    assert choose_align_method("dense", True, 10**6) == "dense"
    with pytest.raises(PointmapError, match="align_method"):
        choose_align_method("fast", False, 10)


@pytest.mark.parametrize("assembly", ["dense", "sparse"])
@pytest.mark.parametrize("fn_name", ["res3d", "res2d"])
def test_sparse_normal_equations_match_finite_differences(fn_name, assembly, monkeypatch):
    """The Gauss-Newton system (jacfwd per match, scattered into the unknowns, shared focal and
    a fixed root) equals J^T J and J^T r of a central-difference Jacobian of all residuals."""
    from pointmap.align import sparse_model as sm
    from pointmap.align import sparse_solve as sp

    g = torch.Generator().manual_seed(0)
    N, M, G = 3, 40, 4
    d = torch.float64
    ii = torch.randint(0, N, (M,), generator=g)
    jj = (ii + 1 + torch.randint(0, N - 1, (M,), generator=g)) % N
    xy = lambda: torch.rand(M, 2, generator=g, dtype=d) * torch.tensor([63.0, 47.0], dtype=d)  # noqa: E731
    bw = lambda: torch.softmax(torch.randn(M, 4, generator=g, dtype=d), 1)  # noqa: E731
    an = lambda: torch.randint(0, G, (M, 4), generator=g)  # noqa: E731
    cols = torch.full((N, sm.NP + G), -1, dtype=torch.long)
    cols[1, :6], cols[2, :6] = torch.arange(0, 6), torch.arange(6, 12)  # image 0: the gauge
    cols[:, 6] = 12  # one shared focal
    cols[0, sm.NP + 1:] = torch.arange(13, 16)
    cols[1:, sm.NP:] = torch.arange(16, 24).reshape(2, 4)
    pb = sp.Problem(ii, jj, xy(), xy(), 2 + torch.rand(M, generator=g, dtype=d),
                     2 + torch.rand(M, generator=g, dtype=d), an(), an(), bw(), bw(),
                     0.5 + torch.rand(M, generator=g, dtype=d), torch.tensor([[32.0, 24.0]] * N, dtype=d),
                     torch.zeros(N, 1, 2, dtype=d), torch.zeros(N, 1, 2, dtype=d), torch.zeros(N, 1, dtype=d),
                     cols, 24)
    R = roma.rotvec_to_rotmat(0.1 * torch.randn(N, 3, generator=g, dtype=d))
    st = sp.State(R, 0.3 * torch.randn(N, 3, generator=g, dtype=d), torch.full((N,), 4.1, dtype=d),
                   0.1 * torch.randn(N, G, generator=g, dtype=d))
    fn = getattr(sm, fn_name)

    def residuals(s):
        L, consts = sp.local(pb, s, slice(0, M))
        return (torch.func.vmap(fn)(L, *consts) * pb.w[:, None]).reshape(-1)

    h = 1e-6
    J = torch.stack([(residuals(st.step(pb, h * e)) - residuals(st.step(pb, -h * e))) / (2 * h)
                     for e in torch.eye(pb.n_cols, dtype=d)], 1)
    H, grad, _ = sp.normal_equations(pb, st, fn, sigma=1e12, dense=assembly == "dense")  # plain least squares
    H = H if isinstance(H, torch.Tensor) else torch.from_numpy(H.toarray())
    torch.testing.assert_close(H, J.T @ J, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, J.T @ residuals(st), rtol=1e-5, atol=1e-6)


def test_sparse_normal_equations_solved_sparse_agree(scene8, monkeypatch):
    """Many images assemble and solve the normal equations sparse (scipy): same scene as dense."""
    from pointmap.align import AlignConfig

    gt, matches = scene8
    dense = sparse_align(gt.preds, matches)
    sparse = sparse_align(gt.preds, matches, config=AlignConfig(dense_solve_bytes=0))
    torch.testing.assert_close(sparse.poses, dense.poses, rtol=0, atol=1e-4)
    torch.testing.assert_close(sparse.intrinsics, dense.intrinsics, rtol=1e-5, atol=0)


@pytest.mark.parametrize("fn_name", ["res3d", "res2d"])
def test_sparse_analytic_jacobian_equals_jacfwd(fn_name):
    """The batched analytic residuals and Jacobians equal the plain per-match residuals and their
    forward-mode automatic derivatives."""
    from pointmap.align import sparse_model as sm

    g = torch.Generator().manual_seed(1)
    m, d = 64, torch.float64
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=d)  # noqa: E731
    uni = lambda *shape: torch.rand(*shape, generator=g, dtype=d)  # noqa: E731
    L = torch.cat([0.05 * rnd(m, 3), 0.3 * rnd(m, 3), 4 + 0.1 * rnd(m, 1), 0.1 * rnd(m, 4)] * 2, 1)
    L[:, 14] += 0.5  # the second camera elsewhere
    consts = (torch.softmax(rnd(m, 4), 1), torch.softmax(rnd(m, 4), 1), 2 + uni(m), 2 + uni(m),
              64 * uni(m, 2), 64 * uni(m, 2), torch.full((m, 2), 32.0, dtype=d), torch.full((m, 2), 24.0, dtype=d),
              roma.rotvec_to_rotmat(0.1 * rnd(m, 3)), roma.rotvec_to_rotmat(0.1 * rnd(m, 3)))
    L[:, :3] = L[:, 11:14] = 0  # residuals are linearised at zero rotation increments
    consts[9][:4] = -consts[9][:4]  # a few points behind the second camera (clamped depth)
    fn = getattr(sm, fn_name)
    r, J = sm.JAC[fn](L, *consts)
    torch.testing.assert_close(r, torch.func.vmap(fn)(L, *consts))
    torch.testing.assert_close(J, torch.func.vmap(torch.func.jacfwd(fn))(L, *consts))


def test_sparse_config_robust_scales():
    from pointmap.errors import PointmapError

    assert SparseConfig(fine_px=1.5).fine_px == (1.5,)
    assert SparseConfig().fine_px == (16.0, 4.0, 1.5)
    with pytest.raises(PointmapError, match="coarse_rel"):
        SparseConfig(coarse_rel=(0.1, 0.0))
