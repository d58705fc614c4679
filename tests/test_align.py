"""Global alignment against synthetic scenes with exact ground truth."""

import pytest
import roma
import torch

from pointmap.align import (
    AlignConfig,
    align_components,
    align_pairs,
    clean_pointcloud,
    global_align,
    mask_sky,
    pair_scene,
)
from pointmap.align.data import build_edge_data
from pointmap.align.gauss_newton import (
    GNProblem,
    GNState,
    _linearise,
    _rays,
    _targets,
    loss_and_depth,
)
from pointmap.align.coarse import coarse_solve
from pointmap.align.common import KnownCameras
from pointmap.align.init import mst_init
from pointmap.align.reference import reference_optimise
from pointmap.errors import GraphError, PointmapError
from pointmap.geometry import align_multiple_poses
from pointmap.predictions import PairPredictions
from pointmap.testing.synthetic_pairs import make_synthetic_scene

SIZE = (64, 48)
SMALL = (32, 24)
NOISE = {"distortion": 0.005, "noise": 0.003, "n_blobs": 1}  # feature tests on tiny images


def _errors(scene, gt):
    """(max relative focal error, median rotation error deg, max centre error / extent)."""
    fe = ((scene.focals - gt.focals) / gt.focals).abs().max()
    s, R, T = align_multiple_poses(scene.poses, gt.poses)
    ang = roma.rotmat_geodesic_distance(R @ scene.poses[:, :3, :3], gt.poses[:, :3, :3]).rad2deg()
    C = s * scene.poses[:, :3, 3] @ R.T + T
    ce = (C - gt.poses[:, :3, 3]).norm(dim=-1).max() / gt.extent
    return float(fe), float(ang.median()), float(ce)


def _band_pairs(n, k=2):
    und = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + k + 1))]
    return und + [(j, i) for i, j in und]


@pytest.fixture(scope="module")
def scene10():
    # default generator noise: random pair scales, 2% smooth distortion, 1% pixel noise, 2 blobs
    return make_synthetic_scene(10, SIZE, seed=0)


@pytest.fixture(scope="module")
def small10():
    return make_synthetic_scene(10, SMALL, seed=0, **NOISE)


def test_ten_images_complete_graph(scene10):
    res = align_pairs(scene10.preds, scene10.imgs)
    fe, rot, ce = _errors(res.scene, scene10)
    assert fe < 0.01 and rot < 0.5 and ce < 0.02, (fe, rot, ce)
    assert res.loss < 0.5 * res.init_loss
    # dense depth matches the truth up to the similarity
    s, _, _ = align_multiple_poses(res.scene.poses, scene10.poses)
    d = torch.stack(res.scene.depths) * s
    assert float(((d - scene10.depths).abs() / scene10.depths).median()) < 0.02
    assert bool(res.scene.placed.all())


def test_forty_images_band_graph():
    gt = make_synthetic_scene(40, SIZE, pairs=_band_pairs(40), seed=1)
    res = align_pairs(gt.preds, gt.imgs)
    fe, rot, ce = _errors(res.scene, gt)
    assert fe < 0.01 and rot < 0.5 and ce < 0.02, (fe, rot, ce)


def test_squared_distance_loss(small10):
    res = align_pairs(small10.preds, config=AlignConfig(dist="l2"))
    fe, rot, ce = _errors(res.scene, small10)
    assert fe < 0.02 and rot < 0.5 and ce < 0.02, (fe, rot, ce)
    assert res.loss < 0.5 * res.init_loss


