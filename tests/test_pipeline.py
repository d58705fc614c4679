"""The reconstruction request and its runner: one request whether the command line or the app
builds it, one matching pass per run, refusals before the model is loaded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pointmap.cli import build_parser, main, request_from_args

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "src" / "pointmap" / "examples" / "room").glob("*.jpg"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_command_line_and_app_build_the_same_request(tmp_path):
    pytest.importorskip("gradio")
    from pointmap.app import app_request

    imgs = [str(p) for p in EXAMPLES[:3]]
    cams, masks, out = tmp_path / "cams", tmp_path / "masks", tmp_path / "render_001"
    args = build_parser().parse_args([
        "reconstruct", *imgs, "-o", str(out), "--size", "224", "--graph", "swin-2", "--iterations", "40",
        "--cameras", str(cams), "--masks", str(masks), "--shared-focal", "--conf-threshold", "2.5",
        "--mask-sky", "--no-clean", "--mesh", "--max-points", "0", "--export", "glb", "ply", "colmap",
        "transforms", "depth", "cameras", "colmap-db", "--fps", "2", "--weights", "default", "--device", "cpu",
        "--store", "on"])  # the app keeps each run's store and cameras.json: photos can be added to it
    cli = request_from_args(args)
    app = app_request(imgs, [Path(p).name for p in imgs], out, weights="default", device="cpu", fps=2.0,
                      size="224", graph_kind="swin", k=2, align_method="dense", iters=40, cameras=cams,
                      masks=masks, shared_focal=True, conf=2.5, mesh=True, sky=True, clean=False,
                      cam_size=0.0, colmap_db=True)
    assert cli == app
    assert cli.align.dense.niter == 40 and cli.inputs.names is None
    # a change on either side shows
    other = app_request(imgs, [Path(p).name for p in imgs], out, weights="default", device="cpu", fps=2.0,
                        size="224", graph_kind="swin", k=2, align_method="sparse", iters=0, cameras=cams,
                        masks=masks, shared_focal=True, conf=2.5, mesh=True, sky=True, clean=False)
    assert other != cli and other.align.method == "sparse" and other.align.dense is None


def _tiny_mast3r(path: Path) -> Path:
    import torch

    from pointmap.model import DUSt3R, ModelConfig
    from pointmap.model.checkpoint import save_model

    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32,
                      dec_depth=4, dec_num_heads=2, head_type="catmlp+dpt", output_mode="pts3d+desc24",
                      two_confs=True, dpt_layer_dims=(8, 16, 16, 32), dpt_feature_dim=16, dpt_last_dim=16)
    save_model(DUSt3R(cfg), path)
    return path


def test_sparse_alignment_and_colmap_db_match_every_pair_once(tmp_path, capsys, monkeypatch):
    """``--align sparse --export colmap-db``: one matching pass (sparse alignment and the database
    share the matches), and the database holds every pair."""
    pycolmap = pytest.importorskip("pycolmap")
    import pointmap.align.sparse as sparse_module

    weights = _tiny_mast3r(tmp_path / "mast3r_tiny.safetensors")
    calls = []
    real = sparse_module.pair_matches

    def counting(preds, *a, **kw):
        calls.append(len(preds.pairs))
        return real(preds, *a, **kw)

    monkeypatch.setattr(sparse_module, "pair_matches", counting)
    out = tmp_path / "out"
    rc = main(["reconstruct", *map(str, EXAMPLES[:3]), "-o", str(out), "-q", "--weights", str(weights),
               "--size", "224", "--align", "sparse", "--export", "colmap-db", "cameras"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert calls == [6]  # one pass over the 6 ordered pairs of 3 images
    assert "aligned by sparse alignment" in cap.out
    db = pycolmap.Database.open(str(out / "colmap" / "database.db"))
    try:
        assert db.num_matched_image_pairs() == 3
    finally:
        db.close()


@pytest.mark.parametrize("extra, named", [
    (["--align", "sparse", "--iterations", "5", "--solver", "adam"], "--solver, --iterations do not apply to --align sparse"),
    (["--align", "sparse", "--niter", "0"], "--iterations does not apply to --align sparse"),
])
def test_refusals_come_before_the_model_is_loaded(tmp_path, capsys, extra, named):
    rc = main(["reconstruct", str(EXAMPLES[0]), str(EXAMPLES[1]), "-o", str(tmp_path / "o"),
               "--weights", str(tmp_path / "missing.pth"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and named in err, err
    assert "missing.pth" not in err  # the weights were never reached
    assert not (tmp_path / "o").exists()


def test_foreign_file_under_an_output_name_is_refused_before_the_work(tmp_path):
    """``out/cameras.json`` that pointmap did not write, with ``--overwrite``: refused up-front,
    through the real command line, before torch is even imported (so no model is loaded; the
    refusal takes well under a second on an idle machine)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "cameras.json").write_text("{}")
    (out / "notes.txt").write_text("the user's")
    code = ("import sys\nfrom pointmap.cli import main\n"
            f"rc = main(['reconstruct', {str(EXAMPLES[0])!r}, {str(EXAMPLES[1])!r}, '-o', {str(out)!r}, "
            "'--overwrite', '-q'])\nprint(rc, 'torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.stdout.split() == ["2", "False"], res.stderr
    assert "cameras.json" in res.stderr and "did not write" in res.stderr and "images at" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert (out / "cameras.json").read_text() == "{}" and sorted(p.name for p in out.iterdir()) == [
        "cameras.json", "notes.txt"]


def test_torch_free_copies_equal_the_library_names():
    from pointmap.export import FORMATS, MATCH_FORMATS
    from pointmap.pipeline.preflight import FIXED_OUTPUTS, STORE_DIRNAME
    from pointmap.pipeline.request import DEFAULT_FORMATS
    from pointmap.store import STORE_DIRNAME as store_dirname

    assert STORE_DIRNAME == store_dirname
    assert DEFAULT_FORMATS == FORMATS and set(FIXED_OUTPUTS) == {*FORMATS, *MATCH_FORMATS}


def test_trivial_argument_errors_import_no_torch():
    code = ("import sys\nfrom pointmap.cli import main\n"
            "for bad in ('x', '-5', '0.5', '1'):\n"
            "    try:\n"
            "        main(['reconstruct', 'a.jpg', '-o', 'o', '--conf-threshold', bad])\n"
            "    except SystemExit as exc:\n"
            "        assert exc.code == 2\n"
            "print('torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 4 and all("--conf-threshold" in ln for ln in lines)
    assert "'x' is not a number" in lines[0] and all("above 1" in ln for ln in lines[1:])


def test_main_puts_the_sigterm_handler_back(tmp_path, capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["reconstruct", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o")]) == 2
    assert signal.getsignal(signal.SIGTERM) is before
    assert "missing.jpg" in capsys.readouterr().err


def test_threshold_keeps_user_masks():
    import torch

    from pointmap.scene import Scene

    conf = [torch.full((4, 5), 5.0), torch.full((4, 5), 5.0)]
    user = torch.ones(4, 5, dtype=torch.bool)
    user[:, :2] = False
    scene = Scene(imgs=[torch.zeros(4, 5, 3)] * 2, poses=torch.eye(4).repeat(2, 1, 1),
                  intrinsics=torch.eye(3).repeat(2, 1, 1), depths=[torch.ones(4, 5)] * 2, confidence=conf,
                  masks=[c > 3 for c in conf], user_masks=[user, None])
    low = scene.with_threshold(1.5)
    assert low.masks[0].sum() == 12 and not low.masks[0][:, :2].any() and low.masks[1].all()
    assert scene.with_threshold(10.0).masks[0].sum() == 0
    assert scene.first(1).user_masks == [user]


def test_skip_bad_skips_a_corrupt_file_among_good_ones(tmp_path):
    from pointmap.errors import ImageLoadError
    from pointmap.pipeline.inputs import load_inputs
    from pointmap.pipeline.request import Inputs

    bad = tmp_path / "cut.jpg"
    bad.write_bytes(EXAMPLES[0].read_bytes()[:2000])
    with pytest.raises(ImageLoadError, match="cut.jpg"):
        load_inputs(Inputs([str(bad), str(EXAMPLES[0])]), 224)
    kept = load_inputs(Inputs([str(bad), str(EXAMPLES[0]), str(EXAMPLES[1])], skip_bad=True), 224)
    assert [Path(im.meta.path).name for im in kept] == [EXAMPLES[0].name, EXAMPLES[1].name]


def test_process_group_has_a_stated_collective_timeout(monkeypatch):
    import torch.distributed as dist

    from pointmap import process_group

    seen = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.update(kw))
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    process_group.init_from_env(backend="gloo")
    assert seen["timeout"] == process_group.COLLECTIVE_TIMEOUT and seen["backend"] == "gloo"


def test_a_run_that_places_no_image_says_so_and_exports_nothing(tmp_path, capsys, monkeypatch):
    """Degenerate predictions can leave every camera unplaced: one line, no traceback, no export
    (before, the GLB writer failed on an empty scene)."""
    import dataclasses

    import torch

    from pointmap.pipeline import core

    real = core._align

    def nowhere(*a, **k):
        scene, ran = real(*a, **k)
        return dataclasses.replace(scene, placed=torch.zeros_like(scene.placed)), ran

    monkeypatch.setattr(core, "_align", nowhere)
    out = tmp_path / "out"
    rc = main(["reconstruct", *map(str, EXAMPLES[:3]), "-o", str(out), "--size", "224", "--iterations", "5",
               "--device", "cpu", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and "Traceback" not in "\n".join(err)
    assert "placed none of the 3 images" in err[-1] and "nothing was exported" in err[-1]
    assert not out.exists() or not any(p.suffix in (".glb", ".ply", ".json") for p in out.rglob("*"))
