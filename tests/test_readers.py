"""Dataset readers: the real evaluation data (skips when absent) and synthetic fixtures for the
other layouts, with projections checked against independently derived conventions."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import roma
import torch
from PIL import Image

from pointmap.errors import DatasetError
from pointmap.eval.readers import LAYOUTS, detect_layout, read_dataset
from pointmap.eval.readers.co3d import read_co3d
from pointmap.eval.readers.dtu import decompose_projection
from pointmap.eval.readers.generic import write_scene_json
from pointmap.eval.readers.middlebury2014 import read_pfm
from pointmap.eval.readers.realestate10k import read_realestate10k
from pointmap.eval.readers.superglue_pairs import read_superglue_pairs


def _check_frames(scene, n, size=None, posed=True):
    assert len(scene) == n
    for f in scene.frames:
        assert f.K.dtype == np.float64 and f.K.shape == (3, 3)
        assert f.K[0, 0] > 0 and f.K[1, 1] > 0 and f.K[2, 2] == 1 and f.K[1, 0] == 0
        assert 0 < f.K[0, 2] < f.width and 0 < f.K[1, 2] < f.height
        if size:
            assert (f.width, f.height) == size
        if posed:
            R = f.cam2world[:3, :3]
            np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
            assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_array_equal(f.cam2world[3], [0, 0, 0, 1])
        else:
            assert f.cam2world is None


def _project(K, c2w, X):
    w2c = np.linalg.inv(c2w)
    x = (X @ w2c[:3, :3].T + w2c[:3, 3]) @ K.T
    return x[..., :2] / x[..., 2:], x[..., 2]


def _reprojection_dz(fa, fb):
    """Median |z_pred - z_b| of frame a's depth moved into frame b (metres), and the overlap."""
    da, db = fa.load_depth(), fb.load_depth()
    v, u = np.nonzero(da > 0)
    z = da[v, u]
    Kinv = np.linalg.inv(fa.K)
    X = (np.stack([u, v, np.ones_like(u)], 1) @ Kinv.T) * z[:, None]
    Xw = X @ fa.cam2world[:3, :3].T + fa.cam2world[:3, 3]
    uv, zb = _project(fb.K, fb.cam2world, Xw)
    ub, vb = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    ok = (zb > 0) & (ub >= 0) & (ub < db.shape[1]) & (vb >= 0) & (vb < db.shape[0])
    dz = np.abs(db[vb[ok], ub[ok]] - zb[ok])[db[vb[ok], ub[ok]] > 0]
    return float(np.median(dz)), ok.mean()


# ----------------------------------------------------------------------------------- real data


def test_middlebury_temple(data_dir):
    s = read_dataset(data_dir / "middlebury_mview" / "templeSparseRing")
    assert s.layout == "middlebury_mview"
    _check_frames(s, 16, (640, 480))
    # The README's bounding box must project inside every image, in front of every camera.
    lo, hi = np.array(s.extras["bbox"])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    for f in s.frames:
        uv, z = _project(f.K, f.cam2world, corners)
        assert (z > 0).all()
        assert (uv >= -5).all() and (uv[:, 0] <= 645).all() and (uv[:, 1] <= 485).all()
    centres = s.poses()[:, :3, 3]
    r = np.linalg.norm(centres - centres.mean(0), axis=1)
    assert 0.45 < r.mean() < 0.65  # a ring of about 0.56 m


def test_strecha_fountain(data_dir):
    s = read_dataset(data_dir / "strecha_mvs" / "fountain-P11")
    assert s.layout == "strecha"
    _check_frames(s, 11, (1536, 1024))
    dist = np.linalg.norm(s.poses()[:, :3, 3], axis=1)
    assert (dist > 5).all() and (dist < 25).all()  # metres
    # Optical axes converge on the facade: their least-squares meeting point is in front of all.
    P = s.poses()
    A, b = np.zeros((3, 3)), np.zeros(3)
    for T in P:
        d = T[:3, 2]
        Q = np.eye(3) - np.outer(d, d)
        A += Q
        b += Q @ T[:3, 3]
    X = np.linalg.solve(A, b)
    for f in s.frames:
        uv, z = _project(f.K, f.cam2world, X[None])
        assert z[0] > 2 and 0 < uv[0, 0] < 1536 and 0 < uv[0, 1] < 1024


