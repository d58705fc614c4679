"""Interchange formats (:mod:`pointmap.formats`): each writer's file read back by its reader gives
the same cameras, poses and points; the files hold the formats' own conventions (checked against
hand-written expectations and, for COLMAP, against pycolmap); malformed files are refused with
one line naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import roma
import torch

from pointmap.errors import FormatError
from pointmap.formats.colmap import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    camera_intrinsics,
    camera_to_world,
    pinhole_camera,
    read_colmap_model,
    world_to_camera,
    write_colmap_binary,
    write_colmap_text,
)
from pointmap.formats.nerfstudio import TransformsFrame, read_transforms, write_transforms


def _poses(n: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    T = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    T[:, :3, :3] = roma.rotvec_to_rotmat(torch.randn(n, 3, generator=g, dtype=torch.float64))
    T[:, :3, 3] = 3 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return T.numpy()


def _intrinsics(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    K = np.tile(np.eye(3), (n, 1, 1))
    K[:, 0, 0], K[:, 1, 1] = rng.uniform(200, 400, n), rng.uniform(200, 400, n)  # fx != fy
    K[:, 0, 2], K[:, 1, 2] = rng.uniform(150, 170, n), rng.uniform(110, 130, n)
    return K


def _model(n: int = 3, n_points: int = 20) -> tuple[ColmapModel, np.ndarray, np.ndarray]:
    """A model of ``n`` PINHOLE cameras from pointmap intrinsics and poses, with points."""
    K, T = _intrinsics(n), _poses(n)
    rng = np.random.default_rng(1)
    model = ColmapModel(units_note="units: metres (test)")
    for k in range(n):
        model.cameras[k + 1] = pinhole_camera(K[k], 320, 240)
        q, t = world_to_camera(T[k])
        ids = np.where(rng.random(6) < 0.5, -1, rng.integers(1, n_points + 1, 6))
        model.images.append(ColmapImage(k + 1, q, t, k + 1, f"view_{k}.jpg", rng.uniform(0, 300, (6, 2)), ids))
    model.point_ids = np.arange(1, n_points + 1, dtype=np.int64)
    model.xyz, model.rgb = rng.normal(size=(n_points, 3)), rng.integers(0, 256, (n_points, 3)).astype(np.uint8)
    model.error = rng.uniform(0, 2, n_points)
    model.tracks = [rng.integers(0, 6, (int(rng.integers(0, 4)), 2)) for _ in range(n_points)]
    return model, K, T


def _assert_same_model(a: ColmapModel, b: ColmapModel, points: bool = True) -> None:
    assert a.cameras.keys() == b.cameras.keys()
    for cid in a.cameras:
        ca, cb = a.cameras[cid], b.cameras[cid]
        assert (ca.width, ca.height, ca.model) == (cb.width, cb.height, cb.model)
        assert np.array_equal(ca.params, cb.params)
    for x, y in zip(a.images, b.images, strict=True):
        assert (x.image_id, x.camera_id, x.name) == (y.image_id, y.camera_id, y.name)
        assert np.array_equal(x.qvec, y.qvec) and np.array_equal(x.tvec, y.tvec)
        if points:
            assert np.array_equal(x.xys, y.xys) and np.array_equal(x.point3d_ids, y.point3d_ids)
    if points:
        assert np.array_equal(a.point_ids, b.point_ids) and np.array_equal(a.xyz, b.xyz)
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.error, b.error)
        assert all(np.array_equal(s, t) for s, t in zip(a.tracks, b.tracks, strict=True))


@pytest.mark.parametrize("writer", [write_colmap_text, write_colmap_binary])
def test_colmap_round_trip_is_exact(tmp_path, writer):
    model, K, T = _model()
    writer(model, tmp_path)
    back = read_colmap_model(tmp_path)
    _assert_same_model(back, model)
    for k, im in enumerate(back.images):
        K_back, distorted = camera_intrinsics(back.cameras[im.camera_id])
        assert not distorted
        np.testing.assert_allclose(K_back, K[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(camera_to_world(im.qvec, im.tvec), T[k], rtol=0, atol=1e-12)
    if writer is write_colmap_text:
        assert back.units_note == model.units_note
    light = read_colmap_model(tmp_path, points=False)  # cameras and poses only
    _assert_same_model(light, model, points=False)
    assert len(light.point_ids) == 0 and all(len(im.xys) == 0 for im in light.images)


def test_colmap_files_hold_colmap_conventions(tmp_path):
    """By hand: PINHOLE params are ``fx fy cx+0.5 cy+0.5``; the image line holds the world-to-camera
    rotation (a 90 degree turn about z: quaternion (cos 45, 0, 0, -sin 45)) and ``-R^T t``."""
    K = np.array([[300.0, 0.0, 159.5], [0.0, 250.0, 119.5], [0.0, 0.0, 1.0]])
    c2w = np.eye(4)
    c2w[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    q, t = world_to_camera(c2w)
    model = ColmapModel(cameras={1: pinhole_camera(K, 320, 240)})
    model.images.append(ColmapImage(1, q, t, 1, "a.png", np.zeros((0, 2)), np.zeros(0, np.int64)))
    write_colmap_text(model, tmp_path)
    cam = [ln for ln in (tmp_path / "cameras.txt").read_text().splitlines() if not ln.startswith("#")]
    assert cam == ["1 PINHOLE 320 240 300.0 250.0 160.0 120.0"]
    img = [ln for ln in (tmp_path / "images.txt").read_text().splitlines() if not ln.startswith("#")][0].split()
    s = np.sqrt(0.5)
    np.testing.assert_allclose(np.array(img[1:8], float), [s, 0, 0, -s, -2.0, 1.0, -3.0], atol=1e-15)


def test_colmap_reader_reads_what_pycolmap_writes(tmp_path):
    """Independent truth: pycolmap reads our binary model and writes it as text in its own layout;
    our reader gets the same model back from pycolmap's text."""
    pycolmap = pytest.importorskip("pycolmap")
    model, K, T = _model()
    model = ColmapModel(cameras=model.cameras, images=model.images)  # cameras and poses only
    for im in model.images:
        im.xys, im.point3d_ids = np.zeros((0, 2)), np.zeros(0, np.int64)
    write_colmap_binary(model, tmp_path / "bin")
    rec = pycolmap.Reconstruction(str(tmp_path / "bin"))
    (tmp_path / "txt").mkdir()
    rec.write_text(str(tmp_path / "txt"))
    back = read_colmap_model(tmp_path / "txt")
    for k, im in enumerate(sorted(back.images, key=lambda im: im.image_id)):
        np.testing.assert_allclose(camera_intrinsics(back.cameras[im.camera_id])[0], K[k], atol=1e-9)
        np.testing.assert_allclose(camera_to_world(im.qvec, im.tvec), T[k], atol=1e-9)
        assert im.name == f"view_{k}.jpg"


