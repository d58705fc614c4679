"""Training data pipeline: exact crop/resize, colour jitter, sampling, batching and readers."""

from __future__ import annotations

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
from scipy.spatial import cKDTree

from pointmap.errors import ConfigError, DatasetError
from pointmap.train.batching import BatchedRandomSampler, collate_pairs, symmetrize_batch
from pointmap.train.color import ColorJitter, hsv_to_rgb, rgb_to_hsv
from pointmap.train.datasets import Co3dDataset, MixtureDataset, SceneFolderDataset, ViewDictPairDataset
from pointmap.train.specs import DatasetSpec, build_mixture
from pointmap.train.views import (
    RESOLUTIONS_512,
    RawView,
    crop_resize,
    finalize_view,
    resolutions_for,
    transpose_to_landscape,
    world_points,
)


def _pose(yaw=0.1, roll=0.2, t=(0.3, -0.2, 1.0)):
    cy, sy, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(roll), math.sin(roll)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = Ry @ Rz
    T[:3, 3] = t
    return T


def _random_view(W, H, K, rng, seed=0):
    depth = rng.uniform(1, 5, size=(H, W)).astype(np.float32)
    img = PIL.Image.fromarray(rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8))
    return RawView(img, depth, K, _pose(), instance=f"v{seed}")


def test_crop_resize_exact_for_integer_factor():
    """Factor-3 shrink after a principal-point crop: every new pixel samples an original pixel
    centre, so the unprojected points are exactly original world points."""
    rng = np.random.default_rng(0)
    K = np.array([[70.0, 0, 48], [0, 75, 36], [0, 0, 1]])
    view = _random_view(110, 80, K, rng)
    out = crop_resize(view, (32, 24), rng, aug_crop=0, orientation="landscape")
    assert out.size == (32, 24) and out.depthmap.shape == (24, 32)
    orig = world_points(view.depthmap, view.camera_intrinsics, view.camera_pose).reshape(-1, 3)
    new = world_points(out.depthmap, out.camera_intrinsics, out.camera_pose).reshape(-1, 3)
    dist, idx = cKDTree(orig).query(new)
    assert dist.max() < 1e-9
    # the sampled pixels are (3u'+1, 3v'+1) of the 96x72 window at (0, 0)
    u, v = idx % 110, idx // 110
    assert np.array_equal(u.reshape(24, 32)[0], 3 * np.arange(32) + 1)
    assert np.array_equal(v.reshape(24, 32)[:, 0], 3 * np.arange(24) + 1)


@pytest.mark.parametrize("size,res,aug", [((300, 217), (64, 48), 16), ((40, 30), (96, 64), 0)])
def test_crop_resize_intrinsics_consistent_with_nearest_depth(size, res, aug):
    """Any scale: each new pixel's point, projected back into the original camera, lands on the
    original pixel whose depth it carries."""
    rng = np.random.default_rng(1)
    W, H = size
    K = np.array([[0.8 * W, 0, 0.47 * W], [0, 0.8 * W, 0.52 * H], [0, 0, 1]])
    view = _random_view(W, H, K, rng)
    out = crop_resize(view, res, rng, aug_crop=aug, orientation="landscape")
    assert out.size == res
    P = world_points(out.depthmap, out.camera_intrinsics, out.camera_pose).reshape(-1, 3)
    T = np.linalg.inv(view.camera_pose)
    pc = P @ T[:3, :3].T + T[:3, 3]
    uv = pc @ view.camera_intrinsics.T
    uv = uv[:, :2] / uv[:, 2:]
    ui, vi = np.floor(uv[:, 0] + 0.5).astype(int), np.floor(uv[:, 1] + 0.5).astype(int)
    assert ui.min() >= 0 and vi.min() >= 0 and ui.max() < W and vi.max() < H
    frac = np.abs(uv - np.floor(uv) - 0.5)
    clear = (frac > 1e-6).all(axis=1)  # exact ties between two source pixels are ambiguous
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(view.depthmap[vi, ui][clear], out.depthmap.reshape(-1)[clear])
    np.testing.assert_allclose(pc[:, 2], out.depthmap.reshape(-1), rtol=1e-9)


