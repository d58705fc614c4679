"""COLMAP export: round trip through pycolmap (binary and text), own text reader, zip bundle."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from export_scenes import METAS, make_scene

from pointmap.errors import PointmapError
from pointmap.export.colmap import (
    build_colmap_model,
    export_colmap,
    read_colmap_text,
    write_colmap_binary,
    zip_model,
)


@pytest.fixture
def pycolmap():
    """pycolmap (the ``colmap`` extra); the tests that read models with it skip without it."""
    return pytest.importorskip("pycolmap")


def _expected_pinhole(k: int) -> np.ndarray:
    """COLMAP params (fx fy cx cy) of image k by hand: network K (f 28/26, pp 16/12) scaled by the
    resize, shifted by the crop; COLMAP's pixel centres at +0.5: cx = (16 + left + 0.5) * s."""
    (W0, H0), (Wr, Hr), (left, top, _, _) = METAS[k]
    sx, sy = W0 / Wr, H0 / Hr
    return np.array([28.0 * sx, 26.0 * sy, (16 + left + 0.5) * sx, (12 + top + 0.5) * sy])


def _cam_from_world(im) -> tuple[np.ndarray, np.ndarray]:
    rig = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
    return rig.rotation.matrix(), np.asarray(rig.translation)


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_pycolmap_round_trip(tmp_path, fmt, pycolmap):
    scene = make_scene(placed=[True, True, False])
    files = export_colmap(scene, tmp_path, fmt, max_points=400)
    assert sorted(p.name for p in files.values()) == sorted(f"{n}.{fmt}" for n in ("cameras", "images", "points3D"))
    rec = pycolmap.Reconstruction(str(tmp_path))
    assert sorted(rec.cameras) == [1, 2] and sorted(rec.images) == [1, 2]  # unplaced image 3 left out
    for k in (0, 1):
        cam = rec.cameras[k + 1]
        assert cam.model.name == "PINHOLE"
        assert (cam.width, cam.height) == METAS[k][0]
        assert np.allclose(cam.params, _expected_pinhole(k), atol=1e-6)
        im = rec.images[k + 1]
        R, t = _cam_from_world(im)
        w2c = np.linalg.inv(scene.poses[k].double().numpy())
        assert np.allclose(R, w2c[:3, :3], atol=1e-6) and np.allclose(t, w2c[:3, 3], atol=1e-6)
        assert im.name == f"img{k}.png"
    assert len(rec.points3D) == 400
    # tracks: each observation is where the point projects (exactly in its source image, within
    # half a network pixel elsewhere); the stored error matches
    n_multi = 0
    for pid, p in rec.points3D.items():
        errs = []
        for el in p.track.elements:
            im, cam = rec.images[el.image_id], rec.cameras[el.image_id]
            R, t = _cam_from_world(im)
            Xc = R @ p.xyz + t
            fx, fy, cx, cy = cam.params
            proj = np.array([fx * Xc[0] / Xc[2] + cx, fy * Xc[1] / Xc[2] + cy])
            obs = im.points2D[el.point2D_idx]
            assert obs.point3D_id == pid
            err = np.linalg.norm(proj - np.asarray(obs.xy))
            # off by at most half a network pixel diagonal, in original pixels
            (W0, H0), (Wr, Hr), _ = METAS[el.image_id - 1]
            assert err <= 0.5 * np.hypot(W0 / Wr, H0 / Hr) + 1e-3
            errs.append(err)
        assert errs[0] < 1e-3
        assert p.error == pytest.approx(np.mean(errs), abs=2e-3)  # COLMAP: mean over the track
        n_multi += len(errs) > 1
    assert n_multi > 100  # overlapping views give multi-view tracks


def test_points_lie_on_plane_with_colours(tmp_path, pycolmap):
    scene = make_scene()
    export_colmap(scene, tmp_path, "bin", max_points=200)
    rec = pycolmap.Reconstruction(str(tmp_path))
    xyz = np.array([p.xyz for p in rec.points3D.values()])
    assert np.allclose(xyz[:, 2], 4.0, atol=1e-4)
    from export_scenes import plane_colour
    rgb = np.array([p.color for p in rec.points3D.values()]).astype(int)
    assert np.abs(rgb - np.round(plane_colour(xyz) * 255)).max() <= 2


def test_text_reader_matches_binary(tmp_path):
    scene = make_scene()
    model = build_colmap_model(scene, max_points=150)
    export_colmap(scene, tmp_path / "txt", "txt", model=model)
    back = read_colmap_text(tmp_path / "txt")
    assert back.cameras.keys() == model.cameras.keys()
    for cid in model.cameras:
        assert back.cameras[cid][:2] == model.cameras[cid][:2]
        assert np.array_equal(back.cameras[cid][2], model.cameras[cid][2])
    for a, b in zip(back.images, model.images):
        assert (a.image_id, a.camera_id, a.name) == (b.image_id, b.camera_id, b.name)
        assert np.array_equal(a.qvec, b.qvec) and np.array_equal(a.tvec, b.tvec)
        assert np.array_equal(a.xys, b.xys) and np.array_equal(a.point3d_ids, b.point3d_ids)
    assert np.array_equal(back.xyz, model.xyz) and np.array_equal(back.rgb, model.rgb)
    assert all(np.array_equal(x, y) for x, y in zip(back.tracks, model.tracks))
    # unit quaternion with qw >= 0
    q = np.array([im.qvec for im in back.images])
    assert np.allclose(np.linalg.norm(q, axis=1), 1) and (q[:, 0] >= 0).all()


def test_zip_model(tmp_path):
    scene = make_scene()
    write_colmap_binary(build_colmap_model(scene, max_points=50), tmp_path / "sparse" / "0")
    z = zip_model(tmp_path / "sparse", tmp_path / "model.zip")
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == ["0/cameras.bin", "0/images.bin", "0/points3D.bin"]
        assert zf.read("0/images.bin") == (tmp_path / "sparse" / "0" / "images.bin").read_bytes()
    with pytest.raises(PointmapError):
        zip_model(tmp_path / "missing", tmp_path / "x.zip")
    with pytest.raises(PointmapError, match="format"):
        export_colmap(scene, tmp_path / "y", "json")  # type: ignore[arg-type]


def test_tracks_look_into_the_nearest_views_only():
    """With more images than ``max_track_views``, a point's track holds its source image and
    those of the full track that are among the source camera's nearest ones (by centre)."""
    scene = make_scene(8, metas=False, full_mask=True)
    full = build_colmap_model(scene, max_points=300)  # 7 other views <= 16: every view is tried
    capped = build_colmap_model(scene, max_points=300, max_track_views=2)
    np.testing.assert_array_equal(full.xyz, capped.xyz)  # the same sampled points
    C = scene.poses[:, :3, 3].numpy()
    assert max(len(t) for t in full.tracks) > 3  # the cap bites
    for a, b in zip(full.tracks, capped.tracks):
        src = int(a[0, 0]) - 1
        assert int(b[0, 0]) - 1 == src
        d = np.linalg.norm(C - C[src], axis=1)
        d[src] = np.inf
        near = set((np.argsort(d)[:2] + 1).tolist())
        assert set(b[1:, 0].tolist()) == set(a[1:, 0].tolist()) & near
