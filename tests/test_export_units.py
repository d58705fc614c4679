"""Every export states its length unit: metres for a metric scene (MASt3R), arbitrary scene units
otherwise, and an export of a scene that is not metric never mentions metres."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trimesh
from PIL import Image

from pointmap.export import FORMATS, export_scene
from pointmap.export.colmap import read_colmap_text

from export_scenes import make_scene


def _ply_comments(path: Path) -> list[str]:
    head = path.read_bytes().split(b"end_header\n", 1)[0].decode("ascii")
    return [ln[len("comment "):] for ln in head.splitlines() if ln.startswith("comment ")]


def _texts(out: Path) -> dict[str, str]:
    """The text every export writes about the scene (file -> text), binary files' text parts."""
    texts = {p.relative_to(out).as_posix(): p.read_text()
             for p in out.rglob("*") if p.suffix in (".json", ".txt") and not p.name.startswith(".")}
    texts["points.ply"] = "\n".join(_ply_comments(out / "points.ply"))
    glb = trimesh.load(out / "scene.glb", file_type="glb", process=False)
    texts["scene.glb"] = json.dumps(glb.metadata["pointmap"])
    with Image.open(out / "depth" / "img0_depth.png") as im:
        texts["depth/img0_depth.png"] = json.dumps(im.text)
    return texts


@pytest.mark.parametrize("metric", [True, False])
def test_exports_state_the_units(tmp_path, metric):
    scene = make_scene()
    if metric:
        scene = scene.rescaled(1.0, units="metres")
    assert scene.units == ("metres" if metric else "scene")
    out = tmp_path / "out"
    export_scene(scene, out, formats=FORMATS)
    # each format, read back
    ply = _ply_comments(out / "points.ply")
    unit_lines = [c for c in ply if c.startswith("units:")]
    assert len(unit_lines) == 1
    glb = trimesh.load(out / "scene.glb", file_type="glb", process=False).metadata["pointmap"]
    cams = json.loads((out / "cameras.json").read_text())
    tr = json.loads((out / "transforms.json").read_text())
    depth = json.loads((out / "depth" / "depth.json").read_text())
    model = read_colmap_text(out / "colmap" / "text")
    heads = {name: [ln for ln in (out / "colmap" / "text" / f"{name}.txt").read_text().splitlines()
                    if ln.startswith("# units:")] for name in ("images", "points3D")}
    with Image.open(out / "depth" / "img0_depth.png") as im:
        png_unit = im.text["depth_unit"]
    for record in (glb, cams, tr, depth):
        assert record["units"] == ("metres" if metric else "scene")
        assert record["metric"] is metric
        assert record["units_note"] == unit_lines[0]
    assert png_unit == ("metres" if metric else "scene")
    assert all(len(lines) == 1 and lines[0] == f"# {unit_lines[0]}" for lines in heads.values())
    assert model.units_note == unit_lines[0]
    if metric:
        assert unit_lines[0].startswith("units: metres")
    else:
        assert unit_lines[0].startswith("units: arbitrary")
        # nothing written about a scene that is not metric calls its lengths metres
        for name, text in _texts(out).items():
            assert "metre" not in text.lower(), name


def test_colmap_text_with_units_reads_in_pycolmap(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    scene = make_scene().rescaled(2.0, units="metres")
    export_scene(scene, tmp_path / "o", formats=["colmap"])
    rec = pycolmap.Reconstruction(str(tmp_path / "o" / "colmap" / "text"))
    rec_bin = pycolmap.Reconstruction(str(tmp_path / "o" / "colmap" / "sparse" / "0"))
    assert rec.num_images() == rec_bin.num_images() == len(scene)
    assert rec.num_points3D() == rec_bin.num_points3D() > 0