def test_orientation_and_transpose():
    rng = np.random.default_rng(2)
    K = np.array([[50.0, 0, 30], [0, 50, 50], [0, 0, 1]])
    view = _random_view(60, 100, K, rng)  # portrait
    out = crop_resize(view, (64, 48), rng, orientation="auto")
    assert out.size == (48, 64)
    fin = finalize_view(out, rng)
    assert tuple(fin["true_shape"].tolist()) == (64, 48)
    stored = transpose_to_landscape(fin)
    assert stored["img"].shape == (3, 48, 64) and stored["pts3d"].shape == (48, 64, 3)
    assert torch.equal(stored["pts3d"][5, 7], fin["pts3d"][7, 5])
    Kt = stored["camera_intrinsics"]
    assert Kt[0, 2] == fin["camera_intrinsics"][1, 2] and Kt[1, 0] == fin["camera_intrinsics"][0, 0]  # rows only, as the reference
    out_land = crop_resize(view, (64, 48), rng, orientation="landscape")
    assert out_land.size == (64, 48)
    with pytest.raises(DatasetError, match="principal point"):
        crop_resize(_random_view(60, 100, np.array([[50.0, 0, 5], [0, 50, 50], [0, 0, 1]]), rng),
                    (64, 48), rng)


def test_color_jitter():
    rng = np.random.default_rng(0)
    img = torch.rand(3, 8, 9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(img)), img, atol=1e-6)
    red = torch.zeros(3, 1, 1)
    red[0] = 1
    green = ColorJitter.adjust(red, "hue", 1 / 3)
    assert torch.allclose(green.flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    gray = torch.full((3, 2, 2), 0.5)
    assert torch.allclose(ColorJitter.adjust(gray, "brightness", 1.5), torch.full_like(gray, 0.75))
    desat = ColorJitter.adjust(img, "saturation", 0.0)
    assert torch.allclose(desat[0], desat[1]) and torch.allclose(desat[1], desat[2])
    flat = ColorJitter.adjust(img, "contrast", 0.0)
    assert torch.allclose(flat, flat.mean().expand_as(flat), atol=1e-6)
    assert torch.allclose(ColorJitter(0, 0, 0, 0)(img, rng), img, atol=1e-6)
    out = ColorJitter()(img, rng)
    assert out.shape == img.shape and 0 <= out.min() and out.max() <= 1 and not torch.allclose(out, img)


def test_batched_sampler_sharding_and_resume():
    single = BatchedRandomSampler(40, batch_size=4, num_resolutions=5, world_size=1, seed=777)
    ranks = [BatchedRandomSampler(40, batch_size=2, num_resolutions=5, world_size=2, rank=r, seed=777)
             for r in range(2)]
    for s in [single, *ranks]:
        s.set_epoch(3)
    b_single = list(single)
    b_ranks = [list(r) for r in ranks]
    assert len(b_single) == 10 == len(b_ranks[0])
    for b, r0, r1 in zip(b_single, *b_ranks):
        assert b == r0 + r1  # the two ranks share out the single-process batch
        assert len({k[1] for k in b}) == 1 and all(k[2] == 3 for k in b)
    assert sorted(k[0] for b in b_single for k in b) == list(range(40))
    assert len({b[0][1] for b in b_single}) > 1  # several aspect ratios over an epoch
    single.set_epoch(3, start_batch=6)
    assert list(single) == b_single[6:]
    single.set_epoch(4)
    assert list(single) != b_single


class _FakePairs(torch.utils.data.Dataset):
    """View-dict pairs in the synthetic engine's format."""

    def __init__(self, n=5, H=24, W=32):
        self.n, self.H, self.W = n, H, W

    def __len__(self):
        return self.n

    def _view(self, idx, k):
        g = torch.Generator().manual_seed(idx * 2 + k)
        H, W = self.H, self.W
        K = torch.tensor([[30.0, 0, W / 2], [0, 30, H / 2], [0, 0, 1]])
        depth = 1 + torch.rand(H, W, generator=g)
        pose = torch.eye(4)
        pose[0, 3] = k
        pts = torch.from_numpy(world_points(depth.numpy(), K.double().numpy(), pose.double().numpy())).float()
        return {"img": torch.rand(3, H, W, generator=g) * 2 - 1, "depthmap": depth, "camera_pose": pose,
                "camera_intrinsics": K, "pts3d": pts, "valid_mask": depth > 0,
                "true_shape": torch.tensor([H, W], dtype=torch.int32), "instance": f"{idx}_{k}",
                "dataset": "fake"}

    def __getitem__(self, idx):
        return self._view(idx, 0), self._view(idx, 1)


def test_mixture_collate_symmetrize():
    a = ViewDictPairDataset(_FakePairs(5), resolutions=[(32, 24), (32, 16)])
    b = ViewDictPairDataset(_FakePairs(3), resolutions=[(32, 24), (32, 16)])
    mix = MixtureDataset([(a, 7), (b, None)], seed=777)
    assert len(mix) == 10
    comps = [mix.locate((i, 0, 0)) for i in range(10)]
    assert [c for c, _ in comps] == [0] * 7 + [1] * 3
    first = [j for c, j in comps[:5]]
    assert sorted(first) == list(range(5)) and [j for _, j in comps[5:7]] == first[:2]  # cycled
    assert [j for _, j in comps[7:]] == [0, 1, 2]
    assert [mix.locate((i, 0, 1))[1] for i in range(5)] != first  # new permutation per epoch
    items = [mix[(i, 1, 0)] for i in range(3)]
    assert items[0][0]["img"].shape == (3, 16, 32)
    v1, v2 = collate_pairs(items)
    assert v1["img"].shape == (3, 3, 16, 32) and v1["true_shape"].dtype == torch.int32
    assert v1["true_shape"].tolist() == [[16, 32]] * 3 and isinstance(v1["instance"], list)
    s1, s2 = symmetrize_batch(v1, v2)
    assert s1["img"].shape[0] == 6
    assert torch.equal(s1["img"][1], v2["img"][0]) and torch.equal(s2["img"][1], v1["img"][0])
    assert torch.equal(s1["pts3d"][2], v1["pts3d"][1]) and s1["instance"][:2] == [v1["instance"][0], v2["instance"][0]]
    # pass-through at the native resolution
    same = mix[(0, 0, 0)]
    j = mix.locate((0, 0, 0))[1]
    assert torch.equal(same[0]["img"], _FakePairs(5)[j][0]["img"])


def test_resolutions_for():
    assert resolutions_for(512) == RESOLUTIONS_512
    assert resolutions_for(224) == [(224, 224)]
    assert resolutions_for([[64, 48], [64, 32]]) == [(64, 48), (64, 32)]
    with pytest.raises(ValueError):
        resolutions_for([[48, 64]])


# ---------------------------------------------------------------------------------------------
# Readers on tiny fixtures
# ---------------------------------------------------------------------------------------------

PLANE_Z = 5.0


def _render_plane(K, T, W, H):
    """Camera rolled about its optical axis, looking along world +z at the plane Z = 5: constant
    depth; colour is a linear ramp of world X, Y."""
    depth = PLANE_Z - T[2, 3]
    pts = world_points(np.full((H, W), depth), K, T)
    r = np.clip(128 + 25 * pts[..., 0], 0, 255)
    g = np.clip(128 + 25 * pts[..., 1], 0, 255)
    img = np.stack([r, g, np.full_like(r, 90)], -1).round().astype(np.uint8)
    return img, depth


def _roll_pose(roll, t):
    c, s = math.cos(roll), math.sin(roll)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = t
    return T


def _write_scene(root, W=96, H=72):
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    frames = []
    for i in range(3):
        K = np.array([[80.0, 0, W / 2 - 0.5 + i], [0, 80, H / 2 - 0.5], [0, 0, 1]])
        T = _roll_pose(0.2 * i, (0.2 * i, -0.1 * i, 2.0 - 0.5 * i))
        img, depth = _render_plane(K, T, W, H)
        PIL.Image.fromarray(img).save(root / "images" / f"{i:04d}.png")
        if i == 2:
            np.save(root / "depth" / f"{i:04d}.npy", np.full((H, W), depth, np.float32))
        else:
            d = np.full((H, W), round(depth * 1000), np.uint16)
            d[:3] = 0  # invalid rows
            PIL.Image.fromarray(d).save(root / "depth" / f"{i:04d}.png")
        frames.append({"image": f"images/{i:04d}.png", "K": K.tolist(), "cam2world": T.tolist()})
    (root / "cameras.json").write_text(json.dumps({"depth_scale": 0.001, "frames": frames}))


def test_scene_folder_reader(tmp_path):
    _write_scene(tmp_path / "scene")
    ds = SceneFolderDataset(tmp_path, max_gap=2, resolutions=[(64, 48), (64, 32)], aug_crop=8)
    assert len(ds) == 3  # (0,1), (0,2), (1,2)
    for key in [(0, 0, 0), (1, 1, 0), (2, 0, 5)]:
        v1, v2 = ds[key]
        res = [(64, 48), (64, 32)][key[1]]
        for v in (v1, v2):
            assert v["img"].shape == (3, res[1], res[0])
            m = v["valid_mask"]
            assert m.float().mean() > 0.8
            pts = v["pts3d"][m]
            assert torch.allclose(pts[:, 2], torch.tensor(PLANE_Z), atol=2e-6)
            # image and geometry stay aligned: the colour ramp matches the world X, Y
            rgb = (v["img"] * 0.5 + 0.5) * 255
            inner = m.clone()
            inner[:4], inner[-4:], inner[:, :4], inner[:, -4:] = False, False, False, False
            pr = torch.clamp(128 + 25 * v["pts3d"][..., 0], 0, 255)
            pg = torch.clamp(128 + 25 * v["pts3d"][..., 1], 0, 255)
            assert (rgb[0][inner] - pr[inner]).abs().mean() < 1.0
            assert (rgb[1][inner] - pg[inner]).abs().mean() < 1.0
    # determinism of items, differences across epochs (crop jitter)
    assert torch.equal(ds[(0, 0, 1)][0]["img"], ds[(0, 0, 1)][0]["img"])


def test_scene_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        SceneFolderDataset(tmp_path / "missing")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "cameras.json").write_text(json.dumps({"frames": [{"image": "a.png"}]}))
    with pytest.raises(DatasetError, match="lacks 'K'"):
        SceneFolderDataset(tmp_path / "s")


