"""A photo far above Pillow's decompression-bomb guard (12000 x 9000, 108 MP) through the real
command line: decoded reduced towards the working size, every export in original pixels.

Measured once with ``/usr/bin/time -v`` on the command below: peak RSS 0.57 GB for the whole run
(bundled model, 224 px), against 0.32 GB for the decoded photo alone in full."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointmap.images import load_images

REPO = Path(__file__).resolve().parents[1]
ROOM = REPO / "src" / "pointmap" / "examples" / "room"
BUNDLED = REPO / "src" / "pointmap" / "weights" / "pointmap_default.safetensors"


@pytest.mark.skipif(not BUNDLED.is_file(), reason="bundled model not present")
def test_a_12000x9000_jpeg_reconstructs_in_original_pixels_peak_rss_0_57_gb(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(ROOM / "room_0.jpg") as im:  # the example photo, enlarged 23.4 times
        im.convert("RGB").resize((12000, 9000), Image.Resampling.BILINEAR).save(photos / "big.jpg", quality=85)
    (photos / "room_1.jpg").write_bytes((ROOM / "room_1.jpg").read_bytes())
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "pointmap", "reconstruct", str(photos), "-o", str(out), "-q",
                           "--export", "cameras", "colmap", "transforms"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "DecompressionBomb" not in proc.stderr

    cam = next(c for c in json.loads((out / "cameras.json").read_text())["images"] if c["name"] == "big.jpg")
    assert (cam["width"], cam["height"]) == (12000, 9000)
    # the network intrinsics mapped to original pixels (crop, then resize about pixel centres)
    K, Ko = np.array(cam["K"]), np.array(cam["K_original"])
    (rw, rh), (left, top) = cam["resized_size"], cam["crop_box"][:2]
    sx, sy = 12000 / rw, 9000 / rh
    expected = np.array([[K[0, 0] * sx, 0, (K[0, 2] + left + 0.5) * sx - 0.5],
                         [0, K[1, 1] * sy, (K[1, 2] + top + 0.5) * sy - 0.5], [0, 0, 1]])
    np.testing.assert_allclose(Ko, expected, rtol=1e-9, atol=1e-6)
    assert "big.jpg" in (out / "colmap" / "text" / "images.txt").read_text()
    assert " 12000 9000 " in (out / "colmap" / "text" / "cameras.txt").read_text()
    frames = json.loads((out / "transforms.json").read_text())["frames"]
    big = next(f for f in frames if f["file_path"].endswith("big.jpg"))
    assert (big["w"], big["h"]) == (12000, 9000)
    assert (out / "images" / "big.jpg").read_bytes() == (photos / "big.jpg").read_bytes()

    # the network sees the same picture as from the small original (up to the enlargement's blur)
    small, large = load_images([ROOM / "room_0.jpg", photos / "big.jpg"], size=224)
    assert small.meta.crop_box == large.meta.crop_box and small.meta.resized_size == large.meta.resized_size
    assert (small.img - large.img).abs().mean() < 0.03
