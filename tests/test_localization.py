"""Placing new photos in a reconstruction (``pointmap localize``): accuracy on a synthetic scene
with exact ground truth, and the map folder only read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pointmap
from pointmap import localization as L
from pointmap.eval import metrics as M
from pointmap.export import export_scene
from pointmap.predictions import PairPredictions
from pointmap.scene import Scene
from pointmap.testing.synthetic_pairs import make_synthetic_scene

N_ALL, EVERY = 80, 4  # 80 views on an arc; every 4th held out: 60 map images, 20 queries
K_NEIGHBOURS = 3


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _split() -> tuple[list[int], list[int]]:
    queries = list(range(2, N_ALL, EVERY))
    return [k for k in range(N_ALL) if k not in queries], queries


def _neighbours(s, map_ids: list[int], queries: list[int]) -> list[list[int]]:
    """Each query's map images nearest by true camera centre (retrieval is tested separately)."""
    c = s.poses[:, :3, 3]
    return [torch.cdist(c[q][None], c[map_ids])[0].argsort()[:K_NEIGHBOURS].tolist() for q in queries]


@pytest.fixture(scope="module")
def synthetic_map(tmp_path_factory):
    """A 60-image map exported from the true geometry, and 20 held-out queries with synthetic pair
    predictions (scale, distortion, noise and outlier blobs of :mod:`synthetic_pairs`)."""
    map_ids, queries = _split()
    pose_only = make_synthetic_scene(N_ALL, pairs=[], seed=3)
    nb = _neighbours(pose_only, map_ids, queries)
    pairs = [(q, map_ids[m]) for q, ms in zip(queries, nb) for m in ms]
    s = make_synthetic_scene(N_ALL, pairs=pairs, seed=3)
    scene = Scene(imgs=[s.imgs[k] for k in map_ids], poses=s.poses[map_ids], intrinsics=s.intrinsics[map_ids],
                  depths=[s.depths[k] for k in map_ids], confidence=[torch.full_like(s.depths[k], 5.0) for k in map_ids],
                  masks=[torch.ones_like(s.depths[k], dtype=torch.bool) for k in map_ids],
                  names=[f"map_{k:03d}" for k in map_ids])
    out = tmp_path_factory.mktemp("synthetic") / "map"
    export_scene(scene, out, formats=["cameras", "depth", "transforms"])
    # the pair predictions re-indexed as place_queries wants them: map images first, then queries
    index = {k: n for n, k in enumerate(map_ids)} | {q: len(map_ids) + n for n, q in enumerate(queries)}
    p = s.preds
    preds = PairPredictions([(index[i], index[j]) for i, j in p.pairs], p.pts3d_1, p.conf_1, p.pts3d_2_in_1,
                            p.conf_2, n_images=N_ALL)
    return s, out, queries, nb, preds


def test_held_out_views_are_placed_accurately(synthetic_map):
    s, out, queries, nb, preds = synthetic_map
    before = checksums(out)
    lmap = L.read_map(out, size=64)
    assert len(lmap) == 60 and lmap.units["units"] == "scene"
    np.testing.assert_allclose(lmap.K, s.intrinsics[[k for k in range(N_ALL) if k not in queries]], atol=1e-4)
    qimgs = [L.LoadedImage(torch.zeros(3, 48, 64), (48, 64), lmap.images[0].meta) for _ in queries]
    poses = L.place_queries(lmap, qimgs, preds, nb, conf_threshold=3.0)
    assert all(p.placed for p in poses)
    est = np.stack([p.cam2world for p in poses])
    t_err, r_err = M.localization_errors(est, s.poses[queries].double().numpy())
    assert np.median(r_err) <= 1.0, r_err
    assert np.median(t_err) <= 0.02 * s.extent, (t_err, s.extent)
    focal = np.array([p.K_network[0, 0] for p in poses])
    np.testing.assert_allclose(focal, s.focals[queries].numpy(), rtol=0.05)
    assert all(p.inliers >= 30 and 0.1 <= p.confidence <= 1 for p in poses)
    assert checksums(out) == before


def test_a_query_with_wrong_predictions_is_not_placed(synthetic_map):
    s, out, queries, nb, preds = synthetic_map
    lmap = L.read_map(out, size=64)
    # the query's points scrambled: no consistent 2D-3D correspondence, so no pose is guessed
    g = torch.Generator().manual_seed(0)
    p1 = [t[torch.randperm(t.shape[0], generator=g)][:, torch.randperm(t.shape[1], generator=g)]
          for t in (preds.pts3d_1[k] for k in range(len(preds.pairs)))]
    bad = PairPredictions(preds.pairs, p1, preds.conf_1, preds.pts3d_2_in_1, preds.conf_2, n_images=N_ALL)
    qimgs = [L.LoadedImage(torch.zeros(3, 48, 64), (48, 64), lmap.images[0].meta) for _ in queries[:3]]
    poses = L.place_queries(lmap, qimgs, bad, nb[:3], conf_threshold=3.0)
    assert not any(p.placed for p in poses) and all(p.cam2world is None for p in poses)
    d = L.poses_dict(poses, lmap)
    assert d["units"] == "scene" and "metres" not in json.dumps(d)
    assert all(v["placed"] is False and v["cam2world"] is None for v in d["queries"].values())


def test_localize_is_public():
    assert pointmap.localize is L.localize