def _write_co3d(root, n_frames=12, W=64, H=48):
    seq = root / "apple" / "seq1"
    for sub in ("images", "depths", "masks"):
        (seq / sub).mkdir(parents=True)
    frames = list(range(1, n_frames + 1))
    for f in frames:
        K = np.array([[60.0, 0, W / 2], [0, 60, H / 2], [0, 0, 1]])
        T = _roll_pose(0.05 * f, (0.1 * f, 0, 1.0))
        img, depth = _render_plane(K, T, W, H)
        name = f"frame{f:06d}"
        PIL.Image.fromarray(img).save(seq / "images" / f"{name}.jpg", quality=95)
        np.savez(seq / "images" / f"{name}.npz", camera_pose=T, camera_intrinsics=K,
                 maximum_depth=np.float32(8.0))
        d = np.full((H, W), round(depth / 8.0 * 65535), np.uint16)
        if f == 3:
            d[:] = 0  # a frame without valid depth
        PIL.Image.fromarray(d).save(seq / "depths" / f"{name}.jpg.geometric.png")
        mask = np.zeros((H, W), np.uint8)
        mask[:, : W // 2] = 255
        PIL.Image.fromarray(mask).save(seq / "masks" / f"{name}.png")
    (root / "selected_seqs_train.json").write_text(json.dumps({"apple": {"seq1": frames}, "empty": {}}))


def test_co3d_reader(tmp_path):
    _write_co3d(tmp_path)
    ds = Co3dDataset(tmp_path, split="train", mask_bg=True, resolutions=[(32, 24)])
    assert len(ds) == 95 + 90 + 85 + 80 + 75 + 70
    for i in (0, 100, 494):
        v1, v2 = ds[(i, 0, 0)]
        for v in (v1, v2):
            assert v["img"].shape == (3, 24, 32)
            frac = v["valid_mask"].float().mean().item()
            assert 0.4 < frac < 0.6  # background masked out
            assert not v["valid_mask"][:, -3:].any()
            z = v["pts3d"][v["valid_mask"]][:, 2]
            assert torch.allclose(z, torch.tensor(PLANE_Z), atol=2e-4)
            assert v["instance"] != "frame000003.jpg"
    unmasked = Co3dDataset(tmp_path, split="train", mask_bg=False, resolutions=[(32, 24)])
    assert unmasked[(0, 0, 0)][0]["valid_mask"].all()
    with pytest.raises(DatasetError, match="selected_seqs_test.json"):
        Co3dDataset(tmp_path, split="test")


def test_build_mixture_from_specs(tmp_path):
    _write_scene(tmp_path / "scene")
    _write_co3d(tmp_path / "co3d")
    specs = [DatasetSpec.from_dict({"kind": "scene_folder", "root": str(tmp_path / "scene"), "num_pairs": 4,
                                    "max_gap": 1}),
             DatasetSpec.from_dict({"kind": "co3d", "root": str(tmp_path / "co3d"), "num_pairs": 3,
                                    "aug_crop": 16, "mask_bg": "rand"})]
    mix = build_mixture(specs, [(32, 24)])
    assert len(mix) == 7
    v1, v2 = collate_pairs([mix[(i, 0, 0)] for i in range(7)])
    assert v1["img"].shape == (7, 3, 24, 32)
    assert v1["dataset"][:4] == ["scene_folder"] * 4 and v1["dataset"][4:] == ["Co3d_v2"] * 3
    with pytest.raises(ConfigError, match="unknown fields"):
        DatasetSpec.from_dict({"kind": "co3d", "bogus": 1})