def test_reduced_system_matches_autograd_schur():
    """The closed-form depth-eliminated normal equations equal J^T W J of an autograd Jacobian
    followed by an explicit Schur complement of the (diagonal) depth block."""
    gt = make_synthetic_scene(3, (12, 8), seed=7)
    data = build_edge_data(gt.preds, torch.device("cpu"), 2, 4096, "log", None, 1 << 24, "float32", 0)
    kn = KnownCameras.from_inputs(gt.preds.image_shapes)
    init = mst_init(data, 3.0, 10, 5.0, 0.5, **kn.init_priors())
    R, C = init.poses[:, :3, :3], init.poses[:, :3, 3]
    st = GNState(R, C, init.focals.log()[:, None].repeat(1, 2), init.depth.clamp(min=0.1),
                 init.pw_R, init.pw_T, init.pw_s.log())
    none = torch.zeros(3, dtype=torch.bool)
    pb = GNProblem.build(data, kn.pp, none, none, False, False)
    _, _, w = loss_and_depth(st, pb, "l1", 1e-4, None, 0, 1 << 22)
    H, g = _linearise(st, pb, w, 1 << 22)
    N, n, E = 3, pb.shape[2], len(data.ei)

    def resid(xc, xe, xd):
        s2 = GNState(roma.rotvec_to_rotmat(xc[:, :3]) @ st.R, st.C + xc[:, 3:6], st.log_f + xc[:, 6:7],
                     st.depth * xd.exp(), roma.rotvec_to_rotmat(xe[:, :3]) @ st.Re, st.te + xe[:, 3:6],
                     st.log_s + xe[:, 6])
        X = s2.C[:, None] + s2.depth[..., None] * _rays(s2, pb, slice(0, N))
        Y, _ = _targets(s2, pb, slice(0, N))
        return ((X[:, None] - Y) * w[0][..., None].sqrt()).reshape(-1)

    x0 = (torch.zeros(N, 7), torch.zeros(E, 7), torch.zeros(N, n))
    J = torch.cat([j.reshape(j.shape[0], -1) for j in torch.autograd.functional.jacobian(resid, x0)], 1)
    J, r = J.double(), resid(*x0).double()
    P = 7 * (N + E)
    Hf, gf = J.T @ J, J.T @ r
    hd = Hf[P:, P:].diagonal()
    hinv = torch.where(hd > 0, 1 / hd, torch.zeros_like(hd))
    S = Hf[:P, :P] - (Hf[:P, P:] * hinv) @ Hf[P:, :P]
    gs = gf[:P] - Hf[:P, P:] @ (hinv * gf[P:])
    order = torch.cat([pb.cam_index.reshape(-1), pb.edge_index.reshape(-1)])
    sel = torch.nonzero(order < pb.n_unknowns).flatten()  # image 0's pose is the gauge
    assert len(sel) == pb.n_unknowns == P - 6
    o = order[sel]
    assert torch.allclose(H[o[:, None], o[None]], S[sel[:, None], sel[None]], rtol=0, atol=1e-5 * float(S.abs().max()))
    assert torch.allclose(g[o], gs[sel], rtol=0, atol=1e-5 * float(gs.abs().max()))


def test_fast_solver_reaches_the_reference_optimum():
    """LM ('gn') and the plain reference twin (Adam, reference schedule) find the same optimum."""
    gt = make_synthetic_scene(3, (12, 8), seed=7, **NOISE)
    preds = gt.preds
    res = align_pairs(preds, config=AlignConfig(coarse_stride=1, dense=False))
    data = build_edge_data(preds, torch.device("cpu"), 1, 4096, "log", None, 1 << 24, "float32", 0)
    init = mst_init(data, 3.0, 10, 5.0, 0.5)
    ref_loss, ref_poses, ref_focals = reference_optimise(preds, init, niter=300)
    assert res.loss <= ref_loss * (1 + 1e-5)
    assert abs(res.loss - ref_loss) < 1e-3 * ref_loss
    assert torch.allclose(res.scene.focals, ref_focals, rtol=2e-3)
    # same cameras up to the rigid gauge; the scale is pinned identically (pair-scale mean)
    s, R, T = align_multiple_poses(res.scene.poses, ref_poses)
    assert abs(float(s) - 1) < 2e-3
    C = s * res.scene.poses[:, :3, 3] @ R.T + T
    span = float((ref_poses[:, None, :3, 3] - ref_poses[:, :3, 3]).norm(dim=-1).max())
    assert float((C - ref_poses[:, :3, 3]).norm(dim=-1).max()) < 2e-3 * span


def test_known_poses_and_focals(small10):
    scene10 = small10
    sc = global_align(scene10.preds, known_poses=scene10.poses, known_focals=scene10.focals)
    assert torch.allclose(sc.poses, scene10.poses, atol=1e-5)
    assert torch.allclose(sc.focals, scene10.focals, atol=1e-4)
    # the scale is the true one: depths close to the truth without any alignment
    d = torch.stack(sc.depths)
    assert float(((d - scene10.depths).abs() / scene10.depths).median()) < 0.02


@pytest.mark.parametrize("which", [(0, 5, 9), (4,)])
def test_some_known_poses(small10, which):
    scene10 = small10
    known = {k: scene10.poses[k] for k in which}
    sc = global_align(scene10.preds, known_poses=known)
    for k, P in known.items():
        assert torch.allclose(sc.poses[k], P, atol=1e-5)
    if len(known) >= 2:  # frame and scale are fixed by the known poses
        ce = (sc.poses[:, :3, 3] - scene10.poses[:, :3, 3]).norm(dim=-1).max() / scene10.extent
        assert float(ce) < 0.02
    fe, rot, ce = _errors(sc, scene10)
    assert fe < 0.01 and rot < 0.5 and ce < 0.02, (fe, rot, ce)


