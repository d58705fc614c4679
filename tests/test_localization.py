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
                  depths=[s.depths[k] for k in map_ids],
                  confidence=[torch.full_like(s.depths[k], 5.0) for k in map_ids],
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
    assert all(p.inliers >= 30 and 0.3 <= p.confidence <= 1 for p in poses)
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


# ------------------------------------------------------------------ through the command line
EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "pointmap" / "examples" / "room"


@pytest.fixture(scope="module")
def real_map(tmp_path_factory):
    """Three example photos reconstructed by the command line with the bundled model at 224 px
    (with a predictions store, which records the model and size), a held-out photo and images
    that show nothing of the room."""
    from PIL import Image

    from pointmap.cli import main

    root = tmp_path_factory.mktemp("cli")
    imgs = sorted(EXAMPLES.glob("*.jpg"))
    assert main(["reconstruct", *map(str, imgs[:3]), "-o", str(root / "map"), "-q", "--size", "224",
                 "--store", "on", "--export", "cameras", "depth", "transforms"]) == 0
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(root / "noise.png")
    (root / "bad.jpg").write_text("not an image")
    return root, imgs[3]


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("pointmap: error:") and all(n in err for n in needles), err


def test_localize_command_places_a_held_out_photo_and_names_the_rest(real_map, capsys):
    from pointmap.cli import main

    root, held_out = real_map
    before = checksums(root / "map")
    out = root / "poses.json"
    rc = main(["localize", str(root / "map"), str(held_out), str(root / "noise.png"), "--size", "224", "-k", "2",
               "-q", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "not placed: noise.png" in text
    d = json.loads(out.read_text())
    q = d["queries"]
    assert q["noise.png"]["placed"] is False and q["noise.png"]["cam2world"] is None
    assert q[held_out.name]["placed"] is True and q[held_out.name]["confidence"] >= 0.3
    assert np.isfinite(np.array(q[held_out.name]["cam2world"])).all()
    assert d["units"] == "scene" and "metres" not in out.read_text()
    # K in the query's original pixels: the principal point at the centre of the 512x384 photo
    np.testing.assert_allclose(np.array(q[held_out.name]["K"])[:2, 2], [255.5, 191.5], atol=1.0)
    assert checksums(root / "map") == before


def test_localize_command_refusals_are_one_line_and_leave_the_map_alone(real_map, capsys, tmp_path):
    from pointmap.cli import main
    from pointmap.model import DUSt3R, ModelConfig
    from pointmap.model.checkpoint import save_model

    root, held_out = real_map
    before = checksums(root / "map")
    out = ["-o", str(tmp_path / "poses.json"), "-q"]
    (tmp_path / "empty").mkdir()
    assert main(["localize", str(tmp_path / "empty"), str(held_out), *out]) == 2
    _one_line_error(capsys, "not a reconstruction", "cameras.json")
    assert main(["localize", str(tmp_path / "missing"), str(held_out), *out]) == 2
    _one_line_error(capsys, "is not a folder")
    assert main(["localize", str(root / "map"), str(held_out), "--size", "512", *out]) == 2
    _one_line_error(capsys, "size 224", "--size 224")
    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32,
                      dec_depth=4, dec_num_heads=2, head_type="linear")
    save_model(DUSt3R(cfg), tmp_path / "other.safetensors")
    assert main(["localize", str(root / "map"), str(held_out), "--size", "224", "--weights",
                 str(tmp_path / "other.safetensors"), *out]) == 2
    _one_line_error(capsys, "different weights", "'default'")
    assert main(["localize", str(root / "map"), str(root / "bad.jpg"), "--size", "224", *out]) == 2
    _one_line_error(capsys, "bad.jpg")
    assert not (tmp_path / "poses.json").exists()
    assert checksums(root / "map") == before


def test_retrieval_pairs_a_copy_of_a_map_image_with_that_image_first(real_map):
    from pointmap.model import load_model

    root, _ = real_map
    lmap = L.read_map(root / "map", size=224)
    copy = L.LoadedImage(lmap.images[1].img.clone(), lmap.images[1].true_shape, lmap.images[1].meta)
    assert L.retrieve_neighbours(load_model("default"), lmap, [copy], k=2)[0][0] == 1
    assert L.query_pairs(len(lmap), [[1, 0]]) == [(3, 1), (3, 0)]