def test_7scenes(data_dir):
    s = read_dataset(data_dir / "7scenes_tsdf_fusion_subset")
    assert s.layout == "7scenes"
    _check_frames(s, 50, (640, 480))
    assert s.frames[0].K[0, 0] == 585.0
    d = s.frames[0].load_depth()
    assert d.dtype == np.float32 and d.shape == (480, 640)
    v = d[d > 0]
    assert 0.3 < v.min() and v.max() < 6.0 and 0.5 < (d > 0).mean() < 1.0
    dz, overlap = _reprojection_dz(s.frames[0], s.frames[1])
    assert dz < 0.03 and overlap > 0.5


def test_tum(data_dir):
    s = read_dataset(data_dir / "tum_rgbd_samples" / "rgbd_dataset_freiburg1_xyz")
    assert s.layout == "tum"
    _check_frames(s, 2, (640, 480))
    assert s.frames[0].K[0, 0] == 517.3 and s.frames[0].distortion is not None
    assert all(f.has_depth for f in s.frames)
    v = s.frames[0].load_depth()
    assert 0.5 < v[v > 0].min() and v.max() < 5.0
    dz, _ = _reprojection_dz(s.frames[0], s.frames[1])
    assert dz < 0.02  # identity pose gives about 4.7 cm
    s3 = read_dataset(data_dir / "tum_rgbd_samples" / "rgbd_dataset_freiburg3_long_office_household")
    _check_frames(s3, 18, (640, 480), posed=False)
    assert sum(f.has_depth for f in s3.frames) == 2 and s3.frames[0].K[0, 0] == 535.4


@pytest.mark.parametrize("folder,layout,size,lo,hi,valid", [
    ("nyuv2_metric3d_demo", "nyuv2", (640, 480), 0.3, 10.0, (0.5, 0.9)),
    ("kitti_depth_metric3d_demo", "kitti", (1242, 375), 1.0, 90.0, (0.1, 0.3)),
])
def test_depth_only_sets(data_dir, folder, layout, size, lo, hi, valid):
    s = read_dataset(data_dir / folder)
    assert s.layout == layout
    _check_frames(s, 3, size, posed=False)
    for f in s.frames:
        d = f.load_depth()
        assert d.shape == (size[1], size[0])
        v = d[d > 0]
        assert lo < v.min() and v.max() < hi and valid[0] < v.size / d.size < valid[1]


# ------------------------------------------------------------------------------- tmp fixtures


def _img(path: Path, w=64, h=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)
    return path


def _pose(seed):
    g = torch.Generator().manual_seed(seed)
    T = np.eye(4)
    T[:3, :3] = roma.random_rotmat(generator=g, dtype=torch.float64).numpy()
    T[:3, 3] = torch.randn(3, generator=g, dtype=torch.float64).numpy()
    return T


def _fmt(v) -> str:
    return f"{float(v):.17g}"


K0 = np.array([[50.0, 0, 31.5], [0, 52.0, 23.5], [0, 0, 1]])


def test_dtu_idr(tmp_path):
    poses = [_pose(k) for k in range(3)]
    cams = {}
    for k, T in enumerate(poses):
        _img(tmp_path / "image" / f"{k:06d}.png")
        w2c = np.linalg.inv(T)
        P = np.eye(4)
        P[:3] = (-3.0 if k == 1 else 1.7) * K0 @ w2c[:3]  # arbitrary, even negative, scale
        cams[f"world_mat_{k}"] = P
        cams[f"scale_mat_{k}"] = np.diag([200.0, 200, 200, 1])
    np.savez(tmp_path / "cameras_sphere.npz", **cams)
    s = read_dataset(tmp_path)
    assert s.layout == "dtu" and s.extras["units"] == "mm"
    for f, T in zip(s.frames, poses):
        np.testing.assert_allclose(f.K, K0, atol=1e-8)
        np.testing.assert_allclose(f.cam2world, T, atol=1e-8)
    del cams["world_mat_2"]
    np.savez(tmp_path / "cameras_sphere.npz", **cams)
    with pytest.raises(DatasetError, match="world_mat_2"):
        read_dataset(tmp_path)


