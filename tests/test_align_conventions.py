"""Known cameras with skew and with fx != fy are honoured by both alignment solvers: exact
predictions of a scene seen by such cameras give back its reprojections (the world points of
each image's depth land where the true cameras see them in every other image).

Measured on this scene (largest error): dense 6.5e-5 px (skew) and 6.3e-5 px (fy = 1.1 fx) with
float32 storage (0.030 px with the default float16 storage of the pair predictions, as for square
pixels: the storage's rounding, not the convention); sparse 0.37 px (skew)
and 0.60 px (fy = 1.1 fx), its matches being whole pixels rounded from the true ones, against
8.3 and 4.0 px when the same known cameras lose their skew or their fy."""

from __future__ import annotations

import pytest
import torch

from pointmap.align import AlignConfig, global_align
from pointmap.align.sparse import sparse_align
from pointmap.geometry.camera import depth_to_world, project
from pointmap.predictions import PairPredictions
from pointmap.testing.synthetic_pairs import _cameras, _render

W, H, N = 48, 32, 4


def _scene(convention: str):
    """Exact pair predictions of ``N`` cameras with skew (``'skew'``) or ``fy = 1.1 fx``
    (``'aspect'``): poses ``(N, 4, 4)``, intrinsics ``(N, 3, 3)``, depths ``(N, H, W)`` float64."""
    poses, _, Ks = _cameras(N, W, H, torch.Generator().manual_seed(3), 60.0, False)
    Ks = Ks.clone()
    if convention == "skew":
        Ks[:, 0, 1] = 0.08 * Ks[:, 0, 0]
    else:
        Ks[:, 1, 1] = 1.1 * Ks[:, 0, 0]
    views = [_render(poses[k], Ks[k], H, W) for k in range(N)]
    depths = torch.stack([v[0] for v in views])
    rel = torch.linalg.inv(poses)[:, None] @ poses[None]  # camera j -> camera i
    pairs = [(i, j) for i in range(N) for j in range(N) if i != j]
    p1 = [views[i][1].float() for i, _ in pairs]
    p2 = [(views[j][1] @ rel[i, j, :3, :3].T + rel[i, j, :3, 3]).float() for i, j in pairs]
    conf = [torch.full((H, W), 5.0) for _ in pairs]
    return PairPredictions(pairs, p1, conf, p2, conf, n_images=N), poses, Ks, depths


def _matches(poses, Ks, depths, step: int = 2):
    """Integer pixel matches of every pair ``i < j``: ``i``'s pixels on a grid, ``j``'s pixel
    nearest the true projection (as a matcher gives them: rounded)."""
    out = {}
    for i in range(N):
        X = depth_to_world(depths[i], Ks[i], poses[i])[::step, ::step].reshape(-1, 3)
        ys, xs = torch.meshgrid(torch.arange(0, H, step), torch.arange(0, W, step), indexing="ij")
        a = torch.stack([xs, ys], -1).reshape(-1, 2)
        for j in range(i + 1, N):
            uv, z = project((X - poses[j, :3, 3]) @ poses[j, :3, :3], Ks[j])
            q = uv.round()
            ok = (z > 0) & (q[:, 0] >= 0) & (q[:, 0] < W) & (q[:, 1] >= 0) & (q[:, 1] < H)
            out[(i, j)] = (a[ok], q[ok].long())
    return out


def _reprojection_px(scene, poses, Ks, depths) -> float:
    """Largest distance (pixels) between where the scene's cameras see the scene's points of
    image ``i`` in image ``j`` and where the true cameras see the true points, over all pairs."""
    worst = 0.0
    for i in range(N):
        X = depth_to_world(scene.depths[i].double(), scene.intrinsics[i].double(), scene.poses[i].double())
        Xt = depth_to_world(depths[i], Ks[i], poses[i])
        for j in range(N):
            if i == j:
                continue
            Pj = scene.poses[j].double()
            uv, _ = project((X - Pj[:3, 3]) @ Pj[:3, :3], scene.intrinsics[j].double())
            uvt, zt = project((Xt - poses[j, :3, 3]) @ poses[j, :3, :3], Ks[j])
            inside = (zt > 0) & (uvt[..., 0].abs() < 2 * W) & (uvt[..., 1].abs() < 2 * H)
            worst = max(worst, float((uv - uvt).norm(dim=-1)[inside].max()))
    return worst


@pytest.mark.parametrize("convention", ["skew", "aspect"])
def test_dense_alignment_honours_known_intrinsics(convention):
    preds, poses, Ks, depths = _scene(convention)
    known = {k: Ks[k].float() for k in range(N)}
    scene = global_align(preds, known_intrinsics=known, config=AlignConfig(storage_dtype="float32"))
    torch.testing.assert_close(scene.intrinsics, Ks.float())  # reported exactly as given
    assert _reprojection_px(scene, poses, Ks, depths) < 1e-3


@pytest.mark.parametrize("convention", ["skew", "aspect"])
def test_sparse_alignment_honours_known_intrinsics(convention):
    preds, poses, Ks, depths = _scene(convention)
    known = {k: Ks[k].float() for k in range(N)}
    matches = _matches(poses, Ks, depths)
    scene = sparse_align(preds, matches, known_intrinsics=known)
    torch.testing.assert_close(scene.intrinsics, Ks.float())
    err = _reprojection_px(scene, poses, Ks, depths)
    assert err < 1.0  # matches rounded to whole pixels
    square = Ks.clone()
    square[:, 0, 1], square[:, 1, 1] = 0.0, square[:, 0, 0]  # the convention dropped
    dropped = sparse_align(preds, matches, known_intrinsics={k: square[k].float() for k in range(N)})
    assert 4 * err < _reprojection_px(dropped, poses, Ks, depths)
