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
