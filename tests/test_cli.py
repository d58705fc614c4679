"""The command line end to end with the bundled model on the bundled examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trimesh

from pointmap.cli import main
from pointmap.model.checkpoint import bundled_model_path

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "pointmap" / "examples" / "room"
needs_model = pytest.mark.skipif(not bundled_model_path().is_file(), reason="bundled model not present")


@needs_model
def test_reconstruct_examples(tmp_path, capsys):
    imgs = sorted(EXAMPLES.glob("*.jpg"))[:3]
    out = tmp_path / "out"
    rc = main(["reconstruct", *map(str, imgs), "-o", str(out), "-q", "--export", "glb", "ply", "cameras"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "placed 3/3 images" in text and "time:" in text
    cams = json.loads((out / "cameras.json").read_text())
    frames = cams["cameras"] if isinstance(cams, dict) and "cameras" in cams else cams
    assert len(frames) == 3
    glb = trimesh.load(out / "scene.glb")
    import re

    names = [n for n in glb.graph.nodes_geometry if re.fullmatch(r"camera_\d{3,}", n)]
    assert len(names) == 3
    ply = trimesh.load(out / "points.ply")
    assert len(ply.vertices) > 1000
    # an existing output folder is refused without --overwrite
    rc = main(["reconstruct", *map(str, imgs), "-o", str(out), "-q"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err


@needs_model
def test_single_image_gives_a_one_camera_scene(tmp_path, capsys):
    img = sorted(EXAMPLES.glob("*.jpg"))[0]
    rc = main(["reconstruct", str(img), "-o", str(tmp_path / "o"), "-q", "--export", "cameras", "depth"])
    assert rc == 0
    assert "placed 1/1 images" in capsys.readouterr().out


def test_bad_inputs_are_messages(tmp_path, capsys):
    (tmp_path / "notes.jpg").write_text("not an image")
    rc = main(["reconstruct", str(tmp_path / "notes.jpg"), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "none.pth")])
    assert rc == 2
    assert "none.pth" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["reconstruct", str(empty), "-o", str(tmp_path / "o2")])
    assert rc == 2
