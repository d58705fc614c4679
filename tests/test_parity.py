"""Parity with the reference implementation's stored outputs (tiny configs, refilled weights).

The reference outputs were computed in float32 on the CPU. Their own float32 rounding error,
measured against a float64 evaluation of the same network and weights, reaches ~1.3e-3 under the
relative metric below on elements near zero (see ``test_reference_float32_noise_floor``), so the
maximum over elements is bounded by that floor; the bulk of the elements (99th percentile) must
agree to 1e-4 and the median to 1e-5. Measured here: max 1.9e-3 / 9.0e-4, 99th percentile
2.1e-5 / 5.1e-5, median 4e-7 / 8e-7 (224 linear / 512 DPT).
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from pointmap.model import DUSt3R, load_model, load_weights, parse_constructor_string, save_reference_pth
from pointmap.testing.refill import refill_state_dict

from conftest import SHARED
from parity_checks import (all_pair_outputs, assert_same_weights, check_outputs, first_pair_outputs, image_sha256,
                           load_vectors, relerr)

CONFIGS = ["tiny_224_linear", "tiny_512_dpt"]


@pytest.fixture(scope="module", params=CONFIGS)
def parity(request, parity_or_subset_dir, tmp_path_factory):
    name = request.param
    manifest = json.loads((parity_or_subset_dir / name / "manifest.json").read_text())
    vec = load_vectors(parity_or_subset_dir, name)
    sd = refill_state_dict(manifest["keys"], vec["seed"])
    tmp = tmp_path_factory.mktemp(name)
    pth = tmp / "model.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model=manifest["args"])}, pth)
    return {"name": name, "manifest": manifest, "vec": vec, "sd": sd, "pth": pth, "tmp": tmp}


def test_refill_matches_state_dict_sum(parity):
    total = sum(t.double().sum().item() for t in parity["sd"].values())
    assert math.isclose(total, parity["vec"]["state_dict_sum"], rel_tol=0, abs_tol=1e-9)


def test_end_to_end_parity_from_released_pth(parity, parity_or_subset_dir):
    vec = parity["vec"]
    preds = all_pair_outputs(load_model(parity["pth"]), vec, parity_or_subset_dir / "images")
    check_outputs(preds, vec)


def test_hub_layout(parity):
    """config.json with Infinity tokens + model.safetensors without the DPT aliases."""
    from safetensors.torch import save_file

    cfg = parse_constructor_string(parity["manifest"]["args"])
    hub = parity["tmp"] / "hub"
    hub.mkdir()
    conf = {
        "conf_mode": ["exp", 1, math.inf], "depth_mode": ["exp", -math.inf, math.inf],
        "dec_depth": cfg.dec_depth, "dec_embed_dim": cfg.dec_embed_dim, "dec_num_heads": cfg.dec_num_heads,
        "enc_depth": cfg.enc_depth, "enc_embed_dim": cfg.enc_embed_dim, "enc_num_heads": cfg.enc_num_heads,
        "freeze": "none", "head_type": cfg.head_type, "img_size": list(cfg.img_size),
        "landscape_only": False, "output_mode": "pts3d", "patch_embed_cls": "PatchEmbedDust3R",
        "pos_embed": "RoPE100",
    }
    text = json.dumps(conf, sort_keys=True, indent=2)
    assert "Infinity" in text
    (hub / "config.json").write_text(text)
    sd = {k: v.contiguous() for k, v in parity["sd"].items() if ".layer_rn." not in k}
    save_file(sd, str(hub / "model.safetensors"))
    ref = load_model(parity["pth"])
    for source in (hub, hub / "model.safetensors"):
        m = load_model(source)
        assert_same_weights(m, ref)
    preds = first_pair_outputs(m, parity["vec"])
    check_outputs(preds, parity["vec"], pair_ids=[0])


def test_convert_command(parity):
    from pointmap.cli import main

    out = parity["tmp"] / "converted.safetensors"
    assert main(["convert", str(parity["pth"]), str(out)]) == 0
    m = load_model(out)
    assert_same_weights(m, load_model(parity["pth"]))
    check_outputs(first_pair_outputs(m, parity["vec"]), parity["vec"], pair_ids=[0])
    # and back to the released layout
    back = parity["tmp"] / "back.pth"
    save_reference_pth(m, back)
    assert_same_weights(load_model(back), m)


def test_reference_float32_noise_floor(parity_or_subset_dir):
    """The stored reference outputs carry float32 rounding noise: against a float64 evaluation of
    the same network their max relative error is ~1e-3, the same as ours. This documents why the
    parity bound on the maximum is 3e-3 rather than 1e-4."""
    name = "tiny_224_linear"
    manifest = json.loads((parity_or_subset_dir / name / "manifest.json").read_text())
    vec = load_vectors(parity_or_subset_dir, name)
    model = DUSt3R(parse_constructor_string(manifest["args"]))
    load_weights(model, refill_state_dict(manifest["keys"], vec["seed"]))
    model = model.double().eval()
    s = vec["stride"]
    i, j = vec["pairs"][0]
    with torch.no_grad():
        p1, _ = model({"img": vec["images"][i]["img"][None].double()}, {"img": vec["images"][j]["img"][None].double()})
    e = relerr(vec["pts3d_1"][0], p1["pts3d"][0, ::s, ::s])
    assert 1e-4 < e.max() < 3e-3
    assert e.median() < 1e-5


if SHARED is not None:  # the full vectors beside the repository
    @pytest.mark.parametrize("name", CONFIGS)
    def test_shipped_subset_is_an_exact_cut_of_the_full_vectors(parity_dir, name):
        """``tests/data/parity`` (what a fresh clone checks) holds the full vectors' own numbers.
        Defined only where the full vectors are: a fresh clone has nothing to compare with."""
        from pathlib import Path

        sub_dir = Path(__file__).resolve().parent / "data" / "parity"
        full = torch.load(parity_dir / name / "vectors.pt", weights_only=True)
        sub = torch.load(sub_dir / name / "vectors.pt", weights_only=True)
        assert (sub_dir / name / "manifest.json").read_bytes() == (parity_dir / name / "manifest.json").read_bytes()
        assert all(sub[k] == full[k] for k in ("config", "seed", "size", "stride", "state_dict_sum"))
        idx = [full["files"].index(f) for f in sub["files"]]
        for f, i, ref in zip(sub["files"], idx, sub["images"]):
            assert (sub_dir / "images" / f).read_bytes() == (parity_dir / "images" / f).read_bytes()
            assert image_sha256(full["images"][i]["img"]) == ref["img_sha256"]
        for q, (a, b) in enumerate(sub["pairs"]):
            k = [tuple(p) for p in full["pairs"]].index((idx[a], idx[b]))
            for field in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2"):
                assert torch.equal(sub[field][q], full[field][k]), field
