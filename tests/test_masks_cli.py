"""``--masks DIR`` through the real command line: a photo without a mask is an error naming it,
and nothing is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ROOM = REPO / "src" / "pointmap" / "examples" / "room"


def test_a_photo_without_a_mask_is_named(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("room_0", "room_2", "room_4"):  # room_1 and room_3 have none
        with Image.open(ROOM / f"{name}.jpg") as im:
            Image.fromarray(np.full((im.height, im.width), 255, np.uint8)).save(masks / f"{name}.png")
    (masks / "room_1.txt").write_text("not a mask\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pointmap", "reconstruct", str(ROOM), "-o", str(out),
                           "--masks", str(masks), "-q"], env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "room_1.jpg, room_3.jpg" in ln]
    assert len(lines) == 1 and "no mask for 2 of 5 images" in lines[0] and str(masks) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["masks"]
