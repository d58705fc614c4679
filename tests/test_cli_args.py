"""The command line's parser: cheap to build, one-line argument errors, only applicable options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pointmap.cli import EXPORT_FORMATS, MATCH_EXPORT_FORMATS, SOLVERS, build_parser, main


def test_help_and_argument_errors_import_nothing_heavy():
    code = (
        "import sys\n"
        "from pointmap.cli import main\n"
        "for argv in (['--help'], ['reconstruct', '--help'], ['reconstruct', 'x', '-o', 'y', '--batch-size', '0']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'cv2', 'trimesh', 'scipy') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv, named", [
    (["reconstruct", "a.jpg", "-o", "o", "--batch-size", "0"], "--batch-size"),
    (["reconstruct", "a.jpg", "-o", "o", "--batch-size", "-3"], "--batch-size"),
    (["reconstruct", "a.jpg", "-o", "o", "--fps", "0"], "--fps"),
    (["reconstruct", "a.jpg", "-o", "o", "--fps", "-1"], "--fps"),
    (["reconstruct", "a.jpg", "-o", "o", "--fps", "nan"], "--fps"),
    (["reconstruct", "a.jpg", "-o", "o", "--niter", "-1"], "--niter"),
    (["reconstruct", "a.jpg", "-o", "o", "--iterations", "-5"], "--iterations"),
    (["reconstruct", "a.jpg", "-o", "o", "--conf-threshold", "nan"], "--conf-threshold"),
    (["reconstruct", "a.jpg", "-o", "o", "--conf-threshold", "inf"], "--conf-threshold"),
    (["reconstruct", "a.jpg", "-o", "o", "--conf-threshold", "-inf"], "--conf-threshold"),
    (["reconstruct", "a.jpg", "-o", "o", "--solver", "sgd"], "--solver"),
    (["pair", "a.jpg", "b.jpg", "-o", "o", "--conf-threshold", "NaN"], "--conf-threshold"),
    (["app", "--max-images", "0"], "--max-images"),
    (["match", "a.jpg", "b.jpg", "-o", "o", "--subsample", "0"], "--subsample"),
])
def test_bad_numbers_are_one_line_errors(argv, named, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err


def test_zero_iterations_is_allowed():
    args = build_parser().parse_args(["reconstruct", "a.jpg", "-o", "o", "--niter", "0"])
    assert args.iterations == 0


def test_pair_help_lists_only_options_that_apply(capsys):
    with pytest.raises(SystemExit):
        main(["pair", "--help"])
    text = capsys.readouterr().out
    for opt in ("--graph", "--distributed", "--fps", "--skip-bad", "--solver", "--iterations", "--batch-size"):
        assert opt not in text, opt
    assert "--conf-threshold" in text and "--export" in text


def test_solver_help_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["reconstruct", "--help"])
    text = capsys.readouterr().out
    assert "{gn,adam}" in text


def test_parser_constants_match_the_library():
    from pointmap.align import AlignConfig
    from pointmap.export import FORMATS, MATCH_FORMATS

    assert tuple(EXPORT_FORMATS) == tuple(FORMATS)
    assert tuple(MATCH_EXPORT_FORMATS) == tuple(MATCH_FORMATS)
    from pointmap.cli import ONLINE_EXPORT_FORMATS
    from pointmap.online.runner import EXPORT_FORMATS as ONLINE_FORMATS

    assert tuple(ONLINE_EXPORT_FORMATS) == tuple(ONLINE_FORMATS)
    for s in SOLVERS:
        AlignConfig(solver=s)


def test_quick_start_output_is_ignored_by_git():
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    res = subprocess.run(["git", "check-ignore", "-q", "out/scene.glb"], cwd=root)
    assert res.returncode == 0
