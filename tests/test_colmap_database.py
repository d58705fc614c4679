"""COLMAP database export of pixel matches: read back by pycolmap with the counts written, and
COLMAP's incremental mapper registers every image of a synthetic scene from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pycolmap = pytest.importorskip("pycolmap")

from pointmap.export.colmap_database import write_colmap_database  # noqa: E402

N, W, H, F, N_PTS, N_OUT = 6, 320, 240, 260.0, 300, 20


def _scene(seed: int = 0):
    """Cameras on an arc looking at a cloud of points; exact projections (pixel centres at
    integers), per pair N_PTS true matches and N_OUT outliers (fresh random pixels)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform([-1.5, -1.0, 4.0], [1.5, 1.0, 7.0], (N_PTS, 3))
    K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])
    w2c = []
    for k in range(N):
        a = np.deg2rad(-12 + 5 * k)
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        w2c.append((R, np.array([-0.4 * k, 0.05 * k, 0.0])))
    proj = []
    for R, t in w2c:
        Xc = X @ R.T + t
        proj.append((Xc[:, :2] / Xc[:, 2:]) * F + [W / 2, H / 2])
    matches = {}
    for i in range(N):
        for j in range(i + 1, N):
            a, b = proj[i].copy(), proj[j].copy()
            out_a = rng.uniform([0, 0], [W - 1, H - 1], (N_OUT, 2))
            out_b = rng.uniform([0, 0], [W - 1, H - 1], (N_OUT, 2))
            key = (i, j) if (i + j) % 2 else (j, i)  # both orders are accepted
            ab = (np.r_[a, out_a], np.r_[b, out_b])
            matches[key] = ab if key == (i, j) else ab[::-1]
    return matches, K, w2c, proj


def test_database_counts_and_incremental_mapping(tmp_path):
    matches, K, w2c, proj = _scene()
    assert all(bool(((p >= 0) & (p < [W, H])).all()) for p in proj)  # every point seen everywhere
    names = [f"im{k}.jpg" for k in range(N)]
    db_path = tmp_path / "matches.db"
    summary = write_colmap_database(db_path, names, [(W, H)] * N, matches,
                                    intrinsics=torch.from_numpy(np.stack([K] * N)))
    n_pairs = N * (N - 1) // 2
    expected_kp = N_PTS + (N - 1) * N_OUT  # the true points + fresh outlier pixels of each pair
    assert summary.keypoints == [expected_kp] * N
    db = pycolmap.Database.open(str(db_path))
    try:
        assert db.num_images() == N and db.num_cameras() == N
        assert [db.num_keypoints_for_image(k + 1) for k in range(N)] == [expected_kp] * N
        assert db.num_matched_image_pairs() == n_pairs
        assert db.num_matches() == n_pairs * (N_PTS + N_OUT)
        assert db.num_verified_image_pairs() == n_pairs
        # RANSAC keeps the true matches and drops (nearly) all outliers
        for i in range(N):
            for j in range(i + 1, N):
                inl = db.read_two_view_geometry(i + 1, j + 1).inlier_matches
                assert N_PTS <= len(inl) <= N_PTS + N_OUT // 2, (i, j, len(inl))
                kp_i = db.read_keypoints(i + 1)[:, :2].astype(np.float64) - 0.5
                kp_j = db.read_keypoints(j + 1)[:, :2].astype(np.float64) - 0.5
                got = {(*np.round(kp_i[a], 2), *np.round(kp_j[b], 2)) for a, b in inl}
                true = {(*np.round(proj[i][q], 2), *np.round(proj[j][q], 2)) for q in range(N_PTS)}
                assert len(true - got) == 0, (i, j)  # every true match verified
        cam = db.read_camera(1)
        assert np.allclose(cam.params, [F, F, W / 2 + 0.5, H / 2 + 0.5])
    finally:
        db.close()
    out = tmp_path / "sparse"
    out.mkdir()
    recs = pycolmap.incremental_mapping(str(db_path), str(tmp_path), str(out))
    assert len(recs) == 1
    rec = next(iter(recs.values()))
    assert rec.num_reg_images() == N
    assert rec.num_points3D() >= 0.95 * N_PTS
    # recovered relative rotations agree with the truth
    by_name = {im.name: im for im in rec.images.values()}
    R0 = by_name["im0.jpg"].cam_from_world().rotation.matrix()
    for k in range(1, N):
        Rk = by_name[f"im{k}.jpg"].cam_from_world().rotation.matrix()
        rel, rel_gt = Rk @ R0.T, w2c[k][0] @ w2c[0][0].T
        ang = np.degrees(np.arccos(np.clip((np.trace(rel.T @ rel_gt) - 1) / 2, -1, 1)))
        assert ang < 0.5, (k, ang)


