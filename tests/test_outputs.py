"""Output folders: pointmap never deletes a file it did not write, never writes into its inputs,
and an interrupted run leaves earlier results as they were."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pointmap.cli import main
from pointmap.errors import OutputExistsError, OutputOverlapError, OutputPathError
from pointmap.export import export_scene
from pointmap.export import ply as ply_mod
from pointmap.io_utils import MANIFEST_NAME, OutputDir, check_output_file

from export_scenes import make_scene

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "pointmap" / "examples" / "room"


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with the hash of its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder: photos/ (the bundled example images) and an unrelated file beside it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted(EXAMPLES.glob("*.jpg"))[:3]:
        (photos / src.name).write_bytes(src.read_bytes())
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "paper.tex").write_text("\\section{}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv, named", [
    (["reconstruct", "photos", "-o", "photos", "--overwrite"], "is the input photos"),
    (["reconstruct", "photos", "-o", ".", "--overwrite"], "contains the input photos"),
    (["reconstruct", "photos", "-o", "photos/out"], "inside the input folder photos"),
    (["reconstruct", "photos/" + sorted(p.name for p in EXAMPLES.glob("*.jpg"))[0], "photos/x.jpg", "-o",
      "photos", "--overwrite"], "contains the input photos/"),
    (["pair", "photos/a.jpg", "photos/b.jpg", "-o", "photos", "--overwrite"], "contains the input photos/a.jpg"),
])
def test_output_that_is_contains_or_lies_in_an_input_is_refused(project, capsys, argv, named):
    before = snapshot(project)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and argv[argv.index("-o") + 1] in err
    assert snapshot(project) == before  # every input and every other file byte-identical


def test_eval_out_inside_the_dataset_is_refused(project, capsys):
    before = snapshot(project)
    assert main(["eval", "depth", "photos", "--out", "photos/report", "--overwrite"]) == 2
    assert "inside the input folder photos" in capsys.readouterr().err
    assert snapshot(project) == before


def test_overwrite_replaces_only_files_pointmap_wrote(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    (out / "depth").mkdir()
    (out / "depth" / "my_depth.png").write_bytes(b"not pointmap's")
    scene = make_scene()
    export_scene(scene, out, formats=("ply", "depth", "cameras"), overwrite=True)
    assert (out / MANIFEST_NAME).is_file() and (out / "points.ply").is_file()
    export_scene(scene, out, formats=("cameras",), overwrite=True)  # the earlier ply and depth go
    assert not (out / "points.ply").exists()
    assert sorted(p.name for p in (out / "depth").iterdir()) == ["my_depth.png"]
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "depth" / "my_depth.png").read_bytes() == b"not pointmap's"


def test_a_file_pointmap_did_not_write_is_never_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "points.ply").write_bytes(b"the user's own cloud")
    before = snapshot(tmp_path)
    with pytest.raises(OutputExistsError, match="points.ply, which pointmap did not write"):
        export_scene(make_scene(), out, formats=("ply", "cameras"), overwrite=True)
    assert snapshot(tmp_path) == before  # nothing written, no temporary folder left


@pytest.mark.parametrize("error", [RuntimeError("simulated crash"), KeyboardInterrupt()])
def test_interrupted_export_leaves_previous_results_as_they_were(tmp_path, monkeypatch, error):
    out = tmp_path / "out"
    export_scene(make_scene(), out, formats=("glb", "ply", "cameras"))
    before = snapshot(tmp_path)

    def crash(*a, **k):
        raise error

    monkeypatch.setattr("pointmap.export.export_ply", crash)
    with pytest.raises(type(error)):
        export_scene(make_scene(placed=[True, False, True]), out, formats=("glb", "ply", "cameras"),
                     overwrite=True)
    assert snapshot(tmp_path) == before
    # a first run that fails leaves no folder at all
    with pytest.raises(type(error)):
        export_scene(make_scene(), tmp_path / "new" / "out", formats=("ply",))
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(not (Path(ply_mod.__file__).parents[1] / "weights" / "pointmap_default.safetensors").is_file(),
                    reason="bundled model not present")
def test_interrupted_cli_run_leaves_previous_results(project, monkeypatch, capsys):
    imgs = [str(p) for p in sorted((project / "photos").glob("*.jpg"))[:2]]
    assert main(["pair", *imgs, "-o", "out", "-q", "--export", "ply", "cameras"]) == 0
    before = snapshot(project)

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("pointmap.export.export_cameras", crash)
    assert main(["pair", *imgs, "-o", "out", "-q", "--export", "ply", "cameras", "--overwrite",
                 "--conf-threshold", "5"]) == 130
    assert snapshot(project) == before


def test_unwritable_and_file_parent_outputs_are_refused(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputPathError, match="file.txt, which is a file"):
        OutputDir(tmp_path / "file.txt" / "out")
    with pytest.raises(OutputExistsError, match="not a folder"):
        OutputDir(tmp_path / "file.txt", overwrite=True)
    if os.path.isdir("/proc/self"):
        with pytest.raises(OutputPathError, match="not writable"):
            OutputDir("/proc/pointmap-out")
        with pytest.raises(OutputPathError, match="not writable"):
            check_output_file("/proc/model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_single_output_file_rules(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"theirs")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output_file(f, option="--overwrite")
    assert check_output_file(f, overwrite=True) == f
    with pytest.raises(OutputOverlapError, match="is the input"):
        check_output_file(f, overwrite=True, inputs=[f])
    assert main(["convert", str(f), str(f), "--overwrite"]) == 2
    assert main(["convert", "default", str(f)]) == 2
    assert f.read_bytes() == b"theirs"


def test_overlap_check_names_both_paths(tmp_path):
    with pytest.raises(OutputOverlapError) as exc:
        OutputDir(tmp_path / "in", inputs=[tmp_path / "in" / "a.jpg"])
    assert str(tmp_path / "in") in str(exc.value) and "a.jpg" in str(exc.value)


@pytest.mark.skipif(not (Path(ply_mod.__file__).parents[1] / "weights" / "pointmap_default.safetensors").is_file(),
                    reason="bundled model not present")
def test_killed_run_leaves_previous_results_and_no_temporary_folder(tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    export_scene(make_scene(), out, formats=("ply", "cameras"))  # an earlier run's results
    before = snapshot(tmp_path)
    imgs = [str(p) for p in sorted(EXAMPLES.glob("*.jpg"))]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "pointmap", "reconstruct", *imgs, "-o", str(out),
                             "--overwrite", "-q"], env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the run has started its work
        if "images at" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 130, rest
    assert "Traceback" not in rest
    assert snapshot(tmp_path) == before  # earlier results byte-identical, nothing else left


def test_atomic_path_replaces_only_on_success(tmp_path):
    """A writer that fails half-way leaves the previous file and no temporary file; one that
    succeeds replaces it with the mode a plain open gives (not the temporary file's 0600)."""
    from pointmap.io_utils import atomic_path, current_umask

    target = tmp_path / "state.bin"
    target.write_bytes(b"before")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk gone")
    assert target.read_bytes() == b"before" and sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"after")
    assert target.read_bytes() == b"after" and sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_an_output_folder_is_flushed_to_disk_once_before_it_moves_into_place(tmp_path, monkeypatch):
    """Atomic writes into the staging folder skip their own fsync: the folder is flushed in one
    go before the commit (each file fsynced where the system has no syncfs); a file written
    elsewhere is still fsynced on its own, and a failed flush leaves no output."""
    from pointmap import io_utils

    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_size) or real_fsync(fd))
    flushed, real_flush = [], io_utils._flush_to_disk

    def flush(folder):
        flushed.append(sorted(p.name for p in folder.iterdir()))
        real_flush(folder)

    monkeypatch.setattr(io_utils, "_flush_to_disk", flush)
    with OutputDir(tmp_path / "out").writing() as tmp:
        for i in range(3):
            io_utils.atomic_write_bytes(tmp / f"f{i}", b"x")
        assert synced == [] and flushed == []
        io_utils.atomic_write_bytes(tmp_path / "elsewhere", b"y")
        assert len(synced) == 1
    assert flushed == [[".pointmap-staging.json", "f0", "f1", "f2"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST_NAME, "f0", "f1", "f2"]

    synced.clear()
    monkeypatch.setattr(io_utils, "_syncfs", lambda: None)  # no syncfs: each file on its own
    io_utils._flush_to_disk(tmp_path / "out")
    assert len(synced) == 4 and synced.count(1) == 3  # the three 1-byte files and the manifest

    def failing_syncfs(fd):
        import ctypes

        ctypes.set_errno(5)
        return -1

    monkeypatch.setattr(io_utils, "_syncfs", lambda: failing_syncfs)
    monkeypatch.setattr(io_utils, "_flush_to_disk", real_flush)
    with pytest.raises(OutputPathError, match="could not write to output folder"):
        with OutputDir(tmp_path / "out2").writing() as tmp:
            io_utils.atomic_write_bytes(tmp / "f", b"z")
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2.*"))
