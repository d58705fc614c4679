"""Exporters: GLB, PLY, depth maps, cameras JSON, export_scene, atomic writes.

The synthetic scene: three cameras looking at the plane ``z = 4`` (world, OpenCV axes), colours a
function of the world position, so every exported point has a known place and colour.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from pointmap.errors import OutputExistsError, PointmapError
from pointmap.export import FORMATS, export_scene
from pointmap.export import glb as glb_mod
from pointmap.export import ply as ply_mod
from pointmap.export.cameras import export_cameras
from pointmap.export.common import rgb_uint8
from pointmap.export.depth import colorize, export_depth, read_depth_png
from pointmap.export.glb import auto_cam_size, build_glb_scene, export_glb
from pointmap.export.ply import export_ply
from pointmap.io_utils import MANIFEST_NAME
from pointmap.scene import Scene

from export_scenes import H, METAS, PLANE_Z, W, make_scene, plane_colour

def _valid_points(scene: Scene):
    pts, cols, confs = [], [], []
    for k in range(len(scene)):
        m = scene.masks[k].numpy() & bool(scene.placed[k])
        pts.append(scene.pts3d[k].numpy()[m]); cols.append(scene.imgs[k].numpy()[m])
        confs.append(scene.confidence[k].numpy()[m])
    return np.concatenate(pts), np.concatenate(cols), np.concatenate(confs)


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------- PLY


def test_synthetic_scene_lies_on_plane():
    scene = make_scene()
    for X in scene.pts3d:
        assert np.allclose(X[..., 2].numpy(), PLANE_Z, atol=1e-4)


def test_ply_points_colours_confidence(tmp_path):
    scene = make_scene()
    path = export_ply(scene, tmp_path / "p.ply")
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n")].decode()
    props = re.findall(r"property (\w+) (\w+)", header)
    assert "format binary_little_endian 1.0" in header
    assert props == [("float", "x"), ("float", "y"), ("float", "z"), ("uchar", "red"),
                     ("uchar", "green"), ("uchar", "blue"), ("float", "confidence")]
    pc = trimesh.load(path)
    pts, _, confs = _valid_points(scene)
    assert isinstance(pc, trimesh.PointCloud)
    assert len(pc.vertices) == len(pts) == sum(int(m.sum()) for m in scene.masks)
    assert np.allclose(pc.vertices, pts, atol=1e-5)
    assert np.allclose(pc.vertices[:, 2], PLANE_Z, atol=1e-4)
    expected = np.round(plane_colour(pts.astype(np.float64)) * 255)
    assert np.abs(pc.colors[:, :3].astype(int) - expected).max() <= 1
    conf = pc.metadata["_ply_raw"]["vertex"]["data"]["confidence"]
    assert np.allclose(conf, confs) and (conf > 3.0).all()


def test_ply_normals_face_cameras(tmp_path):
    scene = make_scene()
    path = export_ply(scene, tmp_path / "n.ply", normals=True)
    data = trimesh.load(path).metadata["_ply_raw"]["vertex"]["data"]
    n = np.stack([data["nx"], data["ny"], data["nz"]], 1)
    # the plane z = 4 seen from cameras at z < 4: the normal facing them is -z
    assert np.allclose(n, [0.0, 0.0, -1.0], atol=1e-4)


def test_ply_excludes_unplaced_and_honours_mask(tmp_path):
    scene = make_scene(placed=[True, False, True])
    pc = trimesh.load(export_ply(scene, tmp_path / "p.ply"))
    assert len(pc.vertices) == int(scene.masks[0].sum() + scene.masks[2].sum())
    only_first = [torch.zeros(H, W, dtype=torch.bool) for _ in range(3)]
    only_first[0][3, 5] = True
    pc = trimesh.load(export_ply(scene, tmp_path / "q.ply", mask=only_first))
    assert np.allclose(pc.vertices[0], scene.pts3d[0][3, 5].numpy(), atol=1e-6)
    with pytest.raises(PointmapError, match="mask"):
        export_ply(scene, tmp_path / "r.ply", mask=only_first[:2])


# --------------------------------------------------------------------------------------------- GLB


def _load_glb(path: Path) -> trimesh.Scene:
    return trimesh.load(path, file_type="glb", process=False)


def _camera_nodes(s: trimesh.Scene) -> list[str]:
    return sorted(n for n in s.graph.nodes_geometry if re.fullmatch(r"camera_\d{3,}", n))


def test_glb_pointcloud_frame_colours_and_cameras(tmp_path):
    scene = make_scene()
    s = _load_glb(export_glb(scene, tmp_path / "s.glb"))
    pc = s.geometry["points"]
    pts, cols, _ = _valid_points(scene)
    assert len(pc.vertices) == len(pts)
    # reference viewer frame: inverse(cam2world_0 @ diag(1,-1,-1,1) @ Rot_y(180)) = diag(-1,-1,1) @ world2cam_0
    w2c0 = np.linalg.inv(scene.poses[0].double().numpy())
    expected = (pts @ w2c0[:3, :3].T + w2c0[:3, 3]) * np.array([-1.0, -1.0, 1.0])
    assert np.allclose(pc.vertices, expected, atol=1e-4)
    assert np.abs(pc.colors[:, :3].astype(int) - np.round(cols * 255)).max() <= 1
    assert _camera_nodes(s) == ["camera_000", "camera_001", "camera_002"]
    assert s.metadata["pointmap"]["n_cameras"] == 3
    # camera 0 sits at the origin of the viewer frame; frustum colour from the palette (red)
    f0 = s.geometry["camera_000"]
    apex_dist = np.linalg.norm(f0.vertices, axis=1).min()
    assert apex_dist < 0.05 * auto_cam_size(scene)
    assert tuple(f0.visual.main_color[:3]) == (255, 0, 0)
    assert tuple(s.geometry["camera_001"].visual.main_color[:3]) == (0, 0, 255)
    assert "camera_000_image" in s.geometry  # textured image quad at the base


def test_glb_textures_are_the_png_files_pillow_writes(tmp_path):
    # the textures are encoded on the export's threads: the GLB holds the bytes Pillow's default
    # PNG encoding gives, and other saves of a texture still encode it
    scene = make_scene(n=2)
    data = export_glb(scene, tmp_path / "s.glb").read_bytes()
    for k in range(2):
        img = Image.fromarray(rgb_uint8(scene.imgs[k]))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        assert buf.getvalue() in data
        tex = glb_mod._texture(np.asarray(img))
        again = io.BytesIO()
        tex.save(again, format="PNG", compress_level=0)
        assert len(again.getvalue()) > len(buf.getvalue())
        assert np.array_equal(np.asarray(Image.open(again)), np.asarray(img))


def test_glb_unplaced_and_transparent(tmp_path):
    scene = make_scene(placed=[True, False, True])
    s = _load_glb(export_glb(scene, tmp_path / "s.glb", transparent_cams=True, cam_size=0.3))
    assert _camera_nodes(s) == ["camera_000", "camera_002"]
    assert s.metadata["pointmap"]["n_cameras"] == 2
    assert not [n for n in s.geometry if n.endswith("_image")]
    assert len(s.geometry["points"].vertices) == int(scene.masks[0].sum() + scene.masks[2].sum())
    # frustum depth = cam_size: the base corners are 0.3 in front of camera 2 along its axis
    T = glb_mod.viewer_transform(scene)
    M = T @ scene.poses[2].double().numpy()
    local = (s.geometry["camera_002"].vertices - M[:3, 3]) @ M[:3, :3]
    assert np.isclose(local[:, 2].max(), 0.3, atol=1e-6) and local[:, 2].min() > -1e-6


def test_glb_mesh_faces(tmp_path):
    scene = make_scene(n=2, full_mask=True)
    quads = (H - 1) * (W - 1)
    mesh = build_glb_scene(scene, as_pointcloud=False).geometry["mesh"]
    assert len(mesh.faces) == 2 * 2 * 2 * quads  # 2 images, 2 triangles per quad, 2 windings
    # face colours as the reference: top-left pixel for (tl, tr, bl), bottom-right for (tr, bl, br)
    rgb0 = np.round(scene.imgs[0].numpy() * 255).astype(int)
    fc = mesh.visual.face_colors[:, :3].astype(int)
    assert np.abs(fc[0] - rgb0[0, 0]).max() <= 1 and np.abs(fc[quads] - rgb0[1, 1]).max() <= 1
    T = glb_mod.viewer_transform(scene)
    X = scene.pts3d[0].double().numpy()
    expected = np.stack([X[0, 0], X[0, 1], X[1, 0]]) @ T[:3, :3].T + T[:3, 3]
    assert np.allclose(mesh.vertices[mesh.faces[0]], expected, atol=1e-5)
    # an interior invalid pixel removes the 6 triangles that touch it (x2 windings)
    masks = [m.clone() for m in scene.masks]
    masks[0][5, 7] = False
    mesh2 = build_glb_scene(scene, as_pointcloud=False, mask=masks).geometry["mesh"]
    assert len(mesh2.faces) == len(mesh.faces) - 12
    # every face exists in both windings
    f = {tuple(x) for x in mesh2.faces.tolist()}
    assert all(tuple(x[::-1]) in f for x in mesh2.faces.tolist())
    s = _load_glb(export_glb(scene, tmp_path / "m.glb", as_pointcloud=False, mask=masks))
    assert len(s.geometry["mesh"].faces) == len(mesh2.faces)
    assert len(_camera_nodes(s)) == 2


def test_auto_cam_size_median_camera_distance():
    scene = make_scene()
    c = scene.poses[:, :3, 3].double().numpy()
    d = [np.linalg.norm(c[i] - c[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert auto_cam_size(scene) == pytest.approx(0.1 * float(np.median(d)))
    one = make_scene(n=1)
    med_depth = float(np.median(one.depths[0].numpy()[one.masks[0].numpy()]))
    assert auto_cam_size(one) == pytest.approx(0.1 * med_depth, rel=1e-5)


# ------------------------------------------------------------------------------------------- depth


@pytest.mark.parametrize("resolution", ["network", "original"])
def test_depth_png_round_trip(tmp_path, resolution):
    scene = make_scene()
    sidecar = json.loads(export_depth(scene, tmp_path, resolution=resolution).read_text())
    src = scene if resolution == "network" else scene.to_original()
    for k, (stem, e) in enumerate(sidecar["images"].items()):
        depth = src.depths[k].numpy().astype(np.float64)
        valid = src.masks[k].numpy()
        if resolution == "original":
            assert (e["width"], e["height"]) == METAS[k][0]
        d, scale = read_depth_png(tmp_path / e["depth_png"])
        assert scale == pytest.approx(e["scale"]) == pytest.approx(65535 / depth[valid].max())
        assert np.abs(d[valid] - depth[valid]).max() <= 0.5 / scale + 1e-6
        assert (d[~valid] == 0).all()
        raw = np.array(Image.open(tmp_path / e["depth_png"]))
        assert raw.max() == 65535  # the largest depth uses the full range
        assert np.array_equal(np.load(tmp_path / e["depth_npy"]), depth.astype(np.float32))
        assert np.array_equal(np.load(tmp_path / e["conf_npy"]), src.confidence[k].numpy())
        assert np.array_equal(np.array(Image.open(tmp_path / e["mask_png"])) > 0, valid)
        prev = np.array(Image.open(tmp_path / e["depth_preview"]))
        assert prev.shape == (*depth.shape, 3)
        assert (prev[~valid] == 0).all()
        # not washed out: percentile normalisation spreads the valid pixels over the colour map
        assert np.ptp(prev[valid].astype(int), axis=0).max() > 150


# ----------------------------------------------------------------------------------------- cameras


def test_cameras_json(tmp_path):
    scene = make_scene(placed=[True, True, False])
    data = json.loads(export_cameras(scene, tmp_path / "cameras.json").read_text())
    assert [im["placed"] for im in data["images"]] == [True, True, False]
    im = data["images"][1]  # original 100x60 -> resized 40x24 (x2.5) -> crop left 4
    assert (im["width"], im["height"], im["network_width"], im["network_height"]) == (100, 60, 32, 24)
    K0 = np.array(im["K_original"])
    assert K0[0, 0] == pytest.approx(28.0 * 2.5) and K0[1, 1] == pytest.approx(26.0 * 2.5)
    assert K0[0, 2] == pytest.approx((16 + 4 + 0.5) * 2.5 - 0.5)
    assert K0[1, 2] == pytest.approx((12 + 0 + 0.5) * 2.5 - 0.5)
    assert np.allclose(np.array(im["world2cam"]) @ np.array(im["cam2world"]), np.eye(4), atol=1e-6)
    assert im["focal"] == pytest.approx(27.0) and im["file"] == "img1.png"


# ---------------------------------------------------------------------------- export_scene, writes


def test_export_scene_all_formats_and_overwrite(tmp_path):
    scene = make_scene()
    out = tmp_path / "out"
    paths = export_scene(scene, out, max_points=500)
    assert set(FORMATS) <= set(paths)
    for p in paths.values():
        assert p.exists()
    assert sorted(p.name for p in (out / "images").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert Image.open(out / "images" / "img1.png").size == (100, 60)  # original resolution
    assert json.loads((out / "transforms.json").read_text())["ply_file_path"] == "points.ply"
    assert _no_temp_files(out)
    before = (out / "points.ply").read_bytes()
    with pytest.raises(OutputExistsError, match="not empty"):
        export_scene(scene, out, formats=("ply",))
    assert (out / "points.ply").read_bytes() == before and (out / "scene.glb").exists()
    paths = export_scene(scene, out, formats=("ply", "cameras"), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "cameras.json", "points.ply"]
    with pytest.raises(PointmapError, match="unknown export format"):
        export_scene(scene, tmp_path / "x", formats=("obj",))


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    scene = make_scene()
    path = export_ply(scene, tmp_path / "p.ply")
    old = path.read_bytes()

    def half_then_fail(f, vertices):
        f.write(vertices.tobytes()[: vertices.nbytes // 2])
        raise RuntimeError("simulated crash mid-write")

    monkeypatch.setattr(ply_mod, "_write_body", half_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        export_ply(make_scene(placed=[True, False, True]), path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.ply"]


@pytest.mark.parametrize("fmt", ["glb", "depth", "cameras"])
def test_disk_full_keeps_old_files(tmp_path, monkeypatch, fmt):
    scene = make_scene()
    export_scene(scene, tmp_path, formats=(fmt,))
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    writer = {"glb": lambda: export_glb(scene, tmp_path / "scene.glb", as_pointcloud=False),
              "depth": lambda: export_depth(scene, tmp_path / "depth", resolution="original"),
              "cameras": lambda: export_cameras(scene, tmp_path / "cameras.json")}[fmt]
    with pytest.raises(PointmapError, match="could not write"):
        writer()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot
    assert _no_temp_files(tmp_path)


def test_export_scene_progress_bar_counts_every_step(tmp_path, capsys):
    scene = make_scene()
    export_scene(scene, tmp_path / "quiet", formats=("ply", "colmap"), max_points=500)
    assert "export" not in capsys.readouterr().err
    export_scene(scene, tmp_path / "out", formats=("ply", "colmap"), max_points=500, progress=True)
    err = capsys.readouterr().err
    # three image copies (colmap needs them), then one step per format
    assert "export" in err and "5/5" in err and "colmap" in err


def test_colorize_is_opencv_turbo_of_the_normalised_valid_values():
    rng = np.random.default_rng(0)
    values = rng.uniform(1.0, 9.0, (12, 10)).astype(np.float32)
    valid = rng.random((12, 10)) > 0.3
    lo, hi = np.percentile(values[valid], (2.0, 98.0))
    t = 1.0 - np.clip((values.astype(np.float64) - lo) / (hi - lo), 0, 1)
    ref = cv2.applyColorMap(np.round(t * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    got = colorize(values, valid, invert=True)
    assert np.array_equal(got[valid], ref[valid]) and not got[~valid].any()
    assert tuple(colorize(np.array([[0.0, 1.0]]), np.array([[True, True]]))[0, 1]) == tuple(
        cv2.applyColorMap(np.array([[255]], np.uint8), cv2.COLORMAP_TURBO)[0, 0, ::-1])


def test_glb_transform_in_blocks_is_the_one_product():
    rng = np.random.default_rng(1)
    pts, T = rng.normal(size=(2 * glb_mod._ROWS + 5, 3)), rng.normal(size=(4, 4))
    assert np.array_equal(glb_mod._apply(T, pts), pts @ T[:3, :3].T + T[:3, 3])