def test_existing_database_is_not_replaced(tmp_path):
    from pointmap.errors import OutputExistsError

    p = tmp_path / "x.db"
    p.write_bytes(b"not mine")
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_colmap_database(p, ["a", "b"], [(8, 8)] * 2, {(0, 1): (np.zeros((1, 2)), np.ones((1, 2)))})
    assert p.read_bytes() == b"not mine"


def _true_matches(scene, step: int = 2):
    """Exact matches at network resolution: a grid of pixels of image i lifted with its true depth
    and projected into image j (float pixels), kept where they land inside j."""
    from pointmap.export.common import image_points

    out = {}
    for i in range(len(scene)):
        H, W = scene.depths[i].shape
        v, u = np.mgrid[0:H:step, 0:W:step]
        X = image_points(scene, i)[v, u].reshape(-1, 3)
        for j in range(i + 1, len(scene)):
            w2c = np.linalg.inv(scene.poses[j].double().numpy())
            Xc = X @ w2c[:3, :3].T + w2c[:3, 3]
            uv = (Xc @ scene.intrinsics[j].double().numpy().T)[:, :2] / Xc[:, 2:]
            ok = (Xc[:, 2] > 0) & (uv >= 0).all(1) & (uv <= [W - 1, H - 1]).all(1)
            out[(i, j)] = (np.stack([u.ravel(), v.ravel()], 1)[ok].astype(np.float64), uv[ok])
    return out