@pytest.mark.parametrize("held", [(0, 3, 6), (2,)])
@pytest.mark.parametrize("dense", [False, True])
def test_known_depths_stay_exact_and_place_the_others(held, dense):
    """Exact predictions (no noise, distortion nor blobs), some images given with their true pose,
    intrinsics and depth (a hole of invalid pixels in each): those come back exactly as given, the
    others are found in the true frame and scale -- one known image fixes the scale by its depth."""
    gt = make_synthetic_scene(8, SMALL, graph="complete", seed=11, noise=0.0, distortion=0.0, n_blobs=0)
    K = gt.intrinsics
    depths = {k: gt.depths[k].clone() for k in held}
    for d in depths.values():
        d[:4, :6] = float("nan")
        d[-3:, -5:] = 0.0
    cfg = AlignConfig(dense=dense, coarse_stride=2)
    sc = global_align(gt.preds, config=cfg, known_poses={k: gt.poses[k] for k in held},
                      known_intrinsics={k: K[k] for k in held}, known_depths=depths)
    for k in held:
        assert torch.equal(sc.poses[k], gt.poses[k]) and torch.equal(sc.intrinsics[k], K[k])
        assert torch.equal(sc.depths[k].isnan(), depths[k].isnan())  # as given, its holes included
        assert torch.equal(torch.nan_to_num(sc.depths[k]), torch.nan_to_num(depths[k]))
        assert not sc.masks[k][:4, :6].any() and not sc.masks[k][-3:, -5:].any()
    free = [k for k in range(8) if k not in held]
    ce = (sc.poses[free, :3, 3] - gt.poses[free, :3, 3]).norm(dim=-1).max() / gt.extent
    ang = roma.rotmat_geodesic_distance(sc.poses[free, :3, :3], gt.poses[free, :3, :3]).rad2deg().max()
    fe = ((sc.focals[free] - gt.focals[free]) / gt.focals[free]).abs().max()
    assert float(ce) < 1e-3 and float(ang) < 0.05 and float(fe) < 1e-3, (float(ce), float(ang), float(fe))
    if dense:  # without the dense stage the depths are the coarse ones upsampled
        d = torch.stack([sc.depths[k] for k in free])
        assert float(((d - gt.depths[free]).abs() / gt.depths[free]).median()) < 1e-4


def test_uneven_degrees_are_linearised_in_runs_as_in_one(monkeypatch):
    """Images with few pairs before images with many are processed in two runs of their own widths;
    the normal equations and the loss are those of one run padded to the widest image."""
    import pointmap.align.gauss_newton as G

    few = [(i, i + 1) for i in range(5)]  # a chain of images 0-5
    many = [(i, j) for i in range(5, 10) for j in range(5, 10) if i != j]  # 5-9 with each other
    pairs = sorted(set(few + [(j, i) for i, j in few] + many))
    gt = make_synthetic_scene(10, (12, 8), pairs=pairs, seed=13)
    data = build_edge_data(gt.preds, torch.device("cpu"), 2, 4096, "log", None, 1 << 24, "float32", 0)
    init = mst_init(data, 3.0, 10, 5.0, 0.5)
    st = GNState(init.poses[:, :3, :3], init.poses[:, :3, 3], init.focals.log()[:, None].repeat(1, 2),
                 init.depth.clamp(min=0.1), init.pw_R, init.pw_T, init.pw_s.log())
    none = torch.zeros(10, dtype=torch.bool)
    pb = GNProblem.build(data, torch.tensor([[6.0, 4.0]]).repeat(10, 1), none, none, False, True)
    assert G._chunks(pb, 1 << 22) == [slice(0, 5), slice(5, 10)]

    def solve():
        loss, _, w = loss_and_depth(st, pb, "l1", 1e-4, None, 2, 1 << 22)
        return loss, *_linearise(st, pb, w, 1 << 22)

    runs = solve()
    monkeypatch.setattr(G, "_chunks", lambda pb, budget: [slice(0, 10)])
    one = solve()
    assert abs(runs[0] - one[0]) < 1e-6 * one[0]
    assert torch.allclose(runs[1], one[1], rtol=1e-5, atol=1e-6 * float(one[1].abs().max()))
    assert torch.allclose(runs[2], one[2], rtol=1e-5, atol=1e-6 * float(one[2].abs().max()))


def test_coarse_solver_holds_known_depths():
    """Noisy predictions pull every depth off the truth; the known ones stay where given."""
    gt = make_synthetic_scene(6, SMALL, seed=12, **NOISE)
    held = [1, 4]
    known = KnownCameras.from_inputs(gt.preds.image_shapes, {k: gt.poses[k] for k in held}, None,
                                     {k: gt.intrinsics[k] for k in held}, {k: gt.depths[k] for k in held})
    data = build_edge_data(gt.preds, torch.device("cpu"), 2, 4096, "log", known.depth_masks(None), 1 << 24,
                           "float32", 0)
    given, points = known.sampled_depths(data.idx, data.uv, data.valid)
    init = mst_init(data, 3.0, 10, 5.0, 0.5, **known.init_priors(), depths=given, points=points)
    assert torch.equal(init.depth[held], given[held])
    co = coarse_solve(data, init, known, AlignConfig(), False)
    assert co.iterations > 1
    assert torch.allclose(co.log_depth[held].exp(), given[held], rtol=1e-6, atol=0)
    true = torch.stack([gt.depths[k].reshape(-1)[data.idx[k]] for k in range(6)])
    free = [k for k in range(6) if k not in held]
    assert float(((co.log_depth[free].exp() - true[free]).abs() / true[free]).median()) > 1e-4  # these moved


