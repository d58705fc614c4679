"""Checks shared by the DUSt3R and MASt3R parity tests: the first pair's outputs, equal weights."""

from __future__ import annotations

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
