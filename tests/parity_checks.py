"""Checks shared by the DUSt3R and MASt3R parity tests: the first pair's outputs, equal weights."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from pointmap.model import DUSt3R
from pointmap.predictions import PairPredictions


def image_sha256(img: torch.Tensor) -> str:
    """SHA-256 of a preprocessed ``(3, H, W)`` float32 image's bytes (C order)."""
    return hashlib.sha256(img.contiguous().numpy().tobytes()).hexdigest()


def load_vectors(root: Path, name: str) -> dict[str, Any]:
    """``root/name/vectors.pt``. The shipped subset keeps its preprocessed images as SHA-256
    digests: they are filled in from :func:`pointmap.images.load_images` of ``root/images`` once
    the digests match, so the result has the full vectors' fields."""
    from pointmap.images import load_images

    vec = torch.load(root / name / "vectors.pt", weights_only=True)
    if "img" not in vec["images"][0]:
        imgs = load_images([root / "images" / f for f in vec["files"]], size=vec["size"])
        for im, ref in zip(imgs, vec["images"]):
            assert image_sha256(im.img) == ref["img_sha256"], ref["name"]
            ref["img"] = im.img
    return vec


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


def relerr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise ``|a - b| / (|b| + 1e-3)``."""
    return (a.double() - b.double()).abs() / (b.double().abs() + 1e-3)


def check_outputs(preds: PairPredictions, vec: dict[str, Any], pair_ids: list[int] | None = None) -> torch.Tensor:
    """Relative errors (:func:`relerr`) of ``preds`` against the stored pairs (all, or
    ``pair_ids``), asserted within the parity bound: max < 3e-3, 99th percentile < 1e-4, median
    < 1e-5 (see ``tests/test_parity.py``)."""
    s = vec["stride"]
    errs = []
    for k in pair_ids if pair_ids is not None else range(len(vec["pairs"])):
        q = preds.index(*vec["pairs"][k])
        for mine, ref in (
            (preds.pts3d_1[q], vec["pts3d_1"][k]),
            (preds.conf_1[q], vec["conf_1"][k]),
            (preds.pts3d_2_in_1[q], vec["pts3d_2_in_1"][k]),
            (preds.conf_2[q], vec["conf_2"][k]),
        ):
            assert mine[::s, ::s].shape == ref.shape
            errs.append(relerr(mine[::s, ::s], ref).flatten())
    e = torch.cat(errs)
    assert e.max() < 3e-3, f"max relative error {e.max():.2e}"
    p99 = e.sort().values[int(0.99 * e.numel())]
    assert p99 < 1e-4, f"99th percentile {p99:.2e}"
    assert e.median() < 1e-5
    return e
