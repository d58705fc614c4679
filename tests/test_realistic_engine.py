"""The realistic engine end to end on a tiny bank built in the test from generated photographs and
textured OBJ models (no distribution package needed); the real bank is checked when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pointmap.geometry import unproject_depth
from pointmap.train.realistic.bank import FREE_LICENSES, AssetBank, BankError
from pointmap.train.realistic.build_bank import _dep5_text, _license_of
from pointmap.train.realistic.capture import RealisticConfig, RealisticPairDataset, plan_capture, render_plans
from pointmap.train.realistic.composer import REALISTIC_LAYOUTS, compose_scene

from realistic_bank import tiny_bank  # noqa: F401 - fixture


def test_bank_manifest_records_every_asset_and_reads_back(tiny_bank):
    bank = AssetBank.open(tiny_bank)
    man = json.loads((tiny_bank / "manifest.json").read_text())
    assert bank.n_photos == 30 and bank.n_models == 9
    assert all(s["license"] in FREE_LICENSES for s in man["sources"])
    assert [s["id"] for s in man["sources"]] == ["p0", "p1", "p2"]  # the non-free source was left out
    assert any("Proprietary" in s["reason"] for s in man["skipped"])
    assert len({tuple(p["crop"]) + (p["source"],) for p in man["photos"]}) == 30  # distinct crops
    for m in man["models"]:
        assert m["license"] == "CC-BY-4.0" and m["package"] == "test-models" and m["path"].startswith("test:")
    # model 0 (a box) is scaled to the catalogue size (width, depth, height) and stands on z = 0
    mesh = bank.model(0)
    ext = mesh.vertices.max(0) - mesh.vertices.min(0)
    np.testing.assert_allclose(ext, [0.8, 0.5, 0.9], atol=2e-3)
    assert abs(mesh.vertices[:, 2].min()) < 1e-3
    assert mesh.materials[0].texture is not None
    tex = bank.texture(mesh.materials[0].texture, 16)
    assert tex.shape == (3, 16, 16) and 0 <= float(tex.min()) <= float(tex.max()) <= 1
    # the sphere (model 2's kind, 320 faces) was decimated below max_faces=200 (approximately)
    assert man["models"][2]["faces"] <= 260


def test_open_missing_bank_names_the_build_command(tmp_path):
    with pytest.raises(BankError, match="build_asset_bank"):
        AssetBank.open(tmp_path / "none")


def test_machine_readable_copyright_licence_lookup():
    paras = _dep5_text("Files: *\nLicense: GPL-2+\n\nFiles: 16.04/a_by_b.jpg\nCopyright: x\nLicense: CC-BY-4.0\n\n"
                       "Files: Scopia/*\nLicense: CC-BY-3.0\n")
    assert _license_of(paras, "/usr/share/backgrounds/a_by_b.jpg") == "CC-BY-4.0"
    assert _license_of(paras, "/usr/share/backgrounds/other.jpg") == "GPL-2+"
    assert _license_of(paras, "Scopia/x.obj") == "CC-BY-3.0"


@pytest.mark.parametrize("layout", REALISTIC_LAYOUTS)
def test_layouts_compose_and_render_with_exact_points(tiny_bank, layout):
    cfg = RealisticConfig(bank=str(tiny_bank), resolution=(40, 30), n_views=3, layouts={layout: 1.0},
                          bank_texture_size=16, jpeg_prob=1.0, covis_width=24)
    bank = AssetBank.open(tiny_bank)
    plan = plan_capture(cfg, bank, sid=12345 + REALISTIC_LAYOUTS.index(layout))
    assert plan.scene.layout == layout and plan.poses.shape == (3, 4, 4)
    out, poses, K = render_plans(cfg, bank, [plan], 40, 30, "cpu")
    assert out.rgb is not None and out.rgb.shape == (3, 3, 30, 40)
    assert float(out.valid.float().mean()) > 0.3
    assert float(out.rgb.std()) > 0.01
    # world points are the unprojection of the depth through the pose
    cam = unproject_depth(out.depth, K)
    world = torch.einsum("vhwj,vij->vhwi", cam, poses[:, :3, :3]) + poses[:, None, None, :3, 3]
    v = out.valid
    torch.testing.assert_close(world[v], out.pts3d[v], atol=1e-4, rtol=1e-4)
    assert (out.depth[~v] == 0).all()


def test_room_furniture_never_overlaps(tiny_bank):
    bank = AssetBank.open(tiny_bank)
    for seed in range(6):
        scene = compose_scene("room", np.random.default_rng(seed), bank)
        on_floor = scene.blockers[scene.blockers[:, 0, 2] < 1e-3]  # (things on tables stand on them)
        fp = on_floor[:, :, :2]
        for a in range(len(fp)):
            for b in range(a + 1, len(fp)):
                sep = np.any((fp[a, 1] <= fp[b, 0] + 1e-6) | (fp[b, 1] <= fp[a, 0] + 1e-6))
                assert sep, (seed, a, b)
            # inside the room's walls (0.2 m beyond the free box)
            assert np.all(fp[a, 0] >= scene.free_lo[:2] - 0.2 - 1e-4) and np.all(fp[a, 1] <= scene.free_hi[:2] + 0.2 + 1e-4)


def test_pair_dataset_items(tiny_bank):
    cfg = RealisticConfig(bank=str(tiny_bank), resolution=(32, 24), n_views=4, bank_texture_size=16,
                          covis_width=16, max_attempts=2)
    ds = RealisticPairDataset(cfg, 4)
    v1, v2 = ds[1]
    assert v1["img"].shape == (3, 24, 32) and v1["depthmap"].shape == (24, 32)
    assert v1["dataset"] == "realistic" and v1["label"] in REALISTIC_LAYOUTS
    assert float(v1["img"].min()) >= -1 and float(v1["img"].max()) <= 1
    assert v1["instance"] != v2["instance"]
    again, _ = RealisticPairDataset(cfg, 4)[1]
    torch.testing.assert_close(again["depthmap"], v1["depthmap"])  # deterministic


_REAL_BANK = os.environ.get("POINTMAP_ASSET_BANK")


@pytest.mark.skipif(not _REAL_BANK or not Path(_REAL_BANK, "manifest.json").is_file(),
                    reason="no real asset bank (set POINTMAP_ASSET_BANK to a built bank)")
def test_real_bank_meets_the_targets():
    bank = AssetBank.open(_REAL_BANK)
    man = bank.manifest
    assert bank.n_photos >= 1000 and bank.n_models >= 100
    assert all(m["license"] in FREE_LICENSES for m in man["models"])
    assert all(s["license"] in FREE_LICENSES for s in man["sources"])
    size = sum(p.stat().st_size for p in Path(_REAL_BANK).rglob("*") if p.is_file())
    assert size <= 60 * 2**20


def test_missing_packages_name_the_apt_get_line():
    from pointmap.train.realistic.build_bank import _ensure_packages

    with pytest.raises(BankError, match="apt-get install -y --no-install-recommends pointmap-no-such-package"):
        _ensure_packages(False, ["pointmap-no-such-package"])
