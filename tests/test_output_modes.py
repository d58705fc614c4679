"""Output files and folders through the real command line: modes that follow the umask, and the
staging folders of killed runs removed by the next run (only pointmap's own)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pointmap.io_utils import STAGING_MARKER

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "src" / "pointmap" / "examples" / "room"
BUNDLED = REPO / "src" / "pointmap" / "weights" / "pointmap_default.safetensors"

pytestmark = pytest.mark.skipif(not BUNDLED.is_file(), reason="bundled model not present")


def _pointmap(*argv: str, umask: int = 0o022) -> subprocess.CompletedProcess:
    """``python -m pointmap ARGV`` in a child process started under ``umask``."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "pointmap", *argv], env=env, capture_output=True,
                          text=True, timeout=600, preexec_fn=lambda: os.umask(umask))


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and of every file and folder under it."""
    return {p.relative_to(root.parent).as_posix(): stat.S_IMODE(p.lstat().st_mode)
            for p in [root, *root.rglob("*")]}


def _kill_inside_staging(out: Path) -> Path:
    """A child process opens ``OutputDir(out).writing()``, writes a file there and is SIGKILLed:
    the staging folder it leaves, exactly as a killed run leaves it."""
    code = ("import os, signal, sys\n"
            "from pointmap.io_utils import OutputDir\n"
            "with OutputDir(sys.argv[1]).writing() as tmp:\n"
            "    (tmp / 'points.ply').write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    before = set(out.parent.iterdir())
    proc = subprocess.run([sys.executable, "-c", code, str(out)],
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == -signal.SIGKILL
    (left,) = set(out.parent.iterdir()) - before
    return left


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One real reconstruction of the bundled example into ``out`` under umask 022, with a killed
    run's staging folder and a look-alike folder (no marker) beside ``out`` beforehand."""
    root = tmp_path_factory.mktemp("modes")
    out = root / "out"
    stale = _kill_inside_staging(out)
    lookalike = root / f".out.{'ab' * 4}.partial"
    lookalike.mkdir()
    (lookalike / "mine.txt").write_text("not pointmap's\n")
    assert (stale / STAGING_MARKER).is_file() and json.loads((stale / STAGING_MARKER).read_text())["pid"]
    proc = _pointmap("reconstruct", str(EXAMPLES), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "out": out, "stale": stale, "lookalike": lookalike}


def test_outputs_follow_the_umask(run):
    modes = _modes(run["out"])
    assert "out/cameras.json" in modes and "out/images" in modes and "out/colmap/sparse/0" in modes
    wrong = {p: oct(m) for p, m in modes.items()
             if m != (0o755 if (run["root"] / p).is_dir() else 0o644)}
    assert not wrong, wrong


def test_a_killed_runs_staging_folder_is_removed_and_nothing_else(run):
    assert not run["stale"].exists()
    assert (run["lookalike"] / "mine.txt").read_text() == "not pointmap's\n"
    assert sorted(p.name for p in run["root"].iterdir()) == sorted([run["lookalike"].name, "out"])
    assert not any(p.name == STAGING_MARKER for p in run["out"].rglob("*"))


def test_convert_output_follows_the_umask(tmp_path):
    out = tmp_path / "model.safetensors"
    proc = _pointmap("convert", "default", str(out), umask=0o027)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    proc = _pointmap("convert", "default", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