def _init_with_known_depths(gt, held, depths=True):
    """``mst_init`` with the ``held`` images' true poses and intrinsics, and their depths unless not ``depths``."""
    known = KnownCameras.from_inputs(gt.preds.image_shapes, {k: gt.poses[k] for k in held}, None,
                                     {k: gt.intrinsics[k] for k in held}, {k: gt.depths[k] for k in held})
    data = build_edge_data(gt.preds, torch.device("cpu"), 2, 4096, "log", known.depth_masks(None), 1 << 24,
                           "float32", 0)
    given, points = known.sampled_depths(data.idx, data.uv, data.valid)
    kw = {"depths": given, "points": points} if depths else {}
    return mst_init(data, 3.0, 10, 5.0, 0.5, **known.init_priors(), **kw)


def test_images_paired_with_known_depths_start_where_they_belong():
    """Exact predictions: every image paired with one whose depth is known is placed on it by one
    registration, so the initialisation alone gives its true pose and focal (no chain of
    registrations through a tree, no gauge); an image paired only with unknown ones is placed
    through the tree as before, still in the known images' frame."""
    gt = make_synthetic_scene(7, SMALL, graph="complete", seed=5, noise=0.0, distortion=0.0, n_blobs=0)
    held = [1, 4]
    init = _init_with_known_depths(gt, held)
    assert torch.equal(init.poses[held], gt.poses[held])
    free = [k for k in range(7) if k not in held]
    ce = (init.poses[free, :3, 3] - gt.poses[free, :3, 3]).norm(dim=-1).max() / gt.extent
    ang = roma.rotmat_geodesic_distance(init.poses[free, :3, :3], gt.poses[free, :3, :3]).rad2deg().max()
    fe = ((init.focals[free] - gt.focals[free]) / gt.focals[free]).abs().max()
    assert float(ce) < 1e-4 and float(ang) < 1e-2 and float(fe) < 1e-3, (float(ce), float(ang), float(fe))

    chain = make_synthetic_scene(5, SMALL, pairs=_band_pairs(5, 1), seed=5, noise=0.0, distortion=0.0, n_blobs=0)
    init = _init_with_known_depths(chain, [0, 1])  # image 3 and 4 meet no known image: the tree places them
    ce = (init.poses[:, :3, 3] - chain.poses[:, :3, 3]).norm(dim=-1).max() / chain.extent
    assert float(ce) < 1e-3, float(ce)


def test_known_depths_start_the_others_closer_than_the_tree():
    """Noisy predictions, every fourth of 16 images unknown, the others known with their depths:
    placed on the known images directly, the unknown ones start at least twice as close to the
    truth as through the spanning tree moved onto the known poses (the depths not given; 3.2x in
    centre and 3.7x in rotation with the tree's symmetric scale)."""
    gt = make_synthetic_scene(16, SMALL, pairs=_band_pairs(16, 3), seed=0)
    held = [k for k in range(16) if k % 4 != 3]
    free = [k for k in range(16) if k % 4 == 3]

    def errors(init):
        ce = (init.poses[free, :3, 3] - gt.poses[free, :3, 3]).norm(dim=-1).max() / gt.extent
        ang = roma.rotmat_geodesic_distance(init.poses[free, :3, :3].double(), gt.poses[free, :3, :3]).max()
        return float(ce), float(ang.rad2deg())

    anchored = errors(_init_with_known_depths(gt, held))
    tree = errors(_init_with_known_depths(gt, held, depths=False))
    assert anchored[0] < tree[0] / 2 and anchored[1] < tree[1] / 2, (anchored, tree)


def test_known_depths_refusals():
    gt = make_synthetic_scene(3, (12, 8), seed=7, **NOISE)
    with pytest.raises(PointmapError, match=r"known_depths\[1\] needs the image's pose and focal"):
        global_align(gt.preds, known_poses={1: gt.poses[1]}, known_depths={1: gt.depths[1]})
    with pytest.raises(PointmapError, match="shape"):
        global_align(gt.preds, known_poses={1: gt.poses[1]}, known_focals={1: gt.focals[1]},
                     known_depths={1: gt.depths[1][:4]})
    with pytest.raises(PointmapError, match="no valid"):
        global_align(gt.preds, known_poses={1: gt.poses[1]}, known_focals={1: gt.focals[1]},
                     known_depths={1: torch.zeros(8, 12)})


