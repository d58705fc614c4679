"""Parity with the reference implementation from the subset that ships in the repository
(``tests/data/parity``): runs on a fresh clone, with nothing beside it.

Two tiny configurations (224 linear, 512 DPT), refilled weights saved in the released ``.pth``
layout and loaded through :func:`pointmap.model.load_model`; the two images preprocessed by
:func:`pointmap.images.load_images` must give the reference's tensors bit for bit (SHA-256), and
both orders of the pair the reference's outputs within the bound of ``tests/test_parity.py``:
99th percentile of ``|a - b| / (|b| + 1e-3)`` at most 1e-4, median at most 1e-5, maximum at most
5e-3 (the reference's own float32 noise reaches about 1.3e-3 on elements near zero).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from pointmap.images import load_images
from pointmap.inference import infer_pairs
from pointmap.model import load_model
from pointmap.testing.refill import refill_state_dict

DATA = Path(__file__).resolve().parent / "data" / "parity"


@pytest.mark.parametrize("name", ["tiny_224_linear", "tiny_512_dpt"])
def test_shipped_parity_subset(name, tmp_path):
    manifest = json.loads((DATA / name / "manifest.json").read_text())
    vec = torch.load(DATA / name / "vectors.pt", weights_only=True)
    sd = refill_state_dict(manifest["keys"], vec["seed"])
    assert math.isclose(sum(t.double().sum().item() for t in sd.values()), vec["state_dict_sum"],
                        rel_tol=0, abs_tol=1e-9)
    torch.save({"model": sd, "args": argparse.Namespace(model=manifest["args"])}, tmp_path / "model.pth")
    model = load_model(tmp_path / "model.pth")

    imgs = load_images([DATA / "images" / f for f in vec["files"]], size=vec["size"])
    for im, ref in zip(imgs, vec["images"]):
        assert hashlib.sha256(im.img.contiguous().numpy().tobytes()).hexdigest() == ref["img_sha256"], ref["name"]
        assert tuple(im.true_shape) == tuple(int(x) for x in ref["true_shape"])

    pairs = [tuple(p) for p in vec["pairs"]]
    preds = infer_pairs(model, imgs, pairs, batch_size=2, device="cpu", dtype=torch.float32)
    s, errs = vec["stride"], []
    for k, (i, j) in enumerate(pairs):
        q = preds.index(i, j)
        for field in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2"):
            mine, ref = getattr(preds, field)[q][::s, ::s], vec[field][k]
            assert mine.shape == ref.shape, field
            errs.append(((mine.double() - ref.double()).abs() / (ref.double().abs() + 1e-3)).flatten())
    e = torch.cat(errs).sort().values
    assert e[int(0.99 * e.numel())] <= 1e-4, f"99th percentile {e[int(0.99 * e.numel())]:.2e}"
    assert e.median() <= 1e-5, f"median {e.median():.2e}"
    assert e.max() <= 5e-3, f"max {e.max():.2e}"
