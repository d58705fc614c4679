"""Streamed reductions (pointmap.align.reduced): equal to what alignment computes from full pairs,
resumable, refused when mismatched, and aligning like the full pairs on a scene with exact truth."""

import pytest
import torch

from pointmap.align import AlignConfig, align_pairs
from pointmap.align.data import build_edge_data
from pointmap.align.params import conf_transform
from pointmap.align.reduced import PAIR_FIELDS, StreamedReductions, align_reduced
from pointmap.geometry import align_multiple_poses
from pointmap.store import StoreMismatchError
from pointmap.testing.synthetic_pairs import make_synthetic_scene

IDENT = {"model": {"name": "synthetic"}, "preprocessing": {"seed": 0}}


@pytest.fixture(scope="module")
def scene():
    return make_synthetic_scene(8, (64, 48), graph="logwin-3", seed=0)


def batches(preds, size=5, start=0, stop=None):
    """The predictions as a network's batches would come: ``(pairs, arrays)``."""
    stop = len(preds) if stop is None else stop
    for a in range(start, stop, size):
        es = range(a, min(a + size, stop))
        yield [preds.pairs[e] for e in es], {
            "pts3d_1": torch.stack([preds.pts3d_1[e] for e in es]),
            "conf_1": torch.stack([preds.conf_1[e] for e in es]),
            "pts3d_2_in_1": torch.stack([preds.pts3d_2_in_1[e] for e in es]),
            "conf_2": torch.stack([preds.conf_2[e] for e in es])}


def reduce_all(path, preds, cfg=None, stop=None, save=True):
    red = StreamedReductions.open(path, IDENT, preds.image_shapes, len(preds), cfg, save_every_s=1e9)
    for pairs, arrays in batches(preds, stop=stop):
        if pairs[0] in red.todo(pairs):
            red.write(pairs, arrays)
    if save:
        red.save()
    return red


def plain_canonical(preds, k, conf_trf):
    """Image ``k``'s canonical depth, pair after pair from the full maps (the definition)."""
    num = den = 0
    best = (-1.0, 1.0)
    for e, (i, _) in enumerate(preds.pairs):
        if i != k:
            continue
        z, c = preds.pts3d_1[e][..., 2].double(), preds.conf_1[e].double()
        med = float(z[z > 0].median())
        w = conf_transform(c, conf_trf).clamp(min=0) * (z > 0)
        num, den = num + w * z / med, den + w
        if float(c.mean()) > best[0]:
            best = (float(c.mean()), med)
    return num / den * best[1]


def test_reductions_equal_the_full_pairs_twin(scene, tmp_path):
    preds, cfg = scene.preds, AlignConfig()
    red = reduce_all(tmp_path / "s", preds)
    twin = build_edge_data(preds, torch.device("cpu"), cfg.coarse_stride, cfg.coarse_pixels_for(len(preds)),
                           cfg.conf_trf, None, cfg.chunk_pixels, cfg.storage_dtype, 0)
    rows = red.store.rows(preds.pairs, PAIR_FIELDS)
    for name in PAIR_FIELDS:
        want = getattr(twin, name)
        assert rows[name].dtype == torch.float16  # stored as float16: equal to its rounding
        torch.testing.assert_close(rows[name].float(), want.half().float(), rtol=0, atol=0)
    assert torch.equal(red.reducer.im_conf, twin.im_conf)
    canon = red.reducer.canonical_depth()
    for k in range(preds.n_images):
        want = plain_canonical(preds, k, cfg.conf_trf).reshape(-1).float()
        torch.testing.assert_close(canon[k], want, rtol=1e-5, atol=0)


def test_non_finite_points_carry_no_weight(scene, tmp_path):
    """A point that overflowed (NaN or infinite coordinate) reduces like the same point with
    confidence 0: no weight in its pair's rows nor in its image's state."""
    preds = scene.preds
    pairs, arrays = next(batches(preds))
    bad = {k: v.clone() for k, v in arrays.items()}
    bad["pts3d_1"][0, 3, 4, 2] = float("nan")
    bad["pts3d_1"][1, 5, 6, 0] = float("inf")
    bad["pts3d_2_in_1"][2, 7, 8, 1] = -float("inf")
    zeroed = {k: v.clone() for k, v in arrays.items()}
    for name, conf, b, y, x in (("pts3d_1", "conf_1", 0, 3, 4), ("pts3d_1", "conf_1", 1, 5, 6),
                                ("pts3d_2_in_1", "conf_2", 2, 7, 8)):
        zeroed[name][b, y, x] = 0.0
        zeroed[conf][b, y, x] = 0.0
    got, want = (StreamedReductions.open(tmp_path / n, IDENT, preds.image_shapes, len(preds), save_every_s=1e9)
                 for n in ("bad", "zeroed"))
    got.write(pairs, bad)
    want.write(pairs, zeroed)
    rows, ref = got.store.rows(pairs, PAIR_FIELDS), want.store.rows(pairs, PAIR_FIELDS)
    for name in PAIR_FIELDS:
        assert bool(torch.isfinite(rows[name]).all()) and torch.equal(rows[name], ref[name]), name
    for name in ("im_conf", "num", "den", "best"):
        assert torch.equal(getattr(got.reducer, name), getattr(want.reducer, name)), name


