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
    frames = cams["images"]
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
    # a threshold nothing passes: the kept count says so and a warning names the option
    rc = main(["reconstruct", *map(str, imgs), "-o", str(out), "-q", "--overwrite", "--export", "ply",
               "--conf-threshold", "1e9"])
    cap = capsys.readouterr()
    assert rc == 0 and "kept 0 of" in cap.out
    assert "only 0.0 % of the points pass" in cap.err and "--conf-threshold" in cap.err
    # images that keep no point are named in a warning and counted in the summary
    assert "placed 3/3 images (3 keeping < 1 % of their points)" in cap.out
    assert "3 image(s) keep fewer than 1 % of their points" in cap.err
    warning = next(line for line in cap.err.splitlines() if "image(s) keep fewer than" in line)
    assert warning.startswith("pointmap: warning: ") and all(im.name in warning for im in imgs), cap.err


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
    capsys.readouterr()
    rc = main(["reconstruct", str(empty), "-o", str(tmp_path / "o3"), "--fast", "--device", "cpu"])
    assert rc == 2 and "--fast needs a CUDA device" in capsys.readouterr().err


def test_video_frames_are_sampled(tmp_path):
    import cv2
    import numpy as np

    from pointmap.cli import _load_inputs

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for k in range(30):  # 3 s at 10 fps, a moving bright square
        frame = np.zeros((96, 128, 3), np.uint8)
        frame[20:60, 4 * k:4 * k + 30] = 255
        writer.write(frame)
    writer.release()
    images = _load_inputs([str(path)], size=224, fps=2.0, skip_bad=False)
    assert len(images) == 6  # one frame every 5
    assert images[0].meta.path == "clip_frame0000"
    assert images[0].meta.original_size == (128, 96)
    assert not torch_equal(images[0].img, images[1].img)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