def _n_tracks(matches, images) -> int:
    """Connected components of the graph of matched pixels (the matches among ``images`` only)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes: dict[tuple, int] = {}
    edges = [(nodes.setdefault((i, *np.round(p, 6)), len(nodes)), nodes.setdefault((j, *np.round(q, 6)), len(nodes)))
             for (i, j), (a, b) in matches.items() if i in images and j in images for p, q in zip(a, b)]
    e = np.array(edges)
    n = len(nodes)
    return connected_components(coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)), directed=False)[0]


@pytest.mark.parametrize("placed", [None, [True, False, True]])
def test_export_scene_database_and_initial_model_fit_together(tmp_path, placed):
    """``export_scene(formats=['colmap-db'])``: the initial model has the database's ids, names,
    cameras and keypoints and the scene's poses; COLMAP triangulates the database's matches from it
    onto the true surface (the plane z = 4) with the poses kept."""
    from pointmap.export import export_scene
    from pointmap.export.common import original_intrinsics

    from export_scenes import PLANE_Z, make_scene

    scene = make_scene(n=3, placed=placed)
    matches = _true_matches(scene)
    paths = export_scene(scene, tmp_path / "out", formats=["colmap-db"], matches=matches)
    db_path, init = paths["colmap-db"], paths["colmap_init"]
    assert db_path == tmp_path / "out" / "colmap" / "database.db" and init == tmp_path / "out" / "colmap" / "init"
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    rec = pycolmap.Reconstruction(str(init))
    K0 = original_intrinsics(scene)
    placed_ids = [k + 1 for k in range(3) if bool(scene.placed[k])]
    db = pycolmap.Database.open(str(db_path))
    try:
        db_images = {im.image_id: im for im in db.read_all_images()}
        assert sorted(db_images) == [1, 2, 3]
        assert db.num_verified_image_pairs() == 3
        assert sorted(rec.images) == placed_ids and rec.num_points3D() == 0
        for iid, im in rec.images.items():
            k = iid - 1
            assert im.name == db_images[iid].name == f"img{k}.png"
            assert im.camera_id == db_images[iid].camera_id == iid
            w2c = np.linalg.inv(scene.poses[k].double().numpy())
            assert np.allclose(im.cam_from_world().matrix(), w2c[:3], atol=1e-5)
            params = [K0[k][0, 0], K0[k][1, 1], K0[k][0, 2] + 0.5, K0[k][1, 2] + 0.5]
            assert np.allclose(rec.cameras[iid].params, params)
            assert np.allclose(db.read_camera(iid).params, params)
            xy = np.array([p.xy for p in im.points2D])
            kp = db.read_keypoints(iid)[:, :2]
            assert len(xy) == len(kp) > 0 and np.allclose(xy, kp, atol=1e-4)
    finally:
        db.close()
    out = tmp_path / "tri"
    out.mkdir()
    opts = pycolmap.IncrementalPipelineOptions()
    opts.triangulation.ignore_two_view_tracks = False  # tracks of two views count too
    tri = pycolmap.triangulate_points(rec, str(db_path), str(tmp_path / "out" / "images"), str(out),
                                      clear_points=False, options=opts)
    assert sorted(tri.images) == placed_ids
    # one 3-D point per track (matches chained through shared pixels) between placed images, on
    # the true plane
    assert tri.num_points3D() == _n_tracks(matches, [k - 1 for k in placed_ids])
    xyz = np.array([p.xyz for p in tri.points3D.values()])
    assert np.abs(xyz[:, 2] - PLANE_Z).max() < 1e-4
    for iid, im in tri.images.items():
        w2c = np.linalg.inv(scene.poses[iid - 1].double().numpy())
        assert np.allclose(im.cam_from_world().matrix(), w2c[:3], atol=1e-5)
    if placed is not None:
        # COLMAP's mapper continues from the initial model and registers the image pointmap left
        # unplaced, at its true pose (the mapper normalises its output by a similarity: compare
        # relative rotations, and camera centres up to one scale)
        out = tmp_path / "map"
        out.mkdir()
        recs = pycolmap.incremental_mapping(str(db_path), str(tmp_path / "out" / "images"), str(out),
                                            options=opts, input_path=str(init))
        rec = max(recs.values(), key=lambda r: r.num_reg_images())
        assert sorted(rec.images) == [1, 2, 3]
        R = [rec.images[k + 1].cam_from_world().rotation.matrix() for k in range(3)]
        t = [rec.images[k + 1].cam_from_world().translation for k in range(3)]
        centres = np.stack([-r.T @ v for r, v in zip(R, t)])
        true = scene.poses.double().numpy()
        for k in (1, 2):
            assert np.allclose(R[k] @ R[0].T, true[k, :3, :3].T @ true[0, :3, :3], atol=1e-4), k
        d, d_true = centres - centres[0], true[:, :3, 3] - true[0, :3, 3]
        scale = (d * d_true).sum() / (d_true * d_true).sum()
        assert np.allclose(d, scale * d_true, atol=1e-4 * scale)


def test_colmap_db_export_needs_matches_and_says_what_to_install(tmp_path, monkeypatch):
    from pointmap.errors import PointmapError
    from pointmap.export import export_scene

    from export_scenes import make_scene

    with pytest.raises(PointmapError, match="needs the pixel matches"):
        export_scene(make_scene(), tmp_path / "a", formats=["colmap-db"])
    monkeypatch.setitem(__import__("sys").modules, "pycolmap", None)  # import pycolmap fails
    with pytest.raises(PointmapError, match=r'needs pycolmap: pip install torch==\S+ -e "\.\[colmap\]"'):
        export_scene(make_scene(), tmp_path / "b", formats=["colmap-db"], matches={})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