def test_dtu_mvsnet(tmp_path):
    T = _pose(3)
    _img(tmp_path / "images" / "00000000.jpg")
    (tmp_path / "cams").mkdir()
    E = np.linalg.inv(T)
    txt = "extrinsic\n" + "\n".join(" ".join(map(_fmt, r)) for r in E) + "\n\nintrinsic\n"
    txt += "\n".join(" ".join(map(_fmt, r)) for r in K0) + "\n\n425 2.5\n"
    (tmp_path / "cams" / "00000000_cam.txt").write_text(txt)
    s = read_dataset(tmp_path)
    np.testing.assert_allclose(s.frames[0].cam2world, T, atol=1e-10)


def test_decompose_projection_handles_scale_sign():
    T = _pose(8)
    P = -0.01 * K0 @ np.linalg.inv(T)[:3]
    K, c2w = decompose_projection(P)
    np.testing.assert_allclose(K, K0, atol=1e-8)
    np.testing.assert_allclose(c2w, T, atol=1e-8)


def test_scannet(tmp_path):
    for k in range(2):
        _img(tmp_path / "color" / f"{k}.jpg", 128, 96)
        np.savetxt(tmp_path / "pose" / f"{k}.txt" if (tmp_path / "pose").mkdir(exist_ok=True) is None else "", _pose(k))
        dep = np.full((48, 64), 1500, np.uint16)
        dep[0, 0] = 0
        (tmp_path / "depth").mkdir(exist_ok=True)
        Image.fromarray(dep).save(tmp_path / "depth" / f"{k}.png")
    np.savetxt(tmp_path / "pose" / "1.txt", np.full((4, 4), -np.inf))
    (tmp_path / "intrinsic").mkdir()
    Kc = np.eye(4)
    Kc[:3, :3] = K0 * [[2], [2], [1]]
    np.savetxt(tmp_path / "intrinsic" / "intrinsic_color.txt", Kc)
    s = read_dataset(tmp_path)
    assert s.layout == "scannet" and len(s) == 2
    np.testing.assert_allclose(s.frames[0].cam2world, _pose(0))
    assert s.frames[1].cam2world is None and not s.has_poses
    d = s.frames[0].load_depth()
    assert d.shape == (96, 128) and d[0, 0] == 0 and d[50, 50] == pytest.approx(1.5)