def test_shared_focal():
    gt = make_synthetic_scene(6, SMALL, seed=2, shared_focal=True, **NOISE)
    sc = global_align(gt.preds, config=AlignConfig(shared_focal=True))
    assert float(sc.focals.std()) < 1e-4
    assert abs(float(sc.focals[0] / gt.focals[0]) - 1) < 0.01


def test_masks_are_excluded():
    gt = make_synthetic_scene(4, SMALL, seed=3, **NOISE)
    masks = [torch.ones(SMALL[1], SMALL[0], dtype=torch.bool) for _ in range(4)]
    masks[1][:, :8] = False
    sc = global_align(gt.preds, masks=masks)
    assert not sc.masks[1][:, :8].any() and sc.masks[1][:, 8:].any()


def test_one_image_gives_trivial_scene_and_empty_raises():
    gt = make_synthetic_scene(1, SMALL, pairs=[(0, 0)], seed=4, **NOISE)
    sc = global_align(gt.preds)
    assert len(sc) == 1 and torch.equal(sc.poses[0], torch.eye(4))
    assert abs(float(sc.focals[0] / gt.focals[0]) - 1) < 0.03
    empty = PairPredictions([], [], [], [], [], n_images=1, image_shapes=[(24, 32)])
    with pytest.raises(GraphError):
        global_align(empty)


def test_duplicate_images_are_valid():
    gt = make_synthetic_scene(3, SMALL, seed=5, **NOISE)
    # image 3 is an exact duplicate of image 0: same pose, predictions copied from image 0's
    pairs, p1, c1, p2, c2 = [], [], [], [], []
    P = gt.preds
    for e, (i, j) in enumerate(P.pairs):
        pairs.append((i, j)); p1.append(P.pts3d_1[e]); c1.append(P.conf_1[e]); p2.append(P.pts3d_2_in_1[e]); c2.append(P.conf_2[e])
        if i == 0:
            pairs.append((3, j)); p1.append(P.pts3d_1[e]); c1.append(P.conf_1[e]); p2.append(P.pts3d_2_in_1[e]); c2.append(P.conf_2[e])
        if j == 0:
            pairs.append((i, 3)); p1.append(P.pts3d_1[e]); c1.append(P.conf_1[e]); p2.append(P.pts3d_2_in_1[e]); c2.append(P.conf_2[e])
    e01 = P.index(0, 1)
    for a, b in ((0, 3), (3, 0)):
        pairs.append((a, b)); p1.append(P.pts3d_1[e01]); c1.append(P.conf_1[e01]); p2.append(P.pts3d_1[e01]); c2.append(P.conf_1[e01])
    dup = PairPredictions(pairs, p1, c1, p2, c2)
    sc = global_align(dup)
    assert all(torch.isfinite(d).all() for d in sc.depths) and torch.isfinite(sc.poses).all()
    span = (sc.poses[:, :3, 3] - sc.poses[:, None, :3, 3]).norm(dim=-1).max()
    assert float((sc.poses[0, :3, 3] - sc.poses[3, :3, 3]).norm()) < 0.02 * float(span)
    assert float(roma.rotmat_geodesic_distance(sc.poses[0, :3, :3], sc.poses[3, :3, :3]).rad2deg()) < 1.0


def test_disconnected_graph_marks_unplaced_and_components_align(caplog):
    pairs = _band_pairs(3) + [(a + 3, b + 3) for a, b in _band_pairs(3)]
    gt = make_synthetic_scene(6, SMALL, pairs=pairs, seed=6, **NOISE)
    with caplog.at_level("WARNING", logger="pointmap"):
        sc = global_align(gt.preds)
    assert "connected components" in caplog.text
    assert sc.placed.tolist() == [True, True, True, False, False, False]
    assert not any(m.any() for m in sc.masks[3:])
    comps = align_components(gt.preds)
    assert [c for c, _ in comps] == [[0, 1, 2], [3, 4, 5]]
    assert all(bool(s.placed.all()) and len(s) == 3 for _, s in comps)


def test_adam_path_matches_reference_twin():
    gt = make_synthetic_scene(3, (12, 8), seed=7, **NOISE)
    preds = gt.preds
    cfg = AlignConfig(solver="adam", niter=60, coarse_stride=1, dense=False)
    res = align_pairs(preds, config=cfg)
    data = build_edge_data(preds, torch.device("cpu"), 1, 4096, "log", None, 1 << 24, "float32", 0)
    init = mst_init(data, 3.0, 10, 5.0, 0.5)
    ref_loss, ref_poses, ref_focals = reference_optimise(preds, init, niter=60)
    assert abs(res.loss - ref_loss) < 1e-3 * ref_loss
    assert torch.allclose(res.scene.poses, ref_poses, atol=1e-3)
    assert torch.allclose(res.scene.focals, ref_focals, rtol=1e-3)


