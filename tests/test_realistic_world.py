"""World-like scenes of the realistic engine (rooms, streets, telephoto and handheld captures) on
the tiny generated bank, against exact geometric truth."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from pointmap.geometry import project
from pointmap.train.realistic.bank import AssetBank
from pointmap.train.realistic.capture import RealisticConfig, plan_capture, render_plans
from pointmap.train.realistic.capture_paths import handheld_shake, step_back
from pointmap.train.realistic.materials import MaterialPicker
from pointmap.train.realistic.meshes import Material, SceneAssembler, quad_mesh
from pointmap.train.realistic import world
from pointmap.train.realistic.world import world_room, world_street
from pointmap.train.synthetic.cameras import look_at

from realistic_bank import tiny_bank  # noqa: F401 - fixture

_ROOT = Path(__file__).resolve().parents[1]


def _model_boxes(bank: AssetBank, scene) -> list[tuple[np.ndarray, dict]]:
    """(world box, manifest entry) of every bank model placed in ``scene`` (room: every blocker
    is one, in the order of ``scene.assets``)."""
    by_file = {m["file"]: m for m in bank.manifest["models"]}
    return [(b, by_file[a]) for b, a in zip(scene.blockers, scene.assets)]


def test_room_models_stand_upright_at_their_size_on_the_floor_or_a_surface(tiny_bank, monkeypatch):
    bank = AssetBank.open(tiny_bank)
    for kind in world.ROOM_KINDS:  # the tiny bank's only table is an "Exterior" model
        monkeypatch.setitem(world.ROOM_KINDS, kind, ("Living room", "Exterior"))
    n_on_top = 0
    for seed in range(8):
        scene = world_room(bank, np.random.default_rng(seed))
        boxes = _model_boxes(bank, scene)
        assert len(boxes) == len(scene.blockers) >= 1
        for box, entry in boxes:
            # upright (turned about z only) at the catalogue height
            assert abs((box[1, 2] - box[0, 2]) - entry["size"][2]) < 2e-3 * max(1.0, entry["size"][2])
            bottom = box[0, 2]
            if abs(bottom) < 1e-3:
                continue
            # otherwise on the top of another model, inside its footprint
            hosts = [b for b, _ in boxes if abs(b[1, 2] - bottom) < 1e-3
                     and np.all(box[0, :2] >= b[0, :2] - 1e-4) and np.all(box[1, :2] <= b[1, :2] + 1e-4)]
            assert hosts, (seed, entry["name"], bottom)
            n_on_top += 1
    assert n_on_top > 0  # the tiny bank's "table" carries things


def test_room_cameras_stay_inside_with_telephoto_and_shake(tiny_bank):
    cfg = RealisticConfig(bank=str(tiny_bank), resolution=(32, 24), n_views=4, layouts={"room": 1.0},
                          tele_prob=1.0, tele_fov_range=(10.0, 15.0), shake_deg=1.0, shake_m=0.01)
    bank = AssetBank.open(tiny_bank)
    for sid in range(6):
        plan = plan_capture(cfg, bank, sid)
        s = plan.scene
        eyes = plan.poses[:, :3, 3]
        assert np.all(eyes >= s.free_lo - 0.06) and np.all(eyes <= s.free_hi + 0.06), sid
        assert np.all(plan.fovs >= 10.0 * 0.97 - 1e-6) and np.all(plan.fovs <= 15.0 * 1.03 + 1e-6)
        R = plan.poses[:, :3, :3].astype(np.float64)
        torch.testing.assert_close(torch.from_numpy(R @ R.transpose(0, 2, 1)), torch.eye(3, dtype=torch.float64)
                                   .expand(4, 3, 3), atol=1e-5, rtol=0)


def _one_wall_scene(free_hi_y: float):
    sa = SceneAssembler()
    sa.add(quad_mesh([-5, 10, 5], [10, 0, 0], [0, 0, -5], Material(None)), blocker=False)
    scene = sa.build("room", [-1, -1, 0.5], [1, 1, 1.5], [[0, 5, 1]], [0, 0, 3], [1, 1, 1], 0.5, 10.0, [0, 0, 0])
    scene.free_lo = np.array([-5, -20, 0], np.float32)
    scene.free_hi = np.array([5, free_hi_y, 3], np.float32)
    return scene


def test_step_back_keeps_the_framing_of_the_target():
    pose = look_at(np.array([0.0, 1.0, 1.0]), np.array([0.0, 5.0, 1.0]))[None].astype(np.float32)
    k = math.tan(math.radians(30)) / math.tan(math.radians(10))
    out = step_back(_one_wall_scene(5.0), pose, 60.0, 20.0)
    # the target 4 m ahead is now 4 k m ahead, along the same axis and with the same orientation
    np.testing.assert_allclose(out[0, :3, 3], [0.0, 5.0 - 4.0 * k, 1.0], atol=1e-5)
    np.testing.assert_allclose(out[0, :3, :3], pose[0, :3, :3], atol=1e-7)
    # a free box that ends 2 m behind the camera stops it there
    out = step_back(_free_box(_one_wall_scene(5.0), -1.0), pose, 60.0, 20.0)
    np.testing.assert_allclose(out[0, :3, 3], [0.0, -1.0, 1.0], atol=1e-5)


def _free_box(scene, y_min: float):
    scene.free_lo = np.array([-5, y_min, 0], np.float32)
    return scene


def test_handheld_shake_is_small_and_keeps_rotations():
    poses = np.stack([look_at(np.array([0.0, 0, 1]), np.array([1.0, 0, 1]))] * 50).astype(np.float32)
    out = handheld_shake(poses, np.random.default_rng(0), 1.0, 0.01)
    ang = np.degrees(np.arccos(np.clip((np.einsum("vij,vij->v", out[:, :3, :3], poses[:, :3, :3]) - 1) / 2, -1, 1)))
    assert 0.5 < np.median(ang) < 3.0 and ang.max() < 6.0
    shift = np.linalg.norm(out[:, :3, 3] - poses[:, :3, 3], axis=1)
    assert 0.005 < np.median(shift) < 0.03


def test_room_render_is_closed_and_consistent_across_views(tiny_bank):
    cfg = RealisticConfig(bank=str(tiny_bank), resolution=(48, 36), n_views=3, layouts={"room": 1.0},
                          bank_texture_size=16, baseline_range=(0.2, 0.4))
    bank = AssetBank.open(tiny_bank)
    plan = plan_capture(cfg, bank, sid=7)
    out, poses, K = render_plans(cfg, bank, [plan], 48, 36, "cpu", effects=False)
    s = plan.scene
    assert bool(out.valid.all())  # a closed room: a surface behind every pixel
    pts = out.pts3d.reshape(-1, 3).numpy()
    assert np.all(pts >= s.free_lo - [0.2 + 1e-3, 0.2 + 1e-3, 1.0]) and np.all(pts <= s.free_hi + 0.2 + 1e-3)
    assert pts[:, 2].min() >= -0.0031 - 1e-5  # grout 3 mm below the floor at the lowest
    # view 1 never sees through a surface that view 0 sees: a point of view 0 projects into
    # view 1 no nearer than the surface view 1 sees there (nearest of the 3 x 3 pixels around it,
    # for the rounding at depth edges)
    p0 = out.pts3d[0].reshape(-1, 3)
    R1, t1 = poses[1, :3, :3], poses[1, :3, 3]
    uv, z = project((p0 - t1) @ R1, K[1])
    ui, vi = uv[:, 0].round().long(), uv[:, 1].round().long()
    inside = (z > 0.05) & (ui >= 0) & (ui < 48) & (vi >= 0) & (vi < 36)
    near1 = -torch.nn.functional.max_pool2d(-out.depth[1][None, None], 3, 1, 1)[0, 0]
    d1 = near1[vi[inside], ui[inside]]
    assert int(inside.sum()) > 100
    assert float((d1 > z[inside] * 1.01).float().mean()) < 0.01


def test_street_stands_on_the_ground_and_sidewalks_under_the_sky(tiny_bank):
    bank = AssetBank.open(tiny_bank)
    scene = world_street(bank, np.random.default_rng(3))
    half = float(scene.free_hi[1]) + 0.3
    buildings = scene.blockers[(scene.blockers[:, 1, 2] - scene.blockers[:, 0, 2]) > 5.0]
    assert len(buildings) >= 4
    np.testing.assert_allclose(np.abs(buildings[:, :, 1]).min(1), half, atol=1e-4)  # facades line the street
    np.testing.assert_allclose(buildings[:, 0, 2], 0.0, atol=1e-5)
    others = scene.blockers[(scene.blockers[:, 1, 2] - scene.blockers[:, 0, 2]) <= 5.0]
    assert np.all(np.isclose(others[:, 0, 2], 0.15, atol=1e-3) | np.isclose(others[:, 0, 2], 0.0, atol=1e-3))
    assert np.all(scene.cam_lo[2] >= 1.4) and np.all(scene.cam_hi[2] <= 1.8)
    cfg = RealisticConfig(bank=str(tiny_bank), resolution=(40, 30), n_views=2, layouts={"street": 1.0},
                          bank_texture_size=16)
    pose = look_at(np.array([0.0, 0.0, 1.6]), np.array([20.0, 0.0, 3.0]))[None].astype(np.float32)
    from pointmap.train.synthetic.dataset import _Plan

    plan = _Plan(0, scene, pose, np.array([70.0]), "walk", np.random.default_rng(0))
    out, _, _ = render_plans(cfg, bank, [plan], 40, 30, "cpu", effects=False)
    assert 0.05 < float((~out.valid).float().mean()) < 0.8  # sky above the street
    assert float(out.pts3d[out.valid][:, 2].min()) > -1e-4


def test_materials_take_the_colour_asked_for(tiny_bank):
    bank = AssetBank.open(tiny_bank)
    mp = MaterialPicker(bank, np.random.default_rng(0))
    for target in ([0.8, 0.6, 0.4], [0.3, 0.3, 0.32]):
        m = mp.tinted(np.arange(bank.n_photos), np.array(target))
        tex = bank.texture(m.texture, 32)
        assert torch.allclose(tex[0], tex[1]) and torch.allclose(tex[1], tex[2])  # luminance only
        got = tex.mean((1, 2)).numpy() * np.array(m.color)
        np.testing.assert_allclose(got, target, rtol=0.05)


def test_travel_bank_fits_its_budget(tiny_bank, tmp_path):
    full = sum(p.stat().st_size for p in tiny_bank.rglob("*") if p.is_file())
    photos = sum(p.stat().st_size for p in (tiny_bank / "photos").iterdir())
    budget = (photos + (full - photos) * 0.8) / 1e6 + 0.4
    out = tmp_path / "travel"
    r = subprocess.run([sys.executable, str(_ROOT / "scripts" / "travel_bank.py"), str(tiny_bank), "-o", str(out),
                        "--max-mb", f"{budget:.6f}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    small = AssetBank.open(out)
    assert small.n_photos == 30 and 0 < small.n_models < 9
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["left_out"]) == 9 - small.n_models
    for i in range(small.n_models):
        small.model(i)  # every kept model reads back
    r = subprocess.run([sys.executable, str(_ROOT / "scripts" / "travel_bank.py"), str(tiny_bank), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not empty" in r.stderr and "Traceback" not in r.stderr