def test_interrupted_reduction_resumes_to_the_uninterrupted_result(scene, tmp_path):
    preds = scene.preds
    whole = reduce_all(tmp_path / "whole", preds)
    # killed after 15 pairs were saved and 5 more written but not saved
    part = reduce_all(tmp_path / "cut", preds, stop=15)
    part.write(*next(batches(preds, start=15, stop=20)))
    again = StreamedReductions.open(tmp_path / "cut", IDENT, preds.image_shapes, len(preds), save_every_s=1e9)
    assert again.todo(preds.pairs) == preds.pairs[15:]
    for pairs, arrays in batches(preds, start=15):
        again.write(pairs, arrays)
    for name in ("im_conf", "num", "den", "best"):
        assert torch.equal(getattr(again.reducer, name), getattr(whole.reducer, name)), name
    a = whole.align(preds.pairs).scene
    b = again.align(preds.pairs).scene
    assert torch.equal(a.poses, b.poses)
    assert all(torch.equal(x, y) for x, y in zip(a.depths, b.depths))


def test_mismatched_rerun_is_refused(scene, tmp_path):
    preds = scene.preds
    reduce_all(tmp_path / "s", preds)
    with pytest.raises(StoreMismatchError, match="reductions"):
        StreamedReductions.open(tmp_path / "s", IDENT, preds.image_shapes, len(preds), AlignConfig(coarse_stride=3))
    with pytest.raises(StoreMismatchError, match="conf_trf"):
        StreamedReductions.open(tmp_path / "s", IDENT, preds.image_shapes, len(preds), AlignConfig(conf_trf="id"))
    other = {**IDENT, "preprocessing": {"seed": 1}}
    with pytest.raises(StoreMismatchError, match="seed"):
        StreamedReductions.open(tmp_path / "s", other, preds.image_shapes, len(preds))


def depth_error(scene_out, gt):
    """Median and 90th percentile of the relative depth error after the similarity onto the truth."""
    s, _, _ = align_multiple_poses(scene_out.poses.double(), gt.poses.double())
    rel = torch.cat([((float(s) * d.double() - g.double()).abs() / g.double()).reshape(-1)
                     for d, g in zip(scene_out.depths, gt.depths)])
    return float(rel.median()), float(rel.quantile(0.9))


def test_alignment_from_reductions_matches_full_pairs(scene, tmp_path):
    preds = scene.preds
    full = align_pairs(preds, config=AlignConfig(), device="cpu")
    red = reduce_all(tmp_path / "s", preds).align(preds.pairs)
    # cameras: the same coarse stage on float16-rounded samples
    s, R, T = align_multiple_poses(red.scene.poses.double(), full.scene.poses.double())
    moved = red.scene.poses.double().clone()
    moved[:, :3, :3] = R @ moved[:, :3, :3]
    moved[:, :3, 3] = float(s) * moved[:, :3, 3] @ R.T + T
    ang = torch.linalg.matrix_norm(moved[:, :3, :3] - full.scene.poses[:, :3, :3].double()).max()
    assert float(ang) < 1e-3
    torch.testing.assert_close(red.scene.intrinsics, full.scene.intrinsics, rtol=1e-3, atol=0)
    # depths: within 1.5x the dense stage's error against the truth (bench_reduction.py measures it)
    med_full, p90_full = depth_error(full.scene, scene)
    med_red, p90_red = depth_error(red.scene, scene)
    assert med_red < 1.5 * med_full and p90_red < 1.5 * p90_full, (med_full, p90_full, med_red, p90_red)
    assert all(torch.equal(a, b) for a, b in zip(red.scene.confidence, full.scene.confidence))


