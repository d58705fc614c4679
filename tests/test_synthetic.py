"""The synthetic multi-view data engine: determinism, splits, exact geometry, variety."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from scipy.spatial.transform import Rotation

from pointmap.errors import PointmapError
from pointmap.train.synthetic import (
    LAYOUTS,
    SyntheticConfig,
    SyntheticPairDataset,
    build_texture_bank,
    cast_rays,
    intrinsics_from_fov,
    look_at,
    make_scene,
    pack_scenes,
    pixel_rays,
    render_example_scene,
    render_pair_batch,
    render_views,
    scene_id,
)
from pointmap.train.synthetic.dataset import _bank
from pointmap.train.synthetic.raycast import cast_rays_tiled
from pointmap.train.synthetic.scenes import SceneBuilder

W, H = 64, 48
SMALL = {"resolution": (W, H), "n_textures": 24, "texture_size": 64, "covis_width": 32, "n_views": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw) -> SyntheticConfig:
    return SyntheticConfig(**{**SMALL, **kw})


@pytest.fixture(scope="module")
def bank():
    return build_texture_bank(0, n_procedural=24, n_photo=4, size=64)


@pytest.fixture(scope="module")
def pair():
    return SyntheticPairDataset(_cfg(), 100)[7]


def _builder(bank) -> SceneBuilder:
    return SceneBuilder(np.random.default_rng(0), bank)


MAT = (0, (1.0, -1.0), (0.0, 0.0), (1.0, 1.0, 1.0))


def _build(sb: SceneBuilder):
    return sb.build("room", (-1, -1, 0), (1, 1, 1), [(0, 0, 0)], (0, 0, 5), 0.3, 10.0)


# ------------------------------------------------------------------------------ contract


def test_view_dict_contract(pair):
    for view in pair:
        assert view["img"].shape == (3, H, W) and view["img"].dtype == torch.float32
        assert view["img"].min() >= -1 and view["img"].max() <= 1
        assert view["depthmap"].shape == (H, W) and view["depthmap"].dtype == torch.float32
        assert view["camera_pose"].shape == (4, 4) and view["camera_intrinsics"].shape == (3, 3)
        assert view["pts3d"].shape == (H, W, 3) and view["valid_mask"].dtype == torch.bool
        assert view["true_shape"].tolist() == [H, W]
        assert view["dataset"] == "synthetic" and isinstance(view["instance"], str)
        assert torch.equal(view["valid_mask"], view["depthmap"] > 0)
        R = view["camera_pose"][:3, :3].double()
        assert torch.allclose(R.T @ R, torch.eye(3, dtype=torch.float64), atol=1e-5)
        assert torch.det(R) > 0
        assert torch.equal(view["camera_pose"][3], torch.tensor([0.0, 0, 0, 1]))
    assert pair[0]["instance"] != pair[1]["instance"]


def test_deterministic_by_seed():
    a = SyntheticPairDataset(_cfg(), 50)[3]
    b = SyntheticPairDataset(_cfg(), 50)[3]
    c = SyntheticPairDataset(_cfg(seed=1), 50)[3]
    for va, vb in zip(a, b):
        for k in ("img", "depthmap", "camera_pose", "camera_intrinsics", "pts3d", "valid_mask"):
            assert torch.equal(va[k], vb[k]), k
    assert not torch.equal(a[0]["img"], c[0]["img"])


def test_train_val_disjoint():
    train = {scene_id(_cfg(split="train"), i) for i in range(2000)}
    val = {scene_id(_cfg(split="val"), i) for i in range(2000)}
    assert len(train) == 2000 and len(val) == 2000
    assert not train & val
    a = SyntheticPairDataset(_cfg(split="train"), 10)[0]
    b = SyntheticPairDataset(_cfg(split="val"), 10)[0]
    assert not torch.equal(a[0]["depthmap"], b[0]["depthmap"])


def test_batch_path_matches_dataset():
    cfg = _cfg()
    v1, v2 = render_pair_batch(cfg, [2, 5])
    ds = SyntheticPairDataset(cfg, 10)
    for b, idx in enumerate([2, 5]):
        s1, s2 = ds[idx]
        for batched, single in ((v1, s1), (v2, s2)):
            assert batched["instance"][b] == single["instance"]
            torch.testing.assert_close(batched["depthmap"][b], single["depthmap"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batched["img"][b], single["img"], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ geometry


def test_pts3d_is_unprojection_of_depth(pair):
    for view in pair:
        K = view["camera_intrinsics"].double()
        pose = view["camera_pose"].double()
        z = view["depthmap"].double()
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                              indexing="ij")
        x = (u - K[0, 2]) / K[0, 0] * z
        y = (v - K[1, 2]) / K[1, 1] * z
        world = torch.stack([x, y, z], -1) @ pose[:3, :3].T + pose[:3, 3]
        m = view["valid_mask"]
        assert m.float().mean() > 0.5
        torch.testing.assert_close(view["pts3d"].double()[m], world[m], rtol=0, atol=1e-4)


def test_intrinsics_consistent_with_fov():
    view = SyntheticPairDataset(_cfg(fov_range=(60.0, 60.0)), 10)[1][0]
    K = view["camera_intrinsics"]
    f = (W / 2) / math.tan(math.radians(30))
    torch.testing.assert_close(K, torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]))
    for i in range(4):
        for view in SyntheticPairDataset(_cfg(), 10)[i]:
            fov = math.degrees(2 * math.atan(W / 2 / float(view["camera_intrinsics"][0, 0])))
            assert 40 - 1e-3 <= fov <= 90 + 1e-3


def _inv_depth_bilinear(depth: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
    """Bilinear interpolation of 1/depth (exact on planes) and whether the 4 neighbours are valid
    and lie on one smooth surface."""
    u0, v0 = u.floor().long(), v.floor().long()
    fu, fv = u - u0, v - v0
    ok = (u0 >= 0) & (v0 >= 0) & (u0 + 1 < depth.shape[1]) & (v0 + 1 < depth.shape[0])
    u0, v0 = u0.clamp(0, depth.shape[1] - 2), v0.clamp(0, depth.shape[0] - 2)
    q = [depth[v0, u0], depth[v0, u0 + 1], depth[v0 + 1, u0], depth[v0 + 1, u0 + 1]]
    ok &= torch.stack([x > 0 for x in q]).all(0)
    iq = [1 / x.clamp(min=1e-9) for x in q]
    smooth = (iq[0] - iq[1] - iq[2] + iq[3]).abs() < 1e-3 * iq[0]  # bilinear == planar
    inv = (iq[0] * (1 - fu) + iq[1] * fu) * (1 - fv) + (iq[2] * (1 - fu) + iq[3] * fu) * fv
    return 1 / inv, ok & smooth


@pytest.mark.parametrize("idx", [0, 1, 2])
def test_multiview_depth_consistency(idx):
    """Points of view 2, projected into view 1 with the GT cameras, land on view 1's depth."""
    v1, v2 = SyntheticPairDataset(_cfg(resolution=(96, 72)), 10)[idx]
    K1, pose1 = v1["camera_intrinsics"].double(), v1["camera_pose"].double()
    p = v2["pts3d"].double()[v2["valid_mask"]]
    cam = (p - pose1[:3, 3]) @ pose1[:3, :3]  # R^T (p - t)
    z = cam[:, 2]
    u = K1[0, 0] * cam[:, 0] / z + K1[0, 2]
    v = K1[1, 1] * cam[:, 1] / z + K1[1, 2]
    depth1 = v1["depthmap"].double()
    d1, ok = _inv_depth_bilinear(depth1, u, v)
    ok &= z > 0
    rel = (d1 - z).abs() / z
    visible = ok & (rel < 0.05)  # the rest is occluded in view 1 (or on a depth edge)
    assert visible.float().mean() > 0.2  # the pair overlaps
    # 1/depth is bilinear only on planes: creases and curved patches make a few percent inexact
    assert (rel[visible] < 1e-3).float().mean() > 0.9
    assert rel[visible].median() < 1e-5
    # points landing within 0.03 px of a pixel centre match that pixel's depth (no interpolation)
    ui, vi = u.round(), v.round()
    centre = ok & ((u - ui).abs() < 0.03) & ((v - vi).abs() < 0.03)
    zc = depth1[vi[centre].long(), ui[centre].long()]
    rel_c = (zc - z[centre]).abs() / z[centre]
    rel_c = rel_c[rel_c < 0.05]
    assert rel_c.numel() >= 1
    assert rel_c.max() < 5e-3