def test_colmap_camera_models_by_hand():
    f, cx, cy = 500.0, 320.0, 240.0
    K, distorted = camera_intrinsics(ColmapCamera(640, 480, np.array([f, cx, cy, 0.02]), "SIMPLE_RADIAL"))
    np.testing.assert_array_equal(K, [[f, 0, cx - 0.5], [0, f, cy - 0.5], [0, 0, 1]])
    assert distorted
    params = np.array([f, 400.0, cx, cy, 0.0, 0.0, 0.0, 0.0])
    K, distorted = camera_intrinsics(ColmapCamera(640, 480, params, "OPENCV"))
    assert K[1, 1] == 400.0 and not distorted
    with pytest.raises(FormatError, match="OPENCV_FISHEYE is a fisheye model"):
        camera_intrinsics(ColmapCamera(640, 480, params, "OPENCV_FISHEYE"))
    with pytest.raises(FormatError, match="3 parameters"):
        camera_intrinsics(ColmapCamera(640, 480, params[:3], "PINHOLE"))


def test_colmap_reader_refuses_malformed_files(tmp_path):
    with pytest.raises(FormatError, match="holds no COLMAP model"):
        read_colmap_model(tmp_path)
    model, _, _ = _model()
    write_colmap_text(model, tmp_path / "t")
    (tmp_path / "t" / "cameras.txt").write_text("1 PINHOLE 320 240 1.0 2.0\n")
    with pytest.raises(FormatError, match="cameras.txt: cannot read camera line"):
        read_colmap_model(tmp_path / "t")
    write_colmap_binary(model, tmp_path / "b")
    data = (tmp_path / "b" / "points3D.bin").read_bytes()
    (tmp_path / "b" / "points3D.bin").write_bytes(data[:-5])
    with pytest.raises(FormatError, match="truncated or corrupt"):
        read_colmap_model(tmp_path / "b")
    assert len(read_colmap_model(tmp_path / "b", points=False).images) == 3  # points not needed


def _frames(shared: bool) -> list[TransformsFrame]:
    K, T = _intrinsics(3), _poses(3, seed=3)
    return [TransformsFrame(f"images/f{k}.png", T[k], K[0] if shared else K[k], (320, 240)) for k in range(3)]


@pytest.mark.parametrize("shared", [False, True])
def test_transforms_round_trip(tmp_path, shared):
    frames = _frames(shared)
    write_transforms(tmp_path / "transforms.json", frames, {"units": "scene"})
    back, distorted = read_transforms(tmp_path / "transforms.json")
    assert not distorted
    for a, b in zip(back, frames, strict=True):
        assert a.file_path == b.file_path and a.size == b.size and a.fov_x is None
        assert np.array_equal(a.cam2world, b.cam2world)  # the flip is exact
        np.testing.assert_allclose(a.K, b.K, rtol=0, atol=1e-12)
    data = json.loads((tmp_path / "transforms.json").read_text())
    assert data["units"] == "scene" and data["camera_model"] == "OPENCV"
    assert ("fl_x" in data) == shared and all(("fl_x" in fr) != shared for fr in data["frames"])