def test_superglue_pairs(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    _img(tmp_path / "imgs" / "c.png")
    T = _pose(2)
    line = lambda a, b: " ".join([a, b, "0", "1"] + [_fmt(v) for v in np.r_[K0.ravel(), K0.ravel(), T.ravel()]])
    f = tmp_path / "pairs.txt"
    f.write_text(line("imgs/a.png", "imgs/b.png") + "\n" + line("imgs/b.png", "imgs/c.png") + "\n")
    assert detect_layout(f) == "superglue_pairs"
    s = read_superglue_pairs(f)
    assert len(s) == 3 and len(s.pairs) == 2
    assert (s.pairs[1].i, s.pairs[1].j, s.pairs[1].rot1) == (1, 2, 1)
    np.testing.assert_allclose(s.pairs[0].T_0to1, T)
    f.write_text(line("imgs/a.png", "imgs/b.png")[:-10] + "\n")
    with pytest.raises(DatasetError, match="line 1"):
        read_superglue_pairs(f)


def _write_pfm(path: Path, a: np.ndarray):
    with open(path, "wb") as f:
        f.write(b"Pf\n%d %d\n-1.0\n" % (a.shape[1], a.shape[0]))
        f.write(np.flipud(a).astype("<f4").tobytes())


def test_middlebury2014(tmp_path):
    for k in (0, 1):
        _img(tmp_path / f"im{k}.png", 8, 6)
    (tmp_path / "calib.txt").write_text(
        "cam0=[100 0 3.5; 0 100 2.5; 0 0 1]\ncam1=[100 0 5.5; 0 100 2.5; 0 0 1]\ndoffs=2\n"
        "baseline=200\nwidth=8\nheight=6\nndisp=64\n")
    disp = np.full((6, 8), 18.0, np.float32)
    disp[0, 0] = np.inf
    disp[5, 7] = 8.0
    _write_pfm(tmp_path / "disp0.pfm", disp)
    np.testing.assert_array_equal(read_pfm(tmp_path / "disp0.pfm"), disp)
    s = read_dataset(tmp_path)
    assert s.layout == "middlebury2014"
    d = s.frames[0].load_depth()
    assert d[0, 0] == 0 and d[3, 3] == pytest.approx(0.2 * 100 / 20) and d[5, 7] == pytest.approx(2.0)
    # Triangulation check: a point at depth Z seen at x0 in im0 appears at x0 - d in im1.
    f0, f1 = s.frames
    X = np.array([[0.3, -0.1, 1.0]])
    u0 = _project(f0.K, f0.cam2world, X)[0][0, 0]
    u1 = _project(f1.K, f1.cam2world, X)[0][0, 0]
    assert 0.2 * 100 / ((u0 - u1) + 2) == pytest.approx(1.0)
    assert not s.frames[1].has_depth


def _p3d_project(R, T, f, p, X, H, W):
    """PyTorch3D: X_cam = X R + T (+X left, +Y up), ndc = f * X_cam[:2] / z + p,
    pixel = (W/2 - ndc_x s, H/2 - ndc_y s) with s = min(H, W) / 2."""
    Xc = X @ R + T
    ndc = f * Xc[:, :2] / Xc[:, 2:] + p
    s = min(H, W) / 2
    return np.stack([W / 2 - ndc[:, 0] * s, H / 2 - ndc[:, 1] * s], 1)


def test_co3d(tmp_path):
    cat = tmp_path / "apple"
    H, W = 30, 40
    anns = []
    for k in range(3):
        Rp = _pose(10 + k)[:3, :3]
        Tp = np.array([0.1, -0.2, 5.0 + k])
        dpath = cat / "seq1" / "depths" / f"frame{k:06d}.jpg.geometric.png"
        dpath.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W), 2.5, np.float16).view(np.uint16)).save(dpath)
        anns.append({"sequence_name": "seq1", "frame_number": k, "frame_timestamp": k / 10,
                     "image": {"path": f"apple/seq1/images/frame{k:06d}.jpg", "size": [H, W]},
                     "depth": {"path": str(dpath.relative_to(tmp_path)), "scale_adjustment": 2.0},
                     "viewpoint": {"R": Rp.tolist(), "T": Tp.tolist(), "focal_length": [1.8, 1.9],
                                   "principal_point": [0.05, -0.1], "intrinsics_format": "ndc_isotropic"}})
    with gzip.open(cat / "frame_annotations.jgz", "wt") as f:
        json.dump(anns, f)
    s = read_dataset(cat)
    assert s.layout == "co3d" and len(s) == 3
    X = np.random.default_rng(0).normal(size=(5, 3)) * 0.5
    for a, fr in zip(anns, s.frames):
        vp = a["viewpoint"]
        ref = _p3d_project(np.array(vp["R"]), np.array(vp["T"]), np.array(vp["focal_length"]),
                           np.array(vp["principal_point"]), X, H, W)
        uv, z = _project(fr.K, fr.cam2world, X)
        assert (z > 0).all()
        np.testing.assert_allclose(uv, ref, atol=1e-9)
    assert s.frames[0].load_depth()[0, 0] == pytest.approx(5.0)
    with pytest.raises(DatasetError, match="seq9"):
        read_co3d(cat, sequence="seq9")


def test_realestate10k(tmp_path):
    T = _pose(4)
    w2c = np.linalg.inv(T)[:3]
    txt = "https://www.youtube.com/watch?v=x\n"
    txt += " ".join(["33366667", "0.5", "0.9", "0.5", "0.5", "0", "0"] + [_fmt(v) for v in w2c.ravel()]) + "\n"
    f = tmp_path / "abc.txt"
    f.write_text(txt)
    _img(tmp_path / "abc" / "33366667.png", 64, 48)
    s = read_dataset(f)
    assert s.layout == "realestate10k"
    fr = s.frames[0]
    np.testing.assert_allclose(fr.K, [[32, 0, 32], [0, 43.2, 24], [0, 0, 1]])
    np.testing.assert_allclose(fr.cam2world, T, atol=1e-10)
    assert fr.timestamp == pytest.approx(33.366667)
    s2 = read_realestate10k(f, image_dir=tmp_path / "none", image_size_wh=(640, 360))
    assert s2.frames[0].K[0, 0] == 320
    with pytest.raises(DatasetError, match="image_size_wh"):
        read_realestate10k(f, image_dir=tmp_path / "none")
    f.write_text(txt + "1 2 3\n")
    with pytest.raises(DatasetError, match="19 columns"):
        read_dataset(f, layout="realestate10k")