def test_pair_scene_two_images():
    gt = make_synthetic_scene(2, (48, 32), seed=8, **NOISE)
    sc = pair_scene(gt.preds)
    assert abs(float(sc.focals[0] / gt.focals[0]) - 1) < 0.03
    rel_gt = torch.linalg.inv(gt.poses[0]) @ gt.poses[1]
    rel = torch.linalg.inv(sc.poses[0]) @ sc.poses[1]
    ang = roma.rotmat_geodesic_distance(rel[:3, :3], rel_gt[:3, :3]).rad2deg()
    assert float(ang) < 2.0
    dirs = torch.nn.functional.cosine_similarity(rel[:3, 3], rel_gt[:3, 3], dim=0)
    assert float(dirs) > 0.99
    with pytest.raises(GraphError):
        pair_scene(make_synthetic_scene(3, (12, 8), seed=0).preds)


def test_pair_scene_with_confidence_below_the_threshold_everywhere():
    # out-of-domain photographs can leave no pixel above the threshold: the reference answers the
    # identity; the most confident pixels still give the pose
    gt = make_synthetic_scene(2, (48, 32), seed=8, **NOISE)
    g = torch.Generator().manual_seed(0)
    low = [1.0 + 0.5 * torch.rand(c.shape, generator=g) for c in gt.preds.conf_2]
    p = gt.preds
    preds = PairPredictions(p.pairs, p.pts3d_1, [1.0 + 0.5 * torch.rand(c.shape, generator=g) for c in p.conf_1],
                            p.pts3d_2_in_1, low, n_images=2)
    sc = pair_scene(preds, conf_threshold=3.0)
    rel_gt = torch.linalg.inv(gt.poses[0]) @ gt.poses[1]
    rel = torch.linalg.inv(sc.poses[0]) @ sc.poses[1]
    assert float(roma.rotmat_geodesic_distance(rel[:3, :3], rel_gt[:3, :3]).rad2deg()) < 2.0
    assert float(torch.nn.functional.cosine_similarity(rel[:3, 3], rel_gt[:3, 3], dim=0)) > 0.99
    assert not bool(torch.cat([m.reshape(-1) for m in sc.masks]).any())  # the scene's masks keep the threshold


def test_config_rejects_unknown_solver():
    with pytest.raises(PointmapError, match="solver"):
        AlignConfig(solver="bcd")


def test_clean_pointcloud_and_mask_sky(small10):
    from dataclasses import replace

    from pointmap.scene import Scene

    gt = small10
    n = len(gt.imgs)
    conf = [torch.full(gt.depths[0].shape, 5.0) for _ in range(n)]
    sc = Scene(
        imgs=gt.imgs, poses=gt.poses, intrinsics=gt.intrinsics, depths=list(gt.depths),
        confidence=conf, masks=[c > 3 for c in conf],
    )
    # an exact scene loses (almost) nothing
    assert float((clean_pointcloud(sc).confidence[5] <= 0).float().mean()) < 0.05
    # image 0 pulled halfway towards its camera floats in front of surfaces others see: cleaned
    depths = list(gt.depths)
    depths[0] = depths[0] * 0.5
    conf0 = [c.clone() for c in conf]
    conf0[0] = conf0[0] - 1  # less confident than the views it occludes
    cleaned = clean_pointcloud(replace(sc, depths=depths, confidence=conf0))
    assert float((cleaned.confidence[0] <= 0).float().mean()) > 0.2
    imgs = [im.clone() for im in sc.imgs]
    imgs[1][:8] = torch.tensor([0.95, 0.95, 0.95])  # bright, unsaturated band = "sky"
    sky = mask_sky(replace(sc, imgs=imgs))
    assert (sky.confidence[1][:6] == 0).all() and not sky.masks[1][:6].any()
    assert (sc.confidence[1][:6] > 0).all()
    # images a folder holds already (unchanged) keep their confidences
    from pointmap.pipeline.finishing import finish
    from pointmap.pipeline.request import ExportSpec, PostProcess

    pulled = replace(sc, depths=depths, confidence=conf0)
    kept, _ = finish(pulled, PostProcess(clean=True), ExportSpec(), unchanged=[0, 2])
    assert torch.equal(kept.confidence[0], conf0[0]) and torch.equal(kept.masks[0], pulled.masks[0])
    others = finish(pulled, PostProcess(clean=True), ExportSpec(), unchanged=[2])[0]
    assert float((others.confidence[0] <= 0).float().mean()) > 0.2  # the clean-up ran for the others


def test_pair_predictions_subset_reindexes_and_keeps_order():
    gt = make_synthetic_scene(4, (12, 8), seed=3)
    P = gt.preds
    sub = P.subset([2, 0])
    inside = [(i, j) for i, j in P.pairs if {i, j} <= {0, 2}]
    assert sub.n_images == 2 and sub.pairs == [({2: 0, 0: 1}[i], {2: 0, 0: 1}[j]) for i, j in inside]
    assert sub.image_shapes == [P.image_shapes[2], P.image_shapes[0]]
    for r, e in enumerate(P.pairs_within([2, 0])):
        assert sub.pts3d_1[r] is P.pts3d_1[e] and sub.conf_2[r] is P.conf_2[e]
    with pytest.raises(ValueError):
        P.subset([0, 0])


