"""Parity with the reference implementation from the subset that ships in the repository
(``tests/data/parity``), whether or not the full vectors are beside it: what a fresh clone checks.

Two tiny configurations (224 linear, 512 DPT), refilled weights saved in the released ``.pth``
layout and loaded through :func:`pointmap.model.load_model`; the two images preprocessed by
:func:`pointmap.images.load_images` must give the reference's tensors bit for bit (SHA-256), and
both orders of the pair the reference's outputs within the parity bound of ``tests/test_parity.py``
(:func:`parity_checks.check_outputs`: 99th percentile of ``|a - b| / (|b| + 1e-3)`` below 1e-4,
median below 1e-5, maximum below 3e-3).
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from pointmap.model import load_model
from pointmap.testing.refill import refill_state_dict

from conftest import PARITY_SUBSET
from parity_checks import all_pair_outputs, check_outputs, load_vectors


@pytest.mark.parametrize("name", ["tiny_224_linear", "tiny_512_dpt"])
def test_shipped_parity_subset(name, tmp_path):
    manifest = json.loads((PARITY_SUBSET / name / "manifest.json").read_text())
    vec = load_vectors(PARITY_SUBSET, name)  # checks the preprocessed images' digests
    sd = refill_state_dict(manifest["keys"], vec["seed"])
    assert math.isclose(sum(t.double().sum().item() for t in sd.values()), vec["state_dict_sum"],
                        rel_tol=0, abs_tol=1e-9)
    torch.save({"model": sd, "args": argparse.Namespace(model=manifest["args"])}, tmp_path / "model.pth")
    preds = all_pair_outputs(load_model(tmp_path / "model.pth"), vec, PARITY_SUBSET / "images")
    check_outputs(preds, vec)