def test_generic_roundtrip_and_errors(tmp_path):
    img = _img(tmp_path / "images" / "0.png")
    dep = np.zeros((48, 64), np.uint16)
    dep[10, 10] = 2345
    Image.fromarray(dep).save(tmp_path / "d0.png")
    np.save(tmp_path / "d1.npy", np.where(np.eye(48, 64) > 0, 3.0, np.nan))
    _img(tmp_path / "images" / "1.png")
    from pointmap.eval.readers.base import Frame
    frames = [Frame("0", img, K0, 64, 48, cam2world=_pose(1), depth_path=tmp_path / "d0.png", depth_scale=1000.0),
              Frame("1", tmp_path / "images" / "1.png", K0, 64, 48, depth_path=tmp_path / "d1.npy")]
    write_scene_json(tmp_path, frames)
    s = read_dataset(tmp_path)
    assert s.layout == "generic" and len(s) == 2
    np.testing.assert_allclose(s.frames[0].cam2world, _pose(1))
    assert s.frames[1].cam2world is None
    assert s.frames[0].load_depth()[10, 10] == pytest.approx(2.345)
    d1 = s.frames[1].load_depth()
    assert d1[5, 5] == 3.0 and d1[5, 6] == 0.0
    spec = json.loads((tmp_path / "scene.json").read_text())
    spec["frames"][0]["K"] = [50, 52, 31.5, 23.5]
    json.dump(spec, open(tmp_path / "scene.json", "w"))
    assert read_dataset(tmp_path).frames[0].K[0, 2] == 31.5
    spec["frames"][0]["K"] = [50, "abc", 31.5, 2]
    json.dump(spec, open(tmp_path / "scene.json", "w"))
    with pytest.raises(DatasetError, match="'abc' is not a number"):
        read_dataset(tmp_path)
    spec["frames"][0]["K"] = [1, 2, 3]
    json.dump(spec, open(tmp_path / "scene.json", "w"))
    with pytest.raises(DatasetError, match=r"frames\[0\]\.K"):
        read_dataset(tmp_path)
    spec["frames"][0]["K"] = [50, 52, 31.5, 23.5]
    spec["frames"][0]["image"] = "images/missing.png"
    json.dump(spec, open(tmp_path / "scene.json", "w"))
    with pytest.raises(DatasetError, match="missing.png"):
        read_dataset(tmp_path)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="known layouts: generic"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="unknown dataset layout 'foo'.*7scenes"):
        read_dataset(tmp_path / "empty", layout="foo")
    with pytest.raises(DatasetError, match="not a folder"):
        read_dataset(tmp_path / "nope", layout="7scenes")
    # Middlebury: wrong column count and a bad number
    mv = tmp_path / "mv"
    _img(mv / "a.png")
    row = "a.png " + " ".join(["1"] * 9) + " 1 0 0 0 1 0 0 0 1 0 0 1"
    (mv / "x_par.txt").write_text("1\n" + row[:-2] + "\n")
    with pytest.raises(DatasetError, match="22 columns"):
        read_dataset(mv)
    (mv / "x_par.txt").write_text("1\n" + row.replace(" 1 0 0 0 1", " 1 0 zz 0 1", 1) + "\n")
    with pytest.raises(DatasetError, match="'zz' is not a number"):
        read_dataset(mv)
    # 7-Scenes: pose without colour image; non-rigid pose
    ss = tmp_path / "ss"
    ss.mkdir()
    np.savetxt(ss / "frame-000000.pose.txt", np.eye(4))
    with pytest.raises(DatasetError, match="frame-000000.color.png"):
        read_dataset(ss)
    _img(ss / "frame-000000.color.png")
    np.savetxt(ss / "frame-000000.pose.txt", 2 * np.eye(4))
    with pytest.raises(DatasetError, match="orthonormal"):
        read_dataset(ss)
    # Strecha: truncated camera file
    st = tmp_path / "st" / "gt_dense_cameras"
    st.mkdir(parents=True)
    (st / "0.jpg.camera").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(DatasetError, match="expected 26 numbers"):
        read_dataset(tmp_path / "st")
    # TUM: an unknown camera asks for K
    tum = tmp_path / "my_rgbd"
    _img(tum / "rgb" / "1.500000.png")
    with pytest.raises(DatasetError, match="pass K"):
        read_dataset(tum)
    assert len(read_dataset(tum, K=K0)) == 1