def test_inference_reduces_each_batch_before_the_host_copy(tmp_path):
    from test_store import _images, _tiny_model  # the tiny network and mixed-shape images there

    from pointmap.inference import infer_pairs

    model, imgs = _tiny_model(), _images()
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    shapes = [tuple(im.shape[1:]) for im in imgs]
    red = StreamedReductions.open(tmp_path / "a", IDENT, shapes, len(pairs), save_every_s=1e9)
    preds = infer_pairs(model, imgs, pairs, batch_size=3, device="cpu", reduce=red.write)
    twin = StreamedReductions.open(tmp_path / "b", IDENT, shapes, len(pairs), save_every_s=1e9)
    for batch, arrays in batches(preds, size=1):  # one pair at a time, in the order of ``pairs``
        twin.write(batch, arrays)
    got, want = red.store.rows(pairs, PAIR_FIELDS), twin.store.rows(pairs, PAIR_FIELDS)
    for name in PAIR_FIELDS:
        assert torch.equal(got[name], want[name]), name
    assert torch.equal(red.reducer.im_conf, twin.reducer.im_conf)
    assert torch.equal(red.reducer.best, twin.reducer.best)
    torch.testing.assert_close(red.reducer.canonical_depth(), twin.reducer.canonical_depth(), rtol=1e-5, atol=0)
    assert sorted(red.reducer.folded) == sorted(pairs)


def test_grown_reductions_equal_those_of_all_the_images(scene, tmp_path):
    """Reductions of the pairs of the first 6 images, grown by 2 images and the pairs with them
    (``pointmap extend``), equal the reductions of every pair over the 8 images."""
    from pointmap.store import PredictionStore

    preds, shapes = scene.preds, scene.preds.image_shapes
    old = [e for e, (i, j) in enumerate(preds.pairs) if i < 6 and j < 6]
    new = [e for e in range(len(preds)) if e not in old]
    red = StreamedReductions.open(tmp_path / "s", IDENT, shapes[:6], len(preds), save_every_s=1e9)
    for es in (old, new):
        if es is new:
            red.save()
            store = PredictionStore.open(tmp_path / "s", red.store.identity)
            store.append_images([{"name": "x6", "digest": "6"}, {"name": "x7", "digest": "7"}])
            red = StreamedReductions.grow(store, shapes, save_every_s=1e9)
            assert red.reducer.im_conf.shape[0] == 8 and not bool(red.reducer.den[6:].any())
        for a in range(0, len(es), 5):
            part = es[a : a + 5]
            red.write([preds.pairs[e] for e in part], {
                n: torch.stack([getattr(preds, n)[e] for e in part]) for n in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")})
    whole = reduce_all(tmp_path / "whole", preds)
    order = [preds.pairs[e] for e in old + new]
    for name in PAIR_FIELDS:
        assert torch.equal(red.store.rows(order, PAIR_FIELDS)[name], whole.store.rows(order, PAIR_FIELDS)[name])
    assert torch.equal(red.reducer.im_conf, whole.reducer.im_conf)
    torch.testing.assert_close(red.reducer.canonical_depth(), whole.reducer.canonical_depth(), rtol=1e-5, atol=0)


def test_grown_plan_refuses_images_needing_more_coarse_pixels():
    from pointmap.align.data import CoarsePlan
    from pointmap.align.reduced import grown_plan, reduction_block
    from pointmap.errors import PointmapError

    block = reduction_block(CoarsePlan.make([(32, 64)], 3, 256, torch.device("cpu")), "log")
    assert grown_plan(block, [(32, 64), (16, 64)]).idx.shape[1] == block["coarse_pixels"]  # fewer: padded
    with pytest.raises(PointmapError, match="another shape"):
        grown_plan(block, [(32, 64), (48, 64)])


def test_alignment_reads_the_canonical_sums_from_the_saved_state(scene, tmp_path):
    preds = scene.preds
    held = reduce_all(tmp_path / "a", preds)
    spilled = reduce_all(tmp_path / "b", preds)
    before = [held.reducer.canonical_depth(k).clone() for k in range(8)]
    seen = []
    spilled.reducer.spill(lambda name, k: seen.append((name, k)) or spilled.store.state_row("images", name, k))
    assert spilled.reducer.num is None and spilled.reducer.den is None  # not held
    assert all(torch.equal(spilled.reducer.canonical_depth(k), before[k]) for k in range(8))
    assert seen[:2] == [("num", 0), ("den", 0)]
    # alignment spills them itself, with the same result as the held sums
    res_held = align_reduced(held.reducer, preds.pairs, held.store.rows(preds.pairs, PAIR_FIELDS))
    res = reduce_all(tmp_path / "c", preds).align(preds.pairs)
    assert all(torch.equal(x, y) for x, y in zip(res.scene.depths, res_held.scene.depths))
    # whatever needs the whole sums reads them back
    state = spilled.reducer.state()
    assert spilled.reducer.num is not None and torch.equal(state["num"], held.reducer.state()["num"])
