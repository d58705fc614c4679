"""nerfstudio transforms.json: axes, intrinsics at original resolution, pixel convention, images."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from export_scenes import METAS, make_scene

from pointmap.export.common import copy_image
from pointmap.export.nerfstudio import export_nerfstudio
from pointmap.images import ImageMeta
from pointmap.scene import Scene


def _ns_project(frame: dict, intr: dict, X: np.ndarray) -> np.ndarray:
    """Project a world point the nerfstudio way: OpenGL camera (looking along -z, y up), image
    spanning [0, w] with the first pixel centre at 0.5. Returns (x, y) in those coordinates."""
    c2w = np.array(frame["transform_matrix"])
    Xc = np.linalg.inv(c2w) @ np.append(X, 1.0)
    x = intr["fl_x"] * Xc[0] / -Xc[2] + intr["cx"]
    y = -intr["fl_y"] * Xc[1] / -Xc[2] + intr["cy"]
    return np.array([x, y])


def _original_pixel(k: int, u: int, v: int) -> np.ndarray:
    """Centre of network pixel (u, v) of image k in original pixels (centres at integers), by hand:
    network -> resized (add the crop offset) -> original (scale the [0, W] extent)."""
    (W0, H0), (Wr, Hr), (left, top, _, _) = METAS[k]
    return np.array([(u + left + 0.5) * W0 / Wr - 0.5, (v + top + 0.5) * H0 / Hr - 0.5])


def test_transforms_conventions_and_projection(tmp_path):
    scene = make_scene(placed=[True, True, False])
    path = export_nerfstudio(scene, tmp_path / "transforms.json")
    data = json.loads(path.read_text())
    assert data["camera_model"] == "OPENCV"
    assert len(data["frames"]) == 2  # the unplaced image is left out
    assert "fl_x" not in data  # intrinsics differ per image -> per frame
    for k, fr in enumerate(data["frames"]):
        c2w_cv = scene.poses[k].double().numpy()
        T = np.array(fr["transform_matrix"])
        # OpenGL axes: x kept, y and z columns of the rotation negated, centre unchanged
        assert np.allclose(T[:3, 0], c2w_cv[:3, 0]) and np.allclose(T[:3, 1:3], -c2w_cv[:3, 1:3])
        assert np.allclose(T[:3, 3], c2w_cv[:3, 3]) and np.allclose(T[3], [0, 0, 0, 1])
        assert (fr["w"], fr["h"]) == METAS[k][0]
        for u, v in ((0, 0), (5, 17), (31, 23)):
            X = scene.pts3d[k][v, u].double().numpy()
            ns = _ns_project(fr, fr, X)
            assert np.allclose(ns, _original_pixel(k, u, v) + 0.5, atol=1e-4)
        # the copied image has the size written in the json
        img = Image.open(tmp_path / fr["file_path"])
        assert img.size == (fr["w"], fr["h"])
        assert fr["file_path"] == f"images/img{k}.png"


def test_shared_intrinsics_and_source_files(tmp_path):
    # all images from 80x60 originals: intrinsics shared -> written once at the top level
    srcs = []
    for k in range(3):
        p = tmp_path / "src" / f"photo{k}.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((60, 80, 3), 40 * k, np.uint8)).save(p)
        srcs.append(str(p))
    base = make_scene(paths=srcs)
    meta = ImageMeta(path=None, original_size=(80, 60), resized_size=(32, 24), crop_box=(0, 0, 32, 24))
    metas = [ImageMeta(srcs[k], meta.original_size, meta.resized_size, meta.crop_box) for k in range(3)]
    scene = Scene(**{**base.__dict__, "metas": metas})
    out = tmp_path / "out" / "transforms.json"
    data = json.loads(export_nerfstudio(scene, out, ply_file_path="points.ply").read_text())
    assert data["fl_x"] == pytest.approx(28.0 * 2.5) and data["fl_y"] == pytest.approx(26.0 * 2.5)
    assert data["cx"] == pytest.approx((16 + 0.5) * 2.5) and (data["w"], data["h"]) == (80, 60)
    assert data["ply_file_path"] == "points.ply"
    for k, fr in enumerate(data["frames"]):
        assert "fl_x" not in fr and fr["file_path"] == f"images/photo{k}.jpg"
        assert (out.parent / fr["file_path"]).read_bytes() == (tmp_path / "src" / f"photo{k}.jpg").read_bytes()
        X = scene.pts3d[k][7, 9].double().numpy()
        assert np.allclose(_ns_project(fr, data, X), _original_pixel(0, 9, 7) + 0.5, atol=1e-4)


def test_exif_rotated_source_is_baked_upright(tmp_path):
    src = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 deg: stored 60 wide x 80 tall, shown 80 x 60
    Image.fromarray(np.zeros((80, 60, 3), np.uint8)).save(src, exif=exif.tobytes())
    base = make_scene(n=1)
    meta = ImageMeta(str(src), original_size=(80, 60), resized_size=(32, 24), crop_box=(0, 0, 32, 24))
    scene = Scene(**{**base.__dict__, "metas": [meta]})
    data = json.loads(export_nerfstudio(scene, tmp_path / "o" / "transforms.json").read_text())
    copy = Image.open(tmp_path / "o" / data["frames"][0]["file_path"])
    assert Image.open(src).size == (60, 80)
    assert copy.size == (80, 60) == (data["w"], data["h"])


def _png_with_exif_after_pixels(path, orientation):
    """A 60 x 80 PNG whose eXIf chunk (orientation) follows its pixel data, as the format allows."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()[6:]  # without Pillow's "Exif\0\0" prefix, as PNG holds it
    buf = io.BytesIO()
    Image.fromarray(np.zeros((80, 60, 3), np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    path.write_bytes(data[:-12] + chunk + data[-12:])  # before IEND


def test_png_copies_read_the_orientation_wherever_it_stands(tmp_path, monkeypatch):
    late = tmp_path / "late.png"
    _png_with_exif_after_pixels(late, 6)
    assert Image.open(late).getexif()[0x0112] == 6  # Pillow finds it after decoding
    copy_image(late, tmp_path / "o" / "late.png")
    assert Image.open(tmp_path / "o" / "late.png").size == (80, 60)  # baked upright
    plain = tmp_path / "plain.png"
    Image.fromarray(np.zeros((80, 60, 3), np.uint8)).save(plain)

    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    copy_image(plain, tmp_path / "o" / "plain.png")  # the bytes, without decoding the pixels
    assert (tmp_path / "o" / "plain.png").read_bytes() == plain.read_bytes()
