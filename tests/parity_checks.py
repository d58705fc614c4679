"""Checks shared by the DUSt3R and MASt3R parity tests: the first pair's outputs, equal weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pointmap.model import DUSt3R
from pointmap.predictions import PairPredictions


def first_pair_outputs(model: DUSt3R, vec: dict[str, Any]) -> PairPredictions:
    """The model's predictions for the first pair of the stored vectors (CPU, float32)."""
    from pointmap.inference import infer_pairs

    imgs = [im["img"] for im in vec["images"]]
    return infer_pairs(model, imgs, [tuple(vec["pairs"][0])], device="cpu")


def assert_same_weights(a: DUSt3R, b: DUSt3R) -> None:
    """Both models hold exactly the same parameters (the unused ``mask_token`` aside)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if k != "mask_token":
            assert torch.equal(sa[k], sb[k]), k


def all_pair_outputs(model: DUSt3R, vec: dict[str, Any], images_dir: Path) -> PairPredictions:
    """Preprocess the stored images, check them and the pair list against the vectors exactly,
    and return the model's predictions for every pair (CPU, float32, batches of 4)."""
    from pointmap.images import load_images
    from pointmap.inference import infer_pairs
    from pointmap.pairs import make_pairs

    imgs = load_images(images_dir, size=vec["size"])
    assert [im.meta.path.split("/")[-1] for im in imgs] == vec["files"]
    for im, ref in zip(imgs, vec["images"]):
        assert torch.equal(im.img, ref["img"]), ref["name"]
        assert tuple(im.true_shape) == tuple(int(x) for x in ref["true_shape"])
    pairs = make_pairs(len(imgs), "complete", symmetrize=True)
    assert pairs == [tuple(p) for p in vec["pairs"]]
    return infer_pairs(model, imgs, pairs, batch_size=4, device="cpu", dtype=torch.float32)
