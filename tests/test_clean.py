"""The occlusion clean-up at scale against its plain twin, the reference's pair-by-pair loop."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pointmap.align.clean import clean_pointcloud, clean_pointcloud_reference
from pointmap.scene import Scene
from pointmap.testing.synthetic_pairs import synthetic_cameras


def _noisy_scene(n: int, size=(64, 48), seed: int = 0) -> Scene:
    """Exact depths of a synthetic capture with 5 % noise and random confidences: about half
    the pixels are cleaned, so a wrong order, pixel or comparison shows."""
    gt = synthetic_cameras(n, size, seed=seed)
    g = torch.Generator().manual_seed(seed)
    W, H = size
    depths = [d.float() * (1 + 0.05 * torch.randn(d.shape, generator=g)) for d in gt.depths]
    conf = [1 + 3 * torch.rand(H, W, generator=g) for _ in range(n)]
    return Scene(imgs=[torch.zeros(H, W, 3)] * n, poses=gt.poses.float(), intrinsics=gt.intrinsics.float(),
                 depths=depths, confidence=conf, masks=[c > 1.5 for c in conf])


def _differing(a: Scene, b: Scene) -> int:
    return sum(int((x != y).sum()) for x, y in zip(a.confidence, b.confidence))


def test_clean_pointcloud_is_the_reference_loop():
    sc = _noisy_scene(12)
    # an image the alignment could not place, holes in the depth, an image of another size (a
    # crop: its pixels keep their meaning)
    sc.placed[4] = False
    sc.depths[2][10:20, 10:30] = float("nan")
    sc.depths[7] = sc.depths[7][:40, :56].clone()
    sc.confidence[7] = sc.confidence[7][:40, :56].clone()
    sc.masks[7] = sc.masks[7][:40, :56].clone()
    ref = clean_pointcloud_reference(sc)
    fast = clean_pointcloud(sc)
    lowered = sum(int((c <= 0).sum()) for c in ref.confidence)
    assert lowered > 0.3 * 12 * 64 * 48
    # the same pixels up to float rounding at a pixel edge (the camera matrices are products in
    # another order)
    assert _differing(fast, ref) <= 1e-4 * 12 * 64 * 48
    assert torch.equal(fast.confidence[4], sc.confidence[4])
    assert all(torch.equal(m, sm & (c > sc.conf_threshold))
               for m, sm, c in zip(fast.masks, sc.masks, fast.confidence))
    # the input scene is untouched
    assert all((c > 0).all() for c in sc.confidence)


def test_clean_pointcloud_checks_the_cameras_that_see_most_when_capped():
    sc = _noisy_scene(12, seed=1)
    # every camera checked: the reference, also through the cap
    assert _differing(clean_pointcloud(sc, max_views=11), clean_pointcloud_reference(sc)) <= 1e-4 * 12 * 64 * 48
    # image 0 pulled halfway towards its camera, less confident: it floats in front of what
    # the others see, and three cameras suffice to clean most of it
    depths = list(sc.depths)
    depths[0] = depths[0] * 0.5
    conf = [torch.full_like(c, 5.0) for c in sc.confidence]
    conf[0] = conf[0] - 1
    floating = replace(sc, depths=depths, confidence=conf)
    few = clean_pointcloud(floating, max_views=3)
    assert float((few.confidence[0] <= 0).float().mean()) > 0.2
    assert _differing(few, clean_pointcloud(floating, max_views=None)) > 0  # the cap is a real limit
    with pytest.raises(ValueError):
        clean_pointcloud(sc, max_views=0)


def test_cleaning_only_added_images_equals_cleaning_all():
    """Images added to a cleaned reconstruction: cleaning only them, the earlier ones at their
    cleaned confidences, gives what cleaning every image gives (the earlier ones unchanged)."""
    sc = _noisy_scene(10, seed=3)
    full = clean_pointcloud(sc, max_views=4)
    added = replace(sc, confidence=[full.confidence[k] if k < 6 else sc.confidence[k] for k in range(10)])
    got = clean_pointcloud(added, max_views=4, images=range(6, 10))
    assert _differing(got, full) == 0
    assert all(got.confidence[k] is added.confidence[k] or torch.equal(got.confidence[k], added.confidence[k])
               for k in range(6))
    assert _differing(full, sc) > 0