def test_tum_association_and_interpolation(tmp_path):
    seq = tmp_path / "rgbd_dataset_freiburg3_test"
    _img(seq / "rgb" / "10.000000.png")
    _img(seq / "rgb" / "20.000000.png")
    (seq / "depth").mkdir()
    Image.fromarray(np.full((48, 64), 5000, np.uint16)).save(seq / "depth" / "10.015000.png")
    Image.fromarray(np.full((48, 64), 5000, np.uint16)).save(seq / "depth" / "20.050000.png")  # too far
    q0 = [0, 0, 0, 1]
    q1 = list(np.r_[np.sin(np.radians(45)) * np.array([0, 0, 1]), np.cos(np.radians(45))])  # 90 deg about z
    (seq / "groundtruth.txt").write_text(
        "# timestamp tx ty tz qx qy qz qw\n"
        f"9.99 0 0 0 {' '.join(map(str, q0))}\n10.01 1 0 0 {' '.join(map(str, q1))}\n")
    s = read_dataset(seq)
    a, b = s.frames
    assert a.has_depth and not b.has_depth and b.cam2world is None
    assert a.load_depth()[0, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(a.cam2world[:3, 3], [0.5, 0, 0], atol=1e-9)
    angle = math.degrees(math.atan2(a.cam2world[1, 0], a.cam2world[0, 0]))
    assert angle == pytest.approx(45.0)
    assert set(LAYOUTS) >= {"tum", "generic", "co3d", "dtu", "kitti", "nyuv2", "scannet"}


def test_kitti_raw_layout_and_velodyne(tmp_path):
    from pointmap.eval.readers.kitti import velodyne_to_depth

    P = np.c_[K0, [0.0, 0, 0]]
    (tmp_path / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\nR_rect_00: 1 0 0 0 1 0 0 0 1\nP_rect_02: " + " ".join(map(_fmt, P.ravel())) + "\n")
    (tmp_path / "calib_velo_to_cam.txt").write_text("R: 1 0 0 0 1 0 0 0 1\nT: 0 0 0\n")
    drive = tmp_path / "drive_0001_sync"
    _img(drive / "image_02" / "data" / "0000000000.png")
    _img(drive / "image_02" / "data" / "0000000001.png")
    gt = np.zeros((48, 64), np.uint16)
    gt[10, 10] = 256 * 7
    (drive / "proj_depth" / "groundtruth" / "image_02").mkdir(parents=True)
    Image.fromarray(gt).save(drive / "proj_depth" / "groundtruth" / "image_02" / "0000000001.png")
    s = read_dataset(drive)
    assert s.layout == "kitti" and len(s) == 2 and not s.frames[0].has_depth
    np.testing.assert_allclose(s.frames[1].K, K0)
    assert s.frames[1].load_depth()[10, 10] == pytest.approx(7.0)
    pts = np.array([[0.65, 0.25, 5.0, 1.0], [0.52, 0.2, 4.0, 1.0], [0, 0, -3.0, 1.0]], np.float32)  # 2 on one pixel
    pts.tofile(tmp_path / "scan.bin")
    d = velodyne_to_depth(tmp_path / "scan.bin", drive, 64, 48)
    u, v = 38, 26  # 50 * 0.13 + 31.5, 52 * 0.05 + 23.5
    assert d[v, u] == pytest.approx(4.0) and (d > 0).sum() == 1  # nearest wins; behind dropped
