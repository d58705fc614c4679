"""The public API at ``pointmap.*``: every documented name resolves to its implementation, and
``import pointmap`` stays cheap (no torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pointmap

EXPECTED = {
    "load_model": ("pointmap.model.checkpoint", "load_model"),
    "load_images": ("pointmap.images", "load_images"),
    "make_pairs": ("pointmap.pairs", "make_pairs"),
    "infer_pairs": ("pointmap.inference", "infer_pairs"),
    "global_align": ("pointmap.align", "global_align"),
    "reconstruct": ("pointmap.api", "reconstruct"),
    "reconstruct_images": ("pointmap.api", "reconstruct_images"),
    "ReconstructionResult": ("pointmap.api", "ReconstructionResult"),
    "localize": ("pointmap.localization", "localize"),
    "extend": ("pointmap.pipeline.extend", "extend"),
    "PairPredictions": ("pointmap.predictions", "PairPredictions"),
    "Scene": ("pointmap.scene", "Scene"),
    "AlignConfig": ("pointmap.align.config", "AlignConfig"),
    "PointmapError": ("pointmap.errors", "PointmapError"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_name_is_the_implementation(name: str) -> None:
    import importlib

    module, attr = EXPECTED[name]
    assert getattr(pointmap, name) is getattr(importlib.import_module(module), attr)
    assert name in pointmap.__all__
    assert name in dir(pointmap)


def test_all_lists_exactly_the_public_names() -> None:
    assert set(pointmap.__all__) == set(EXPECTED) | {"__version__"}


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        pointmap.no_such_thing  # noqa: B018
    assert not hasattr(pointmap, "no_such_thing")


def test_import_pointmap_does_not_import_torch() -> None:
    code = (
        "import sys, pointmap\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'PIL', 'scipy', 'trimesh') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
        "pointmap.Scene\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "", f"import pointmap imported {lines[0]}"
    assert lines[1] == "True"  # the first real use imports what it needs


def test_program_exits_with_mains_status_and_frozen_gc(monkeypatch) -> None:
    """``pointmap`` (cli.run) exits with main's status after freezing the collector (fast teardown)."""
    import gc

    from pointmap import cli

    monkeypatch.setattr(cli, "main", lambda: 3)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(SystemExit) as exc:
            cli.run()
        assert exc.value.code == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_python_dash_m_pointmap_reports_errors_with_status_2(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "pointmap", "reconstruct", str(tmp_path / "none.jpg"),
                          "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "none.pth")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("pointmap: error:"), out.stderr