def test_transforms_file_holds_nerfstudio_conventions(tmp_path):
    """By hand: ``transform_matrix = cam2world @ diag(1, -1, -1, 1)``, ``cx = K[0, 2] + 0.5``; a
    frame without ``cx``/``cy`` has its principal point at the image centre, ((w-1)/2, (h-1)/2)."""
    fr = _frames(False)[0]
    write_transforms(tmp_path / "t.json", [fr])
    data = json.loads((tmp_path / "t.json").read_text())
    np.testing.assert_array_equal(data["frames"][0]["transform_matrix"], fr.cam2world @ np.diag([1.0, -1, -1, 1]))
    assert data["cx"] == fr.K[0, 2] + 0.5 and data["cy"] == fr.K[1, 2] + 0.5 and data["fl_y"] == fr.K[1, 1]
    del data["cx"], data["cy"]
    data["k1"] = 0.1
    (tmp_path / "t.json").write_text(json.dumps(data))
    (back,), distorted = read_transforms(tmp_path / "t.json")
    assert distorted and back.K[0, 2] == (320 - 1) / 2 and back.K[1, 2] == (240 - 1) / 2


def test_transforms_reader_refuses_malformed_files(tmp_path):
    path = tmp_path / "transforms.json"
    for text, message in (("{", "cannot read"), ('{"frames": 3}', "no 'frames' list"),
                          ('{"frames": [{"file_path": "a", "transform_matrix": [1, 2]}]}', "frame 0, transform_matrix"),
                          ('{"frames": [{"file_path": "a", "fl_x": "x"}]}', "must be numbers")):
        path.write_text(text)
        with pytest.raises(FormatError, match=message):
            read_transforms(path)
    with pytest.raises(FormatError, match="a pose, intrinsics and a size"):
        write_transforms(path, [TransformsFrame("a.png")])


def test_exporters_say_when_they_drop_a_skew(tmp_path):
    """PINHOLE cameras and transforms.json hold no skew: a scene with one is exported with a
    warning naming the format, never silently."""
    import logging

    from export_scenes import make_scene

    from pointmap.export.colmap import build_colmap_model
    from pointmap.export.nerfstudio import export_nerfstudio

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("pointmap.export.common")
    logger.addHandler(handler)
    try:
        scene = make_scene()
        build_colmap_model(scene, max_points=10)
        export_nerfstudio(scene, tmp_path / "a" / "transforms.json", copy_images=False)
        assert records == []
        scene.intrinsics[1, 0, 1] = 2.0
        build_colmap_model(scene, max_points=10)
        export_nerfstudio(scene, tmp_path / "b" / "transforms.json", copy_images=False)
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert messages == ["COLMAP's PINHOLE model cannot hold a camera's skew: 1 of 3 cameras are written without it",
                        "transforms.json cannot hold a camera's skew: 1 of 3 cameras are written without it"]


def test_cameras_json_round_trip(tmp_path):
    """pointmap's cameras.json: what the writer puts in, the reader gives back exactly; an
    unplaced image is listed and marked; a malformed entry is refused naming it."""
    from pointmap.formats.cameras_json import CONVENTION, camera_entry, read_cameras_json, write_cameras_json

    K = np.array([[300.0, 1.5, 255.5], [0, 310.0, 191.5], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, :3] = roma.rotvec_to_rotmat(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)).numpy()
    c2w[:3, 3] = [1.0, -2.0, 0.5]
    images = [camera_entry("a", "a.jpg", 0, True, K / 2, K, c2w, (512, 384), (256, 192), None, None, (10, 20)),
              camera_entry("b", "b.jpg", 1, False, K, K, np.eye(4), (512, 384), (256, 192), None, None, (0, 20))]
    path = write_cameras_json(tmp_path / "cameras.json", images, {"convention": CONVENTION})
    a, b = read_cameras_json(path)
    assert (a.file, a.placed, a.size) == ("a.jpg", True, (512, 384))
    np.testing.assert_array_equal(a.K_original, K)
    np.testing.assert_array_equal(a.cam2world, c2w)
    assert (b.file, b.placed, b.cam2world) == ("b.jpg", False, None)
    data = json.loads(path.read_text())
    np.testing.assert_allclose(np.array(data["images"][0]["world2cam"]) @ c2w, np.eye(4), atol=1e-12)
    data["images"][0]["cam2world"] = [[1, 2], [3, 4]]
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"cameras.json, image 0, cam2world"):
        read_cameras_json(path)
