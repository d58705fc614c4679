"""Dense matching: reciprocal nearest neighbours of descriptors or 3D points.

Truth: the reference's stored matches of the MASt3R parity pair (computed with its
``fast_reciprocal_NNs`` on full-resolution descriptors), a plain brute-force twin of the
algorithm below, and analytic feature fields whose matches are known.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointmap.matching import reciprocal_matches, reciprocal_matches_batched


def plain_twin(f1: torch.Tensor, f2: torch.Tensor, subsample: int, dist: str) -> set:
    """The reference algorithm written plainly: full similarity matrices, numpy state, ten
    there-and-back rounds, converged seeds kept."""
    H1, W1, D = f1.shape
    H2, W2, _ = f2.shape
    a, b = f1.reshape(-1, D).double(), f2.reshape(-1, D).double()
    if dist == "dot":
        s = (a @ b.T).numpy()
        nn12, nn21 = s.argmax(1), s.argmax(0)
    else:
        s = torch.cdist(a, b).numpy()
        nn12, nn21 = s.argmin(1), s.argmin(0)
    S = subsample
    ys, xs = np.mgrid[S // 2:H1:S, S // 2:W1:S].reshape(2, -1)
    xy1 = ys * W1 + xs
    xy2 = np.full_like(xy1, -1)
    old1, old2 = xy1.copy(), xy2.copy()
    notyet = np.ones(len(xy1), bool)
    for _ in range(10):
        if not notyet.any():
            break
        xy2[notyet] = nn12[xy1[notyet]]
        notyet &= old2 != xy2
        xy1[notyet] = nn21[xy2[notyet]]
        notyet &= old1 != xy1
        old1, old2 = xy1.copy(), xy2.copy()
    ok = ~notyet
    return {(int(p % W1), int(p // W1), int(q % W2), int(q // W2)) for p, q in zip(xy1[ok], xy2[ok])}


def as_set(xy1: torch.Tensor, xy2: torch.Tensor) -> set:
    return set(map(tuple, torch.cat([xy1, xy2], 1).tolist()))


def smooth_field(H: int, W: int, D: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, D, H // 4 + 2, W // 4 + 2, generator=g)
    return F.interpolate(base, scale_factor=4, mode="bicubic", align_corners=False)[0, :, :H, :W].permute(1, 2, 0)


@pytest.fixture(scope="module")
def parity_pair0(parity_dir, tmp_path_factory):
    """The MASt3R parity model's full-resolution outputs for the first pair, and the vectors."""
    from pointmap.inference import infer_pairs
    from pointmap.model import load_model
    from pointmap.testing.refill import refill_state_dict

    d = parity_dir / "mast3r_tiny_512"
    manifest = json.loads((d / "manifest.json").read_text())
    vec = torch.load(d / "vectors.pt", weights_only=True)
    pth = tmp_path_factory.mktemp("m3") / "model.pth"
    torch.save({"model": refill_state_dict(manifest["keys"], vec["seed"]),
                "args": argparse.Namespace(model=manifest["args"])}, pth)
    imgs = [im["img"] for im in vec["images"]]
    preds = infer_pairs(load_model(pth), imgs, [tuple(vec["pairs"][0])], device="cpu")
    return preds, vec


def test_own_descriptors_give_the_reference_matches(parity_pair0):
    preds, vec = parity_pair0
    ref = vec["matches_pair0"]
    xy1, xy2 = reciprocal_matches(preds.desc_1[0], preds.desc_2[0], subsample=ref["subsample"])
    mine, theirs = as_set(xy1, xy2), as_set(ref["xy1"].long(), ref["xy2"].long())
    # measured: all 255 of 255 equal, none extra
    assert len(mine & theirs) >= 0.99 * len(theirs)
    assert len(mine - theirs) <= 0.01 * len(theirs)
    assert mine == theirs
    # the order is the reference's: by the raster index of image 1, then of image 2
    assert torch.equal(xy1, ref["xy1"].long()) and torch.equal(xy2, ref["xy2"].long())


@pytest.mark.parametrize("subsample", [1, 2, 3])
def test_stored_descriptors_match_the_plain_twin(parity_dir, subsample):
    """On the stored (reference) descriptors, the fast search returns exactly what the plain
    full-matrix algorithm returns."""
    vec = torch.load(parity_dir / "mast3r_tiny_512" / "vectors.pt", weights_only=True)
    for k in (0, 5):
        d1, d2 = vec["desc_1"][k], vec["desc_2"][k]
        got = as_set(*reciprocal_matches(d1, d2, subsample=subsample, block_size=500))
        assert got == plain_twin(d1, d2, subsample, "dot")
        assert len(got) >= 5


