"""Scene.to_original: intrinsics of known resize/crop cases by hand, projection onto original pixels,
resampled maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointmap.images import ImageMeta
from pointmap.scene import Scene

# 512 preprocessing of a 1000x600 photo: resize to 512x307, crop rows 1..305 -> 512x304
META_512 = ImageMeta(None, original_size=(1000, 600), resized_size=(512, 307), crop_box=(0, 1, 512, 305))
# 224 preprocessing of a 640x480 photo: resize to 299x224, centre square crop from x = 37
META_224 = ImageMeta(None, original_size=(640, 480), resized_size=(299, 224), crop_box=(37, 0, 261, 224))


def _scene(meta: ImageMeta | None, K: np.ndarray, size: tuple[int, int], pose: np.ndarray | None = None,
           depth_fn=None) -> Scene:
    W, H = size
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    depth = depth_fn(u, v) if depth_fn is not None else 2.0 + 0.01 * u + 0.02 * v
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)
    return Scene(
        imgs=[t(np.stack([u / W, v / H, np.zeros_like(u, float)], -1))],
        poses=t(np.eye(4) if pose is None else pose)[None], intrinsics=t(K)[None],
        depths=[t(depth)], confidence=[t(2.0 + u / W)], masks=[torch.ones(H, W, dtype=torch.bool)],
        metas=[meta],
    )


@pytest.mark.parametrize("meta, K_net, K_orig", [
    # fx: 400 * 1000/512; fy: 400 * 600/307; cx: (256 + 0 + 0.5) * 1000/512 - 0.5;
    # cy: (152 + 1 + 0.5) * 600/307 - 0.5 = 300 - 0.5 (the original's centre row)
    (META_512, [[400, 0, 256], [0, 400, 152], [0, 0, 1]],
     [[781.25, 0, 500.4765625], [0, 400 * 600 / 307, 299.5], [0, 0, 1]]),
    # fx: 200 * 640/299; fy: 200 * 480/224; cx: (112 + 37 + 0.5) * 640/299 - 0.5 = 320 - 0.5;
    # cy: (112 + 0.5) * 480/224 - 0.5 = 241.0714... - 0.5
    (META_224, [[200, 0, 112], [0, 200, 112], [0, 0, 1]],
     [[200 * 640 / 299, 0, 319.5], [0, 200 * 480 / 224, 240.5714285714286], [0, 0, 1]]),
])
def test_intrinsics_by_hand(meta, K_net, K_orig):
    orig = _scene(meta, np.array(K_net, float), meta.size).to_original()
    assert np.allclose(orig.intrinsics[0].numpy(), np.array(K_orig), atol=1e-9)
    assert orig.depths[0].shape == (meta.original_size[1], meta.original_size[0])
    assert orig.metas == [None]


def test_projection_lands_on_original_pixel():
    """Truth from the original camera: a physical camera K0 (1000x600, centred principal point) sees
    a tilted plane. The network image is its resize + crop, so network pixel (u, v) is the ray through
    the original location ((u + left + 0.5) sx - 0.5, (v + top + 0.5) sy - 0.5); the network K is K0
    expressed in network pixels. to_original must give back K0, and the scene's world points must
    project through K0 onto those original locations."""
    meta = META_512
    (W0, H0), (Wr, Hr), (left, top, _, _) = meta.original_size, meta.resized_size, meta.crop_box
    sx, sy = W0 / Wr, H0 / Hr
    f0, cx0, cy0 = 800.0, (W0 - 1) / 2, (H0 - 1) / 2
    K0 = np.array([[f0, 0, cx0], [0, f0, cy0], [0, 0, 1]])
    K_net = np.array([[f0 / sx, 0, (cx0 + 0.5) / sx - 0.5 - left],
                      [0, f0 / sy, (cy0 + 0.5) / sy - 0.5 - top], [0, 0, 1]])
    a = 0.3
    pose = np.eye(4)
    pose[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    pose[:3, 3] = [0.5, -0.2, 0.1]
    n, d = np.array([0.1, -0.2, 1.0]), 5.0  # world plane n . X = d

    def plane_depth(u, v):
        x0 = (u + left + 0.5) * sx - 0.5  # original location of the network pixel centre
        y0 = (v + top + 0.5) * sy - 0.5
        ray = np.stack([(x0 - cx0) / f0, (y0 - cy0) / f0, np.ones_like(x0, float)], -1)
        ray_w = ray @ pose[:3, :3].T
        return (d - n @ pose[:3, 3]) / (ray_w @ n)

    W, H = meta.size
    scene = _scene(meta, K_net, (W, H), pose, plane_depth)
    orig = scene.to_original()
    assert np.allclose(orig.intrinsics[0].numpy(), K0, atol=1e-9)
    X = scene.pts3d[0].numpy()
    assert np.allclose(X @ n, d, atol=1e-9)  # the points are on the plane
    w2c = np.linalg.inv(pose)
    for u, v in ((0, 0), (100, 37), (511, 303), (256, 152)):
        Xc = w2c[:3, :3] @ X[v, u] + w2c[:3, 3]
        px = (K0 @ Xc)[:2] / Xc[2]
        assert np.allclose(px, [(u + left + 0.5) * sx - 0.5, (v + top + 0.5) * sy - 0.5], atol=1e-6)
        # the nearest original pixel carries that network pixel's depth in the resampled map
        xi, yi = np.round(px).astype(int)
        assert orig.depths[0][yi, xi].item() == pytest.approx(scene.depths[0][v, u].item())
        assert bool(orig.masks[0][yi, xi])


def test_resampled_maps_and_crop_margin():
    meta = META_512
    scene = _scene(meta, np.array([[400, 0, 256], [0, 400, 152], [0, 0, 1.0]]), meta.size)
    orig = scene.to_original()
    m = orig.masks[0].numpy()
    # rows whose centre falls outside the crop: resized rows < 1 (original rows 0, 1; row 2's centre
    # 2.5 / sy = 1.28 is inside) and >= 305 (original centres from 305 * sy = 596.1: rows 596..599)
    bad_rows = [0, 1, 596, 597, 598, 599]
    assert (~m[bad_rows]).all() and (orig.depths[0].numpy()[bad_rows] == 0).all()
    assert m[2:596].all()
    # nearest resampling: original pixel (x, y) takes network pixel (floor((x + .5) / sx), floor((y + .5) / sy) - 1)
    sx, sy = 1000 / 512, 600 / 307
    for x, y in ((0, 2), (999, 595), (500, 300), (3, 4)):
        u, v = int((x + 0.5) // sx), int((y + 0.5) // sy) - 1
        assert orig.depths[0][y, x].item() == scene.depths[0][v, u].item()
        assert orig.confidence[0][y, x].item() == scene.confidence[0][v, u].item()
        assert torch.equal(orig.imgs[0][y, x], scene.imgs[0][v, u])


def test_without_meta_unchanged():
    K = np.array([[30.0, 0, 8], [0, 30.0, 6], [0, 0, 1]])
    scene = _scene(None, K, (16, 12))
    orig = scene.to_original()
    assert torch.equal(orig.intrinsics, scene.intrinsics)
    assert torch.equal(orig.depths[0], scene.depths[0]) and torch.equal(orig.masks[0], scene.masks[0])


def test_kept_fraction_counts_masked_pixels_over_all_images():
    K = np.array([[30.0, 0, 8], [0, 30.0, 6], [0, 0, 1]])
    scene = _scene(None, K, (16, 12))
    conf = torch.arange(16 * 12, dtype=torch.float32).reshape(12, 16)
    scene = Scene(imgs=scene.imgs * 2, poses=scene.poses.repeat(2, 1, 1), intrinsics=scene.intrinsics.repeat(2, 1, 1),
                  depths=scene.depths * 2, confidence=[conf, conf + 1000], masks=[conf > 0] * 2)
    # 191 - 95 = 96 of the first image's 192 pixels exceed 95, all 192 of the second's
    assert scene.with_threshold(95.0).kept_fraction() == pytest.approx((96 + 192) / 384)
    assert scene.with_threshold(1e9).kept_fraction() == 0.0
