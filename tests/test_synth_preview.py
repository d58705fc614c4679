"""``pointmap synth-preview``: N views of one scene with depth and cameras that agree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointmap.cli import SYNTH_ENGINES, SYNTH_LAYOUTS, main
from pointmap.errors import OutputExistsError
from pointmap.train.preview import ENGINES, render_preview, write_preview
from pointmap.train.realistic.composer import REALISTIC_LAYOUTS
from pointmap.train.synthetic import LAYOUTS

from realistic_bank import tiny_bank  # noqa: F401 - fixture


def test_cli_choices_match_the_engines():
    assert SYNTH_ENGINES == ENGINES
    assert set(SYNTH_LAYOUTS) == set(LAYOUTS) == set(REALISTIC_LAYOUTS)


def _check_folder(out, n):
    cams = json.loads((out / "cameras.json").read_text())
    files = sorted(p.name for p in (out / "images").iterdir())
    assert files == [f"{k:03d}.png" for k in range(n)] and sorted(cams["cameras"]) == files
    assert [im["file"] for im in cams["images"]] == files
    d0 = np.load(out / "depth" / "000.npy")
    d1 = np.load(out / "depth" / "001.npy")
    assert d0.dtype == np.float32 and (d0 >= 0).all() and (d0 > 0).mean() > 0.3
    # view 0's depth, unprojected and moved into view 1, lands on view 1's depth where visible
    K0, P0 = (np.array(cams["cameras"]["000.png"][k]) for k in ("K", "cam2world"))
    K1, P1 = (np.array(cams["cameras"]["001.png"][k]) for k in ("K", "cam2world"))
    H, W = d0.shape
    v, u = np.mgrid[0:H, 0:W]
    ok = d0 > 0
    cam0 = np.stack([(u - K0[0, 2]) / K0[0, 0], (v - K0[1, 2]) / K0[1, 1], np.ones_like(d0)], -1)[ok] * d0[ok, None]
    world = cam0 @ P0[:3, :3].T + P0[:3, 3]
    cam1 = (world - P1[:3, 3]) @ P1[:3, :3]
    z = cam1[:, 2]
    uu = np.round(K1[0, 0] * cam1[:, 0] / z + K1[0, 2]).astype(int)
    vv = np.round(K1[1, 1] * cam1[:, 1] / z + K1[1, 2]).astype(int)
    inside = (z > 0) & (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
    zb = d1[vv[inside], uu[inside]]
    agree = np.abs(zb - z[inside]) < 0.02 * z[inside]
    assert inside.mean() > 0.2 and agree.mean() > 0.5


def test_synth_preview_procedural(tmp_path):
    out = tmp_path / "prev"
    cap = render_preview("procedural", 3, seed=0, size=(64, 48), layout="room", texture_size=32)
    write_preview(cap, out, "procedural")
    _check_folder(out, 3)
    with pytest.raises(OutputExistsError):
        write_preview(cap, out, "procedural")  # never overwrites without overwrite=True
    assert main(["synth-preview", "--n", "2", "-o", str(out)]) == 2


def test_synth_preview_realistic_needs_a_bank(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("POINTMAP_ASSET_BANK", raising=False)
    assert main(["synth-preview", "--engine", "realistic", "-o", str(tmp_path / "x")]) == 2
    assert "asset bank" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["room"])
def test_synth_preview_realistic(tmp_path, layout, tiny_bank):
    bank = tiny_bank
    out = tmp_path / "prev"
    assert main(["synth-preview", "--engine", "realistic", "--n", "3", "-o", str(out), "--width", "64",
                 "--height", "48", "--layout", layout, "--bank", str(bank)]) == 0
    _check_folder(out, 3)