def test_batched_equals_one_by_one():
    f1 = torch.stack([F.normalize(smooth_field(24, 32, 8, s), dim=-1) for s in range(3)])
    f2 = torch.stack([F.normalize(smooth_field(24, 32, 8, s + 10), dim=-1) for s in range(3)])
    batched = reciprocal_matches_batched(f1, f2, subsample=2, block_size=300)
    for p in range(3):
        one = reciprocal_matches(f1[p], f2[p], subsample=2)
        assert torch.equal(batched[p][0], one[0]) and torch.equal(batched[p][1], one[1])
        assert as_set(*one) == plain_twin(f1[p], f2[p], 2, "dot")


def test_shifted_field_matches_the_shift():
    """Image 2 sees image 1's descriptor field shifted by (5, 3) pixels: every seed in the
    overlap matches the pixel shifted by exactly that."""
    field = F.normalize(smooth_field(40, 56, 16, 1) + 0.3 * torch.randn(40, 56, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    f1, f2 = field[:32, :48], field[3:35, 5:53]
    xy1, xy2 = reciprocal_matches(f1, f2, subsample=4)
    inside = (xy1[:, 0] >= 5) & (xy1[:, 1] >= 3)
    assert inside.sum() >= 0.9 * len(xy1) and len(xy1) >= 60
    assert torch.equal(xy2[inside], xy1[inside] - torch.tensor([5, 3]))


@pytest.mark.parametrize("kdtree", [True, False])
def test_points_match_by_3d_distance(kdtree):
    """3D points (DUSt3R's recipe) go through the same function: a k-d tree, or the blockwise
    search a GPU uses; both equal the plain twin, with and without masks."""
    g = torch.Generator().manual_seed(3)
    p1 = torch.rand(20, 24, 3, generator=g)
    p2 = torch.rand(18, 22, 3, generator=g)
    got = reciprocal_matches_batched(p1[None], p2[None], subsample=1, block_size=64, kdtree=kdtree)[0]
    assert as_set(*got) == plain_twin(p1, p2, 1, "l2") and len(got[0]) > 50
    m1 = torch.zeros(20, 24, dtype=torch.bool)
    m1[5:15] = True
    p1m = p1.clone()
    p1m[~m1] = float("nan")  # non-finite points never match
    a1, _ = reciprocal_matches_batched(p1m[None], p2[None], subsample=1, kdtree=kdtree)[0]
    b1, _ = reciprocal_matches_batched(p1[None], p2[None], subsample=1, mask1=m1[None], kdtree=kdtree)[0]
    assert torch.equal(a1, b1) and len(a1) > 0 and bool(((a1[:, 1] >= 5) & (a1[:, 1] < 15)).all())


def test_match_pair_uses_descriptors_or_points():
    from pointmap.matching import match_pair
    from pointmap.predictions import PairPredictions

    g = torch.Generator().manual_seed(4)
    pts = torch.rand(1, 16, 16, 3, generator=g)
    conf = torch.full((1, 16, 16), 2.0)
    desc = F.normalize(torch.randn(1, 16, 16, 8, generator=g), dim=-1)
    plain = PairPredictions([(0, 1)], pts, conf, pts, conf)
    xy1, xy2 = match_pair(plain, 0, subsample=1)
    assert len(xy1) == 256 and torch.equal(xy1, xy2)
    with pytest.raises(ValueError, match="no descriptors"):
        match_pair(plain, 0, use="desc")
    rich = PairPredictions([(0, 1)], pts, conf, torch.rand(1, 16, 16, 3, generator=g), conf,
                           desc_1=desc, desc_conf_1=conf, desc_2=desc, desc_conf_2=conf)
    xy1, xy2 = match_pair(rich, 0, subsample=1)  # descriptors: identical maps match one to one
    assert len(xy1) == 256 and torch.equal(xy1, xy2)


def test_match_command_writes_matches_and_a_picture(tmp_path):
    """``pointmap match`` with the bundled (DUSt3R) model matches by 3D points; the written
    matches are in network pixels, with their original-pixel positions beside them."""
    from pathlib import Path

    from PIL import Image

    from pointmap.cli import main

    room = Path(__file__).resolve().parents[1] / "src" / "pointmap" / "examples" / "room"
    a, b = room / "room_0.jpg", room / "room_1.jpg"
    out = tmp_path / "m"
    assert main(["match", str(a), str(b), "-o", str(out), "--size", "224", "--device", "cpu"]) == 0
    z = np.load(out / "matches.npz")
    assert str(z["features"]) == "pts3d" and len(z["xy1"]) > 100
    assert z["xy1"].shape == z["xy2"].shape == z["xy1_original"].shape
    assert (z["xy1"] >= 0).all() and (z["xy1"][:, 0] < 224).all()
    W0 = Image.open(a).size[0]
    assert (z["xy1_original"][:, 0] < W0).all() and (z["conf"] > 1).all()
    assert Image.open(out / "matches.png").size[0] == 2 * 224
    assert main(["match", str(a), str(b), "-o", str(out), "--size", "224", "--device", "cpu"]) == 2  # not empty