def test_pnp_seed_reaches_ransac_and_is_deterministic(monkeypatch):
    """Images off the spanning tree's seed edge are posed by RANSAC PnP seeded with
    ``AlignConfig.pnp_seed``: the seed given is the one set, and one seed gives one result."""
    import cv2

    gt = make_synthetic_scene(4, SMALL, seed=4, **NOISE)
    seen: list[int] = []
    real = cv2.setRNGSeed
    monkeypatch.setattr(cv2, "setRNGSeed", lambda s: (seen.append(int(s)), real(s))[1])
    cfg = AlignConfig(pnp_seed=1234, niter=3, dense=False)
    a = align_pairs(gt.preds, config=cfg)
    assert seen and set(seen) == {1234}
    b = align_pairs(gt.preds, config=cfg)
    assert torch.equal(a.scene.poses, b.scene.poses) and a.init_loss == b.init_loss
    seen.clear()
    align_pairs(gt.preds, config=AlignConfig(pnp_seed=7, niter=3, dense=False))
    assert seen and set(seen) == {7}


def test_extrapolated_steps_converge_faster_on_a_long_chain(monkeypatch):
    """A 60-image chain (each image paired with its neighbours only), started bent (the spanning
    tree registered with Umeyama's scales, which shrink along it): the IRLS steps fall short
    along its smooth deformations; trying longer steps reaches the optimum in fewer iterations."""
    import functools

    import pointmap.align.coarse as coarse
    import pointmap.align.init as init
    from pointmap.align.gauss_newton import gauss_newton

    gt = make_synthetic_scene(60, SMALL, pairs=_band_pairs(60, 1), seed=1)
    umeyama = init.rigid_registration
    monkeypatch.setattr(init, "rigid_registration", lambda x, y, w, symmetric_scale=False: umeyama(x, y, w))

    def run(extrapolate, niter):
        monkeypatch.setattr(coarse, "gauss_newton", functools.partial(gauss_newton, extrapolate=extrapolate))
        return align_pairs(gt.preds, config=AlignConfig(dense=False, niter=niter))

    plain, fast = run(0, 40), run(4, 40)
    assert fast.iterations < 40 and plain.iterations < 40  # both converged
    assert fast.iterations <= plain.iterations - 5, (fast.iterations, plain.iterations)
    assert fast.loss <= plain.loss * (1 + 1e-6)
    best = fast.loss
    gap_plain, gap_fast = run(0, 12).loss - best, run(4, 12).loss - best
    assert gap_fast < 0.1 * gap_plain, (gap_fast, gap_plain)


def test_an_image_with_a_non_finite_camera_is_left_unplaced(caplog):
    """Degenerate predictions can leave a camera non-finite: the scene marks it unplaced (no
    points, skipped by the exports) and says so, instead of failing in an exporter."""
    from pointmap.align.common import CameraSet, assemble_scene

    poses = torch.eye(4).repeat(3, 1, 1)
    poses[1, 0, 3] = float("nan")
    cams = CameraSet(poses, torch.eye(3).repeat(3, 1, 1), [torch.ones(2, 2)] * 3, [torch.full((2, 2), 5.0)] * 3,
                     torch.tensor([True, True, False]))
    with caplog.at_level("WARNING"):
        scene = assemble_scene(cams, None, None, 3.0)
    assert scene.placed.tolist() == [True, False, False]
    assert [int(m.sum()) for m in scene.masks] == [4, 0, 0]
    assert "non-finite camera" in caplog.text


def test_degenerate_predictions_still_give_finite_cameras():
    """A network with meaningless weights predicts points behind the camera: the focal the
    initialisation estimates from them is unusable, so it falls back to the image's larger side
    and every camera stays finite (the exports need them)."""
    from pointmap.predictions import PairPredictions

    gt = make_synthetic_scene(5, (32, 24), graph="complete", seed=3)
    p = gt.preds
    flip = torch.tensor([1.0, 1.0, -1.0])
    pts1 = [t * flip if i == 2 else t for t, (i, _) in zip(p.pts3d_1, p.pairs)]
    bad = PairPredictions(p.pairs, pts1, p.conf_1, p.pts3d_2_in_1, p.conf_2, n_images=p.n_images)
    res = align_pairs(bad, config=AlignConfig(dense=False))
    assert bool(torch.isfinite(res.scene.poses).all()) and bool(torch.isfinite(res.scene.intrinsics).all())
    assert bool(res.scene.placed.all())


