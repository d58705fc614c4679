"""Every bad input a user can give, through the real command line (a subprocess): exit status 2,
one line on stderr naming the file or value, no traceback, and no file left behind."""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "src" / "pointmap" / "examples" / "room"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A project folder: photos/, a text file, a 1x1 PNG, bad checkpoints, a dataset folder."""
    root = tmp_path_factory.mktemp("hostile")
    photos = root / "photos"
    photos.mkdir()
    for src in sorted(EXAMPLES.glob("*.jpg"))[:2]:
        (photos / src.name).write_bytes(src.read_bytes())
    (root / "notes.txt").write_text("not a folder\n")
    (root / "notes.jpg").write_text("not an image\n")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(root / "dot.png")
    torch.save({"model": collections.OrderedDict(w=torch.zeros(2))}, root / "bare.pth")
    with open(root / "evil.pth", "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    (root / "existing.safetensors").write_bytes(b"the user's file")
    (root / "dataset").mkdir()
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
            for p in sorted(root.rglob("*"))}


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


IMG = "photos/" + sorted(p.name for p in EXAMPLES.glob("*.jpg"))[0]
CASES = [
    # (arguments, text the one line must contain)
    (["reconstruct", "photos", "-o", "out", "--batch-size", "0"], "--batch-size"),
    (["reconstruct", "photos", "-o", "out", "--fps", "0"], "--fps"),
    (["reconstruct", "photos", "-o", "out", "--fps", "-2"], "--fps"),
    (["reconstruct", "photos", "-o", "out", "--niter", "-1"], "--niter"),
    (["reconstruct", "photos", "-o", "out", "--conf-threshold", "nan"], "'nan'"),
    (["reconstruct", "photos", "-o", "out", "--conf-threshold", "inf"], "'inf'"),
    (["pair", IMG, IMG, "-o", "out", "--conf-threshold=-Infinity"], "'-Infinity'"),
    (["reconstruct", "photos", "-o", "/proc/pointmap-out"], "/proc/pointmap-out"),
    (["reconstruct", "photos", "-o", "notes.txt/out"], "notes.txt"),
    (["reconstruct", "photos", "-o", "notes.txt"], "notes.txt"),
    (["reconstruct", "photos", "-o", "photos", "--overwrite"], "photos"),
    (["reconstruct", "photos", "-o", ".", "--overwrite"], "photos"),
    (["reconstruct", "photos", "-o", "photos/out"], "photos/out"),
    (["reconstruct", "photos", "-o", "out", "--device", "cuda:3"], "cuda:3"),
    (["reconstruct", "photos", "-o", "out", "--device", "tpu"], "tpu"),
    (["reconstruct", "missing.jpg", "-o", "out"], "missing.jpg"),
    (["reconstruct", "notes.jpg", "photos", "-o", "out"], "notes.jpg"),
    (["reconstruct", "dot.png", "photos", "-o", "out"], "dot.png"),
    (["reconstruct", "photos", "-o", "out", "--weights", "bare.pth"], "bare.pth"),
    (["reconstruct", "photos", "-o", "out", "--weights", "evil.pth"], "evil.pth"),
    (["reconstruct", "photos", "-o", "out", "--weights", "nothing.pth"], "nothing.pth"),
    (["convert", "default", "existing.safetensors"], "existing.safetensors"),
    (["convert", "bare.pth", "/proc/model.safetensors"], "/proc/model.safetensors"),
    (["eval", "depth", "dataset", "--out", "dataset/report"], "dataset/report"),
    (["app", "--max-upload-mb", "nan"], "--max-upload-mb"),
]


@pytest.mark.parametrize("argv, named", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(work, argv, named):
    if "cuda:3" in argv and _cuda_count() > 3:
        pytest.skip("this computer has a cuda:3")
    if any(a.startswith("/proc/") for a in argv) and not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    before = _snapshot(work)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-m", "pointmap", *argv], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    err = res.stderr
    assert res.returncode == 2, (res.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0] and named in lines[0], err
    assert _snapshot(work) == before  # no file written, moved or removed (and no code ran)