@needs_model
def test_eval_command_on_real_depth_data(data_dir, tmp_path, capsys):
    nyu = data_dir / "nyuv2_metric3d_demo"
    if not nyu.is_dir():
        pytest.skip("NYUv2 subset not present")
    assert main(["eval", "depth", str(nyu), "--out", str(tmp_path / "rep")]) == 0
    res = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert res["task"].startswith("depth")
    assert main(["eval", "depth", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2")]) == 2
    assert "nowhere" in capsys.readouterr().err


@needs_model
def test_progress_bars_and_summary_do_not_share_a_line(tmp_path):
    import os
    import subprocess
    import sys

    imgs = [str(p) for p in sorted(EXAMPLES.glob("*.jpg"))[:3]]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    res = subprocess.run([sys.executable, "-m", "pointmap", "reconstruct", *imgs, "-o", str(tmp_path / "o"),
                          "--export", "cameras", "--niter", "2"], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert res.returncode == 0, res.stdout
    lines = [seg.split("\r")[-1] for seg in res.stdout.split("\n")]  # what a terminal would show
    assert any(line.startswith("placed 3/3 images") for line in lines), res.stdout[-2000:]
    assert "dense depth" in res.stdout  # the bars were shown


@needs_model
def test_reconstruct_sparse_alignment(tmp_path, capsys):
    imgs = sorted(EXAMPLES.glob("*.jpg"))[:3]
    out = tmp_path / "sparse"
    rc = main(["reconstruct", *map(str, imgs), "-o", str(out), "-q", "--align", "sparse",
               "--export", "cameras"])
    assert rc == 0
    assert "placed 3/3 images" in capsys.readouterr().out
    frames = json.loads((out / "cameras.json").read_text())["images"]
    assert len(frames) == 3


@needs_model
def test_reconstruct_exports_a_colmap_database_and_initial_model(tmp_path, capsys):
    """``--export colmap-db``: the database and the initial model read back in pycolmap with the
    same ids and names, the poses of cameras.json, and a statement that the units are arbitrary."""
    pycolmap = pytest.importorskip("pycolmap")
    import numpy as np

    imgs = sorted(EXAMPLES.glob("*.jpg"))[:3]
    out = tmp_path / "out"
    rc = main(["reconstruct", *map(str, imgs), "-o", str(out), "-q", "--export", "colmap-db", "cameras"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "matching" in text and "colmap-db:" in text
    cams = json.loads((out / "cameras.json").read_text())
    db = pycolmap.Database.open(str(out / "colmap" / "database.db"))
    try:
        names = {im.image_id: im.name for im in db.read_all_images()}
        assert names == {k + 1: im.name for k, im in enumerate(imgs)}
        assert db.num_matched_image_pairs() == 3 and db.num_verified_image_pairs() >= 1
    finally:
        db.close()
    rec = pycolmap.Reconstruction(str(out / "colmap" / "init"))
    assert sorted(rec.images) == [1, 2, 3]
    for iid, im in rec.images.items():
        frame = cams["images"][iid - 1]
        assert im.name == names[iid] == frame["file"]
        assert np.allclose(im.cam_from_world().matrix(), np.array(frame["world2cam"])[:3], atol=1e-4)
        K = np.array(frame["K_original"])
        assert np.allclose(rec.cameras[iid].params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(im.name for im in imgs)
    head = (out / "colmap" / "init" / "images.txt").read_text()
    assert "# units: arbitrary" in head and "metre" not in head


def test_colmap_db_without_pycolmap_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap fails
    img = sorted(EXAMPLES.glob("*.jpg"))[0]
    rc = main(["reconstruct", str(img), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "none.pth"),
               "--export", "colmap-db"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "--export colmap-db needs pycolmap: pip install torch==" in err and '-e ".[colmap]"' in err
    assert not (tmp_path / "o").exists()  # refused before any work (the missing weights are not reached)


def test_metric_model_exports_say_metres_and_match_descriptors(tmp_path, capsys, monkeypatch):
    """A (tiny, random) MASt3R network: the scene is metric, the exports say metres, and the
    COLMAP database of a dense alignment is made from descriptor matches."""
    pytest.importorskip("pycolmap")
    import torch

    import pointmap.align.sparse as sparse_mod
    from pointmap.model import DUSt3R, ModelConfig
    from pointmap.model.checkpoint import save_model

    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32,
                      dec_depth=4, dec_num_heads=2, head_type="catmlp+dpt", output_mode="pts3d+desc24",
                      two_confs=True, dpt_layer_dims=(8, 16, 16, 32), dpt_feature_dim=16, dpt_last_dim=16)
    assert cfg.metric and cfg.desc_dim == 24
    save_model(DUSt3R(cfg), tmp_path / "mast3r_tiny.safetensors")
    seen = []
    real = sparse_mod.pair_matches

    def spy(preds, *a, **kw):
        seen.append(preds.has_descriptors)
        return real(preds, *a, **kw)

    monkeypatch.setattr(sparse_mod, "pair_matches", spy)
    imgs = sorted(EXAMPLES.glob("*.jpg"))[:2]
    out = tmp_path / "out"
    rc = main(["reconstruct", *map(str, imgs), "-o", str(out), "-q", "--weights", str(tmp_path / "mast3r_tiny.safetensors"),
               "--size", "224", "--align", "dense", "--export", "colmap-db", "ply", "cameras"])
    assert rc == 0, capsys.readouterr().err
    assert seen == [True]
    cams = json.loads((out / "cameras.json").read_text())
    assert cams["units"] == "metres" and cams["metric"] is True
    head = (out / "points.ply").read_bytes().split(b"end_header")[0].decode()
    assert "comment units: metres" in head
    assert "# units: metres" in (out / "colmap" / "init" / "images.txt").read_text()
    assert (out / "colmap" / "database.db").is_file()
    # through a predictions store the descriptors are stored and matched from there
    rc = main(["reconstruct", *map(str, imgs), "-o", str(tmp_path / "out2"), "-q", "--store", "on",
               "--weights", str(tmp_path / "mast3r_tiny.safetensors"), "--size", "224", "--align", "dense",
               "--export", "colmap-db", "cameras"])
    assert rc == 0, capsys.readouterr().err
    assert seen == [True, True]
    ident = json.loads((tmp_path / "out2" / ".pointmap-store" / "store.json").read_text())
    assert ident["identity"]["preprocessing"]["descriptors"] is True
