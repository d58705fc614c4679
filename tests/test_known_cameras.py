"""Known cameras and masks from files: a synthetic scene whose cameras are written in each format
(pointmap cameras.json, nerfstudio transforms.json, COLMAP text and binary) from the ground truth
comes back exactly, in original image pixels, and the unknown camera is recovered."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import roma
import torch
from PIL import Image

from pointmap.align import AlignConfig, global_align
from pointmap.export.cameras import cameras_dict
from pointmap.images import ImageMeta, load_images
from pointmap.known_cameras import (
    CameraFileError,
    alignment_priors,
    load_masks,
    match_by_name,
    read_cameras,
)
from pointmap.testing.synthetic_pairs import make_synthetic_scene

# Originals of 200x130 pixels preprocessed at size=64: resized to 64x42, centre crop (0, 5, 64, 37)
# -> 64x32 network images: a non-trivial scale (3.125 x, 3.095 y) and crop offset.
ORIG = (200, 130)
NET = (64, 32)
N = 4
KNOWN = (0, 1, 2)  # image 3 has no entry in the camera files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for k in range(N):
        Image.fromarray(rng.integers(0, 255, (ORIG[1], ORIG[0], 3), dtype=np.uint8)).save(folder / f"view_{k}.png")
    images = load_images(folder, size=64)
    assert images[0].meta.crop_box == (0, 5, 64, 37) and images[0].true_shape == (NET[1], NET[0])
    gt = make_synthetic_scene(N, NET, seed=1, noise=0.003, distortion=0.005, n_blobs=1)
    K_net = gt.intrinsics.double()
    K_orig = torch.stack([images[k].meta.intrinsics_to_original(K_net[k]) for k in range(N)])
    return folder, images, gt, K_orig.numpy(), gt.poses.double().numpy()


def _write_pointmap(path, K_orig, poses):
    entries = [{"file": f"view_{k}.png", "name": f"view_{k}.png", "placed": True, "width": ORIG[0],
                "height": ORIG[1], "K_original": K_orig[k].tolist(), "cam2world": poses[k].tolist()}
               for k in KNOWN]
    path.write_text(json.dumps({"images": entries}))


def _write_nerfstudio(path, K_orig, poses):
    gl = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV -> OpenGL camera axes
    frames = [{"file_path": f"images/view_{k}", "transform_matrix": (poses[k] @ gl).tolist(),
               "fl_x": K_orig[k][0, 0], "fl_y": K_orig[k][1, 1],
               "cx": K_orig[k][0, 2] + 0.5, "cy": K_orig[k][1, 2] + 0.5,  # pixel edges at integers
               "w": ORIG[0], "h": ORIG[1]} for k in KNOWN]
    path.write_text(json.dumps({"camera_model": "OPENCV", "frames": frames}))


def _colmap_rows(K_orig, poses):
    """(camera line values, image values) in COLMAP's conventions: PINHOLE fx fy cx cy with pixel
    edges at integers, world-to-camera quaternion (w, x, y, z) and translation."""
    cams, imgs = [], []
    for k in KNOWN:
        K = K_orig[k]
        cams.append((k + 1, ORIG[0], ORIG[1], [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5]))
        R = poses[k][:3, :3].T
        t = -R @ poses[k][:3, 3]
        x, y, z, w = roma.rotmat_to_unitquat(torch.from_numpy(R)).tolist()
        imgs.append((k + 1, [w, x, y, z], t.tolist(), k + 1, f"view_{k}.png"))
    return cams, imgs


def _write_colmap_text(folder, K_orig, poses):
    folder.mkdir(parents=True)
    cams, imgs = _colmap_rows(K_orig, poses)
    (folder / "cameras.txt").write_text("# cameras\n" + "".join(
        f"{c} PINHOLE {w} {h} {' '.join(repr(float(p)) for p in params)}\n" for c, w, h, params in cams))
    body = "# images\n"
    for i, q, t, c, name in imgs:
        body += f"{i} {' '.join(map(repr, q))} {' '.join(map(repr, t))} {c} {name}\n"
        body += "\n" if i % 2 else "12.5 3.5 -1 40.0 7.25 -1\n"  # empty and non-empty POINTS2D lines
    (folder / "images.txt").write_text(body)


def _write_colmap_binary(folder, K_orig, poses):
    folder.mkdir(parents=True)
    cams, imgs = _colmap_rows(K_orig, poses)
    cb = struct.pack("<Q", len(cams)) + b"".join(
        struct.pack("<iiQQ4d", c, 1, w, h, *params) for c, w, h, params in cams)
    ib = struct.pack("<Q", len(imgs))
    for i, q, t, c, name in imgs:
        ib += struct.pack("<I7dI", i, *q, *t, c) + name.encode() + b"\x00"
        ib += struct.pack("<Q", 1) + struct.pack("<ddq", 3.5, 4.5, -1)  # one 2-D point
    (folder / "cameras.bin").write_bytes(cb)
    (folder / "images.bin").write_bytes(ib)


WRITERS = {
    "pointmap": lambda d, K, P: _write_pointmap(d / "cameras.json", K, P),
    "nerfstudio": lambda d, K, P: _write_nerfstudio(d / "transforms.json", K, P),
    "colmap_text": lambda d, K, P: _write_colmap_text(d / "sparse" / "0", K, P),
    "colmap_binary": lambda d, K, P: _write_colmap_binary(d / "sparse" / "0", K, P),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_known_cameras_come_back_exactly(world, tmp_path, fmt):
    _, images, gt, K_orig, poses = world
    WRITERS[fmt](tmp_path, K_orig, poses)
    priors = alignment_priors(images, tmp_path)
    assert sorted(priors["known_poses"]) == list(KNOWN) == sorted(priors["known_intrinsics"])
    for k in KNOWN:  # mapped to network pixels: the synthetic scene's own intrinsics
        assert torch.allclose(priors["known_intrinsics"][k].double(), gt.intrinsics[k].double(), atol=1e-4)
    scene = global_align(gt.preds, [im.rgb for im in images], known_poses=priors["known_poses"],
                         known_intrinsics=priors["known_intrinsics"])
    scene.metas = [im.meta for im in images]
    scene.names = [f"view_{k}.png" for k in range(N)]
    out = cameras_dict(scene)["images"]  # what cameras.json would hold: original pixels
    for k in KNOWN:
        np.testing.assert_allclose(out[k]["K_original"], K_orig[k], atol=1e-3)
        np.testing.assert_allclose(out[k]["cam2world"], poses[k], atol=1e-5)
    # the unknown camera is recovered in the frame and scale the known poses fix
    c_err = np.linalg.norm(np.array(out[3]["cam2world"])[:3, 3] - poses[3][:3, 3]) / gt.extent
    f_err = abs(out[3]["K_original"][0][0] / K_orig[3][0, 0] - 1)
    assert c_err < 0.02 and f_err < 0.01, (c_err, f_err)


def test_pointmap_cameras_json_round_trips_through_the_exporter(world, tmp_path):
    """A cameras.json written by pointmap reads back as the same cameras (original pixels)."""
    _, images, gt, K_orig, poses = world
    scene = global_align(gt.preds, known_poses=gt.poses, known_focals=gt.focals)
    scene.metas = [im.meta for im in images]
    scene.names = [f"view_{k}.png" for k in range(N)]
    (tmp_path / "cameras.json").write_text(json.dumps(cameras_dict(scene)))
    priors = read_cameras(tmp_path / "cameras.json")
    for k in range(N):
        np.testing.assert_allclose(priors[f"view_{k}.png"].K, K_orig[k], atol=1e-3)
        np.testing.assert_allclose(priors[f"view_{k}.png"].cam2world, poses[k], atol=1e-5)


def test_intrinsics_of_a_rescaled_image_are_rescaled(world, tmp_path):
    """A camera file made for half-size images (same aspect) still gives the right intrinsics."""
    _, images, gt, K_orig, poses = world
    half = K_orig.copy()
    half[:, :2, :2] /= 2
    half[:, :2, 2] = (half[:, :2, 2] + 0.5) / 2 - 0.5
    entries = [{"file": f"view_{k}.png", "width": ORIG[0] // 2, "height": ORIG[1] // 2,
                "K_original": half[k].tolist()} for k in range(N)]
    (tmp_path / "cameras.json").write_text(json.dumps({"images": entries}))
    priors = alignment_priors(images, tmp_path / "cameras.json")
    assert priors["known_poses"] is None
    for k in range(N):
        assert torch.allclose(priors["known_intrinsics"][k].double(), gt.intrinsics[k].double(), atol=1e-4)


def test_intrinsics_to_network_inverts_intrinsics_to_original():
    meta = ImageMeta(path=None, original_size=(200, 130), resized_size=(64, 42), crop_box=(0, 5, 64, 37))
    K = torch.tensor([[50.0, 0.3, 31.5], [0.0, 55.0, 15.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(meta.intrinsics_to_network(meta.intrinsics_to_original(K)), K, atol=1e-12)
    # a point projected in the original image lands on the mapped pixel of the network image
    X = torch.tensor([0.2, -0.1, 2.0], dtype=torch.float64)
    K0 = meta.intrinsics_to_original(K)
    uv_net = (K @ X)[:2] / X[2]
    uv_orig = (K0 @ X)[:2] / X[2]
    assert torch.allclose(meta.to_original_pixels(uv_net), uv_orig, atol=1e-12)


def test_masks_by_file_name_map_to_network_pixels(world, tmp_path):
    folder, images, gt, _, _ = world
    m = np.zeros((ORIG[1], ORIG[0]), np.uint8)
    m[:, : ORIG[0] // 2] = 255  # keep the left half of view_1
    Image.fromarray(m).save(tmp_path / "view_1.png")
    Image.fromarray(np.full((ORIG[1] // 2, ORIG[0] // 2), 255, np.uint8)).save(tmp_path / "view_2_mask.png")
    with pytest.raises(CameraFileError, match=r"no mask for 2 of 4 images: view_0.png, view_3.png"):
        load_masks(images, tmp_path)
    masks = load_masks(images, tmp_path, allow_missing=True)
    assert masks[0] is None and masks[3] is None
    assert masks[1].shape == (NET[1], NET[0]) and masks[1][:, :32].all() and not masks[1][:, 32:].any()
    assert masks[2].all()
    scene = global_align(gt.preds, masks=masks)
    assert not scene.masks[1][:, 32:].any() and scene.masks[1][:, :32].any()


def test_bad_camera_inputs_are_clear_errors(world, tmp_path):
    _, images, _, K_orig, poses = world
    with pytest.raises(CameraFileError, match="not found"):
        read_cameras(tmp_path / "nope.json")
    with pytest.raises(CameraFileError, match="holds no camera file"):
        read_cameras(tmp_path)
    (tmp_path / "x.json").write_text("{\"a\": 1}")
    with pytest.raises(CameraFileError, match="neither a pointmap cameras.json nor a transforms.json"):
        read_cameras(tmp_path / "x.json")
    (tmp_path / "c.json").write_text(json.dumps({"images": [{"file": "other.png", "K_original": np.eye(3).tolist()}]}))
    with pytest.raises(CameraFileError, match="none of the 4 images matches"):
        alignment_priors(images, tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps({"images": [{"file": "view_0.png", "width": 100, "height": 100,
                                                             "K_original": np.eye(3).tolist()}]}))
    with pytest.raises(CameraFileError, match="not the same aspect ratio"):
        alignment_priors(images, tmp_path / "d.json")
    bad = tmp_path / "bad" / "sparse" / "0"
    _write_colmap_binary(bad, K_orig, poses)
    (bad / "images.bin").write_bytes((bad / "images.bin").read_bytes()[:50])
    with pytest.raises(CameraFileError, match="truncated or corrupt"):
        read_cameras(bad.parent.parent)
    with pytest.raises(CameraFileError, match="no mask in"):
        load_masks(images, tmp_path)


def test_match_by_name_uses_base_names_then_stems():
    assert match_by_name(["a.jpg", "b.png", "c.png"], ["x/a.jpg", "images/b", "d.png"]) == {0: "x/a.jpg", 1: "images/b"}
    with pytest.raises(CameraFileError, match="several entries"):
        match_by_name(["a.jpg"], ["a.png", "a.tif"])


def test_shared_focal_with_known_intrinsics_for_some(world, tmp_path):
    """--shared-focal: the images without a known focal share one."""
    _, images, gt, K_orig, poses = world
    _write_pointmap(tmp_path / "cameras.json", K_orig, poses)
    priors = alignment_priors(images, tmp_path / "cameras.json")
    scene = global_align(gt.preds, config=AlignConfig(shared_focal=True), **priors)
    assert torch.allclose(scene.intrinsics[:3].double(), gt.intrinsics[:3].double(), atol=1e-4)


# ----------------------------------------------------------------------------- command line
def _photos_and_model(tmp_path):
    from pointmap.model import DUSt3R, ModelConfig, save_model

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (240, 300, 3), dtype=np.uint8)).save(photos / f"p{k}.jpg")
    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32,
                      dec_depth=1, dec_num_heads=2, head_type="linear")
    ckpt = save_model(DUSt3R(cfg).eval(), tmp_path / "tiny.safetensors")
    return photos, ckpt


def test_command_line_cameras_and_masks(tmp_path, capsys):
    """--cameras and --masks through the command line: the given cameras are what cameras.json
    holds, masked-out pixels are in no export, and the bundled-model line is not printed."""
    from pointmap.cli import main

    photos, ckpt = _photos_and_model(tmp_path)
    K = np.array([[260.0, 0.0, 149.5], [0.0, 250.0, 121.0], [0.0, 0.0, 1.0]])
    poses = []
    for k in range(3):
        a = np.deg2rad(10.0 * k)
        P = np.eye(4)
        P[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        P[:3, 3] = [0.3 * k, 0.05 * k, 0.0]
        poses.append(P)
    entries = [{"file": f"p{k}.jpg", "width": 300, "height": 240, "K_original": K.tolist(),
                "cam2world": poses[k].tolist()} for k in range(3)]
    (tmp_path / "cams.json").write_text(json.dumps({"images": entries}))
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((240, 300), np.uint8)
    m[:, :150] = 255
    Image.fromarray(m).save(masks / "p1.png")
    for k in (0, 2):  # every photo needs a mask: all white keeps every pixel
        Image.fromarray(np.full((240, 300), 255, np.uint8)).save(masks / f"p{k}_mask.png")
    out = tmp_path / "out"
    rc = main(["reconstruct", str(photos), "-o", str(out), "--weights", str(ckpt), "--cameras",
               str(tmp_path / "cams.json"), "--masks", str(masks), "--conf-threshold", "0", "-q", "--niter", "3",
               "--export", "cameras", "depth", "ply"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "bundled demonstration model" not in err
    got = json.loads((out / "cameras.json").read_text())["images"]
    for k in range(3):
        np.testing.assert_allclose(got[k]["K_original"], K, atol=1e-3)
        np.testing.assert_allclose(got[k]["cam2world"], poses[k], atol=1e-5)
    # 300x240 at 224: resized 280x224, crop x 28..252; original x < 150 <-> network u < 112
    kept = np.asarray(Image.open(out / "depth" / "p1_mask.png")) > 0
    assert not kept[:, 113:].any() and kept[:, :111].any()
    assert (np.asarray(Image.open(out / "depth" / "p0_mask.png")) > 0)[:, 113:].any()


def test_command_line_names_the_bundled_model_in_one_line(tmp_path, capsys):
    from pointmap.cli import main

    photos, _ = _photos_and_model(tmp_path)
    rc = main(["reconstruct", str(photos / "p0.jpg"), str(photos / "p1.jpg"), "-o", str(tmp_path / "o"),
               "-q", "--export", "cameras"])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if "bundled demonstration model" in ln]
    assert len(lines) == 1 and "--weights dust3r-512-dpt" in lines[0]


def test_command_line_bad_camera_file_is_one_line(tmp_path, capsys):
    from pointmap.cli import main

    photos, ckpt = _photos_and_model(tmp_path)
    rc = main(["reconstruct", str(photos), "-o", str(tmp_path / "o"), "--weights", str(ckpt),
               "--cameras", str(tmp_path / "missing.json"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "missing.json" in err[0] and "not found" in err[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ----------------------------------------------------------------------------- web app
def test_app_known_cameras_masks_and_shared_focal(tmp_path):
    """The app's run with uploaded camera file and masks (matched by upload names): the given
    cameras come back, masked pixels stay out at every display threshold."""
    pytest.importorskip("gradio")
    from pointmap.app import build_app
    from pointmap.model import DUSt3R, ModelConfig

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    rng = np.random.default_rng(2)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (240, 300, 3), dtype=np.uint8)).save(uploads / f"shot{k}.png")
    K = np.array([[260.0, 0.0, 149.5], [0.0, 250.0, 121.0], [0.0, 0.0, 1.0]])
    poses = [np.eye(4) for _ in range(3)]
    for k in range(3):
        poses[k][:3, 3] = [0.25 * k, 0.0, 0.02 * k]
    frames = [{"file_path": f"images/shot{k}.png", "transform_matrix": (poses[k] @ np.diag([1.0, -1, -1, 1])).tolist()}
              for k in range(3)]
    ns = {"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5, "w": 300, "h": 240,
          "frames": frames}
    (uploads / "my_cameras.json").write_text(json.dumps(ns))
    m = np.full((240, 300), 255, np.uint8)
    m[:120] = 0  # top half of shot2 masked out
    Image.fromarray(m).save(uploads / "shot2_mask.png")
    for k in (0, 1):  # every photo needs a mask: all white keeps every pixel
        Image.fromarray(np.full((240, 300), 255, np.uint8)).save(uploads / f"shot{k}_mask.png")

    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32,
                      dec_depth=1, dec_num_heads=2, head_type="linear")
    demo = build_app(model=DUSt3R(cfg).eval(), device="cpu")
    run = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "run")
    photos = [str(uploads / f"shot{k}.png") for k in range(3)]
    status, _, _, files, stored = run(photos, 1.0, "224", "complete", 3, 3, [str(uploads / "my_cameras.json")],
                                      [str(uploads / f"shot{k}_mask.png") for k in range(3)], True, 1.0, False, False, False, 0.0)
    assert status.startswith("**Done.**"), status
    scene = stored.scene
    assert torch.allclose(scene.poses.double(), torch.tensor(np.stack(poses)), atol=1e-5)
    for k in range(3):
        assert torch.allclose(scene.metas[k].intrinsics_to_original(scene.intrinsics[k].double()),
                              torch.tensor(K), atol=1e-3)
    # 300x240 at 224: resized 280x224, no vertical crop; original rows < 120 <-> network rows < 112
    assert not scene.masks[2][:111].any()
    from pointmap.app import _render

    _render(stored, 1.0, False, False, False, 0.0)  # a display change re-thresholds: the mask stays
    depth = stored.run_dir / f"render_{stored.renders:03d}" / "depth"
    third = list(json.loads((depth / "depth.json").read_text())["images"].values())[2]
    kept = np.asarray(Image.open(depth / third["mask_png"])) > 0
    assert not kept[:111].any() and kept[113:].any()


def test_nerfstudio_field_of_view_and_distortion_warning(world, tmp_path, caplog):
    """instant-ngp style ``camera_angle_x`` gives f = W / (2 tan(angle / 2)) at the image's own
    width; non-zero distortion is reported once and ignored."""
    _, images, _, _, poses = world
    frames = [{"file_path": f"./train/view_{k}", "transform_matrix": poses[k].tolist()} for k in range(N)]
    angle = 2 * np.arctan(ORIG[0] / (2 * 180.0))  # f = 180 px at 200 px width
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": angle, "k1": 0.1, "frames": frames}))
    with caplog.at_level("WARNING", logger="pointmap.known_cameras"):
        priors = alignment_priors(images, tmp_path)
    assert sum("distortion" in r.message for r in caplog.records) == 1
    K_net = priors["known_intrinsics"][0].double()
    K0 = images[0].meta.intrinsics_to_original(K_net)
    assert torch.allclose(K0, torch.tensor([[180.0, 0, 99.5], [0, 180.0, 64.5], [0, 0, 1]], dtype=torch.float64), atol=1e-3)