def _moller_trumbore(o: np.ndarray, d: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Nearest positive hit parameter of rays (R, 3) against triangles (T, 3, 3); inf if none."""
    a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
    e1, e2 = b - a, c - a
    pv = np.cross(d[:, None], e2[None])
    det = (e1[None] * pv).sum(-1)
    inv = 1.0 / np.where(np.abs(det) < 1e-12, 1e-12, det)
    tv = o[:, None] - a[None]
    uu = (tv * pv).sum(-1) * inv
    qv = np.cross(tv, e1[None])
    vv = (d[:, None] * qv).sum(-1) * inv
    t = (e2[None] * qv).sum(-1) * inv
    hit = (uu >= 0) & (vv >= 0) & (uu + vv <= 1) & (t > 1e-6) & (np.abs(det) > 1e-12)
    return np.where(hit, t, np.inf).min(1)


def test_box_depth_matches_independent_mesh_raycast(bank):
    sb = _builder(bank)
    rng = np.random.default_rng(3)
    meshes = []
    for _ in range(6):
        c = rng.uniform(-1.5, 1.5, 3)
        half = rng.uniform(0.05, 0.6, 3)
        rot = Rotation.random(random_state=rng).as_matrix()
        sb.box(c, half, rot=rot, mat=MAT)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = rot, c
        meshes.append(trimesh.creation.box(extents=2 * half, transform=T))
    scene = _build(sb)
    pose = look_at(np.array([2.5, -2.0, 1.5]), np.zeros(3))
    K = intrinsics_from_fov(80, W, H)
    o, d = pixel_rays(torch.tensor(pose, dtype=torch.float32)[None], torch.tensor(K)[None], H, W)
    t, _ = cast_rays(pack_scenes([scene]), o, d)
    tris = np.concatenate([m.triangles for m in meshes])
    t_ref = _moller_trumbore(o[0].double().numpy(), d[0].double().numpy(), tris)
    t = t[0].numpy()
    assert np.isfinite(t_ref).mean() > 0.15
    np.testing.assert_array_equal(np.isfinite(t), np.isfinite(t_ref))
    hit = np.isfinite(t_ref)
    np.testing.assert_allclose(t[hit], t_ref[hit], rtol=1e-4, atol=1e-5)


def test_sphere_and_cylinder_are_exact(bank):
    sb = _builder(bank)
    sb.sphere((0.0, 0.0, 1.0), 0.5, mat=MAT)
    sb.cylinder((0.0, 3.0, 1.0), 0.25, 0.75, mat=MAT)
    scene = _build(sb)
    sc = pack_scenes([scene])
    K = torch.tensor(intrinsics_from_fov(50, W, H))[None]
    # a camera 4 m in front of the sphere's centre: the principal pixel (W/2, H/2) hits at 3.5 m
    pose = torch.tensor(look_at(np.array([4.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0])), dtype=torch.float32)[None]
    out = render_views(sc, torch.zeros(1, dtype=torch.long), pose, K, H, W)
    assert out.depth[0, H // 2, W // 2] == pytest.approx(3.5, abs=1e-5)
    pts = out.pts3d[0][out.valid[0]].double()
    on_sphere = ((pts - torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).norm(dim=-1) - 0.5).abs() < 1e-4
    assert on_sphere.sum() > 50
    # side of the cylinder from 2 m, then its top cap from above
    pose = torch.tensor(look_at(np.array([2.0, 3.0, 1.0]), np.array([0.0, 3.0, 1.0])), dtype=torch.float32)[None]
    out = render_views(sc, torch.zeros(1, dtype=torch.long), pose, K, H, W)
    assert out.depth[0, H // 2, W // 2] == pytest.approx(1.75, abs=1e-5)
    pose = torch.tensor(look_at(np.array([0.0, 3.0, 4.0]), np.array([0.0, 3.0, 0.0]),
                                up=np.array([1.0, 0.0, 0.0])), dtype=torch.float32)[None]
    out = render_views(sc, torch.zeros(1, dtype=torch.long), pose, K, H, W)
    assert out.depth[0, H // 2, W // 2] == pytest.approx(4.0 - 1.75, abs=1e-5)


def test_tiled_caster_matches_reference(bank):
    scenes = [make_scene(lay, np.random.default_rng(s), bank) for s, lay in enumerate(["clutter", "street"])]
    sc = pack_scenes(scenes).select(torch.tensor([0, 1]))
    poses = torch.tensor(np.stack([look_at(np.array([2.0, -2.0, 1.5]), np.array([0.0, 0.0, 0.7])),
                                   look_at(np.array([-10.0, 0.0, 1.8]), np.array([10.0, 0.0, 3.0]))]),
                         dtype=torch.float32)
    K = torch.tensor(np.stack([intrinsics_from_fov(80, 64, 64)] * 2))
    o, d = pixel_rays(poses, K, 64, 64)  # row-major order: 64 rays per tile = one image row
    t_ref, obj_ref = cast_rays(sc, o, d)
    t_fast, obj_fast = cast_rays_tiled(sc, o, d, 64)
    assert torch.equal(torch.isfinite(t_ref), torch.isfinite(t_fast))
    fin = torch.isfinite(t_ref)
    torch.testing.assert_close(t_fast[fin], t_ref[fin], rtol=1e-4, atol=1e-5)
    assert (obj_fast[fin] == obj_ref[fin]).float().mean() > 0.999


# ------------------------------------------------------------------------------ content


def test_layouts_differ_in_statistics():
    stats = {}
    for lay in ("room", "street", "turntable"):
        valid, depth = [], []
        for i in range(3):
            for view in SyntheticPairDataset(_cfg(layouts={lay: 1.0}), 10)[i]:
                valid.append(view["valid_mask"].float().mean().item())
                depth.append(view["depthmap"][view["valid_mask"]].median().item())
        stats[lay] = (np.mean(valid), np.median(depth))
    assert stats["room"][0] == pytest.approx(1.0)  # enclosed: every pixel has geometry
    assert stats["turntable"][0] == pytest.approx(1.0)
    assert stats["street"][0] < 0.98  # open sky
    assert stats["street"][1] > stats["room"][1]


@pytest.mark.parametrize("layout", ["room", "street", "clutter"])
def test_thin_structures_exist(bank, layout):
    thin = []
    for s in range(4):
        scene = make_scene(layout, np.random.default_rng(s), bank)
        thin.append(scene.thickness().min() < 0.02 * scene.extent())
    assert any(thin)


def test_images_are_textured_not_noise(pair):
    for view in pair:
        img = view["img"]
        assert img.std() > 0.05
        # natural-looking images: neighbouring pixels are much closer than random pixel pairs
        dx = (img[:, :, 1:] - img[:, :, :-1]).abs().mean()
        rand = (img.flatten(1) - img.flatten(1)[:, torch.randperm(H * W)]).abs().mean()
        assert dx < 0.6 * rand


def test_exposure_differs_between_views():
    a = SyntheticPairDataset(_cfg(gain_range=(0.5, 0.5), gamma_range=(1.0, 1.0), noise_max=0.0), 10)[4][0]
    b = SyntheticPairDataset(_cfg(gain_range=(1.0, 1.0), gamma_range=(1.0, 1.0), noise_max=0.0), 10)[4][0]
    ia, ib = (a["img"] + 1) / 2, (b["img"] + 1) / 2
    assert torch.equal(a["depthmap"], b["depthmap"])
    unclipped = ib < 0.99
    ratio = (ia[unclipped] + 1e-6) / (ib[unclipped] + 1e-6)
    assert ratio[ib[unclipped] > 0.05].median() == pytest.approx(0.5, abs=0.02)


def test_render_example_scene():
    ex = render_example_scene(3, n_views=2, size=(W, H), layout="room", texture_size=64, n_textures=24)
    assert len(ex.images) == 2 and ex.images[0].size == (W, H)
    assert ex.poses.shape == (2, 4, 4) and ex.intrinsics.shape == (2, 3, 3) and ex.depths.shape == (2, H, W)
    assert not np.allclose(ex.poses[0], ex.poses[1])
    assert np.asarray(ex.images[0]).std() > 5


def test_config_errors():
    with pytest.raises(PointmapError, match="split"):
        SyntheticConfig(split="test")
    with pytest.raises(PointmapError, match="layouts"):
        SyntheticConfig(layouts={"castle": 1.0})
    with pytest.raises(PointmapError, match="fov_range"):
        SyntheticConfig(fov_range=(10.0, 200.0))
    with pytest.raises(PointmapError, match="n_photo_textures"):
        SyntheticConfig(n_photo_textures=-1)
    for bad in ({"plain_prob": 1.5}, {"plain_prob": -0.1}, {"n_plain_textures": -2}):
        with pytest.raises(PointmapError, match="plain_prob"):
            SyntheticConfig(**bad)
    assert set(LAYOUTS) == {"room", "turntable", "street", "clutter"}


def test_photo_textures_come_from_given_photos(tmp_path):
    """A user photo becomes texture crops whose colours are the photo's; a bad path names itself."""
    arr = np.zeros((64, 80, 3), np.uint8)
    arr[..., 0] = 200  # a pure red photo: every crop must be red up to the colour shift
    Image.fromarray(arr).save(tmp_path / "red.png")
    bank = build_texture_bank(123, n_procedural=4, n_photo=3, size=16, photo_paths=[tmp_path / "red.png"],
                              use_packaged_photos=False)
    assert bank.kinds[-3:] == ["photo"] * 3 and "photo" not in bank.kinds[:4]
    level0 = bank.texels[: 7 * 16 * 16].float().reshape(7, 16, 16, 3)
    mean = level0[4:].mean(dim=(1, 2))  # (3 photo crops, rgb)
    assert (mean[:, 0] > 2 * mean[:, 1]).all() and (mean[:, 0] > 2 * mean[:, 2]).all()
    cfg = SyntheticConfig(photo_paths=(str(tmp_path / "red.png"),), n_photo_textures=5, n_textures=4,
                          texture_size=16, seed=7)
    assert _bank(cfg, "cpu").kinds.count("photo") == 5
    no_photos = SyntheticConfig(n_textures=4, texture_size=16, seed=7, photo_prob=0.0)
    assert _bank(no_photos, "cpu").kinds.count("photo") == 0
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    for bad in (tmp_path / "missing.png", tmp_path / "bad.jpg"):
        with pytest.raises(ValueError, match=bad.name):
            build_texture_bank(124, n_procedural=4, n_photo=1, size=16, photo_paths=[bad],
                               use_packaged_photos=False)


def test_plain_materials():
    """Plain textures are nearly uniform and come after the others, which they leave unchanged;
    plain_prob = 0 draws nothing (the same scene as without plain textures), 1 makes every
    material of these scenes plain, 0.5 about half."""
    kw = {"n_procedural": 12, "n_photo": 0, "size": 64, "use_packaged_photos": False}
    base, with_plain = build_texture_bank(5, **kw), build_texture_bank(5, n_plain=6, **kw)
    assert with_plain.kinds == base.kinds + ["plain"] * 6
    n0 = 12 * 64 * 64
    assert torch.equal(with_plain.texels[:n0], base.texels[:n0])  # level 0 of the patterned ones
    level0 = with_plain.texels[:18 * 64 * 64].float().reshape(18, 64 * 64, 3)
    rel_std = level0.std(dim=1) / level0.mean(dim=1).clamp(min=1e-3)
    assert (rel_std[12:] < 0.05).all()  # plain: within a few percent of one colour
    assert (rel_std[:12].max(dim=1).values > 0.1).all()  # every patterned texture varies far more

    def scene(bank, prob, layout="room"):
        return make_scene(layout, np.random.default_rng(3), bank, photo_prob=0.0, plain_prob=prob)

    a, b = scene(base, 0.0), scene(with_plain, 0.0)
    assert np.array_equal(a.mat_tex, b.mat_tex) and np.array_equal(a.box_c, b.box_c)
    plain_ids = set(with_plain.indices_of("plain"))
    assert not plain_ids & set(b.mat_tex.tolist())
    for layout in LAYOUTS:
        assert set(scene(with_plain, 1.0, layout).mat_tex.tolist()) <= plain_ids
    some = [scene(with_plain, 0.5, lay) for lay in LAYOUTS]
    used = np.concatenate([sc.mat_tex for sc in some])
    frac = np.isin(used, list(plain_ids)).mean()
    assert 0.2 < frac < 0.8
    cfg = _cfg(plain_prob=0.4, n_plain_textures=3, photo_prob=0.0)
    assert _bank(cfg, "cpu").kinds.count("plain") == 3
    assert _bank(_cfg(photo_prob=0.0), "cpu").kinds.count("plain") == 0
    v1, _ = render_pair_batch(cfg, [0, 1], device="cpu")
    assert torch.isfinite(v1["img"]).all() and v1["valid_mask"].any()