def test_a_runaway_focal_stays_bounded(monkeypatch):
    """Image 2's pixels spread 1e4 times about the principal point: no focal fits its rays, and
    without a bound the coarse solver runs its focal away (past 1e20 pixels); with it, each step
    moves a log-focal by at most 0.5 and not past 50 times the image's larger side, the other
    cameras as accurate as before."""
    from pointmap.align import gauss_newton as G

    gt = make_synthetic_scene(6, SMALL, seed=4, **NOISE)
    data = build_edge_data(gt.preds, torch.device("cpu"), 2, 4096, "log", None, 1 << 24, "float32", 0)
    kn = KnownCameras.from_inputs(gt.preds.image_shapes)
    init = mst_init(data, 3.0, 10, 5.0, 0.5, **kn.init_priors())
    st = GNState(init.poses[:, :3, :3], init.poses[:, :3, 3], init.focals.log()[:, None].repeat(1, 2),
                 init.depth.clamp(min=0.1), init.pw_R, init.pw_T, init.pw_s.log())
    none = torch.zeros(6, dtype=torch.bool)
    pb = GNProblem.build(data, kn.pp, none, none, False, True)
    pb.uv = pb.uv.clone()
    pb.uv[2] = kn.pp[2] + (pb.uv[2] - kn.pp[2]) * 1e4
    # one huge log-focal increment moves it by the bound only
    delta = torch.zeros(pb.n_unknowns, dtype=torch.float64)
    delta[pb.cam_index[2, 6]] = 30.0
    moved = G._apply(st, pb, delta)
    assert torch.allclose(moved.log_f[2] - st.log_f[2], torch.tensor(G.MAX_LOG_FOCAL_STEP))

    bounded = G.gauss_newton(st, pb, max_iters=20)[0].log_f.exp()
    monkeypatch.setattr(G, "MAX_LOG_FOCAL_STEP", 1e9)
    monkeypatch.setattr(G, "FOCAL_RANGE", (1e-30, 1e30))
    pb.log_f_range = G._log_f_range(data.shapes, False, none)
    free = G.gauss_newton(st, pb, max_iters=20)[0].log_f.exp()
    side = max(SMALL)
    assert float(free[2].max()) > 1e20  # the scenario does run away without the bound
    assert bool(torch.isfinite(bounded).all())
    assert float(bounded[2].max()) <= 50 * side * 1.0001 and float(bounded[2].min()) >= 0.05 * side
    ok = torch.tensor([0, 1, 3, 4, 5])
    assert float((bounded[ok, 0] / gt.focals[ok] - 1).abs().max()) < 0.02


def test_initialisation_replaces_a_pnp_pose_that_does_not_fit(monkeypatch):
    """PnP returns, for every image it is asked about, a pose far off (the camera 50 extents away
    and turned by 90 degrees) with every point an inlier: the check against the image's points
    (in front, at the depth its own prediction gives) rejects it and the image is registered
    from its own prediction, as close to the truth as PnP's own pose; without the check it would start far off."""
    from pointmap.align import init as I

    gt = make_synthetic_scene(8, SIZE, graph="swin-2", seed=5)
    data = build_edge_data(gt.preds, torch.device("cpu"), 2, 4096, "log", None, 1 << 24, "float32", 0)
    kn = KnownCameras.from_inputs(gt.preds.image_shapes)
    asked = []

    def far_pnp(pts, uv, *args, **kwargs):
        f, P, _ = real(pts, uv, *args, **kwargs)
        asked.append(1)
        bad = P.clone()
        bad[:3, :3] = P[:3, :3] @ roma.rotvec_to_rotmat(torch.tensor([0.0, 1.5708, 0.0]))
        bad[:3, 3] = P[:3, 3] + 50 * gt.extent
        return f, bad, len(pts)

    def init_errors():
        init = mst_init(data, 3.0, 10, 5.0, 0.5, **kn.init_priors())
        s, R, T = align_multiple_poses(init.poses, gt.poses)
        ang = roma.rotmat_geodesic_distance(R @ init.poses[:, :3, :3], gt.poses[:, :3, :3]).rad2deg()
        ce = (s * init.poses[:, :3, 3] @ R.T + T - gt.poses[:, :3, 3]).norm(dim=-1) / gt.extent
        return float(ang.max()), float(ce.max())

    real = I.pnp_ransac_inliers
    rot0, ce0 = init_errors()  # PnP as it is (the predictions' 2 % distortion: a few degrees)
    monkeypatch.setattr(I, "pnp_ransac_inliers", far_pnp)
    rot, ce = init_errors()
    assert asked, "the scene has no image placed by PnP"
    assert rot < 1.5 * rot0 and ce < 1.5 * ce0, (rot, ce, rot0, ce0)
    monkeypatch.setattr(I, "_pose_fits", lambda *a: True)
    rot, ce = init_errors()
    assert rot > 45 and ce > 0.3, (rot, ce)
