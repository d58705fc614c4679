"""MASt3R parity with the reference implementation's stored outputs (tiny config, refilled weights).

Points, confidences, descriptors and descriptor confidences of every pair must agree with the
stored reference outputs: 99th percentile of ``|a - b| / (|b| + 1e-3)`` at most 1e-4, median at
most 1e-5, maximum at most 5e-3 (float32 rounding of near-zero elements, see ``test_parity.py``),
through the released ``.pth`` layout, the hub layout and ``pointmap convert``. Measured here
(.pth path, all 12 pairs; max / 99th percentile / median): points 1.0e-3 / 6e-5 / 1.1e-6,
confidences 6.6e-7 / 3.4e-7 / 1.1e-7, descriptors 6.1e-4 / 3.2e-5 / 7e-7, descriptor
confidences 1.3e-6 / 6.8e-7 / 1.8e-7.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from pointmap.model import load_model, parse_constructor_string, save_reference_pth
from pointmap.testing.refill import refill_state_dict

from parity_checks import all_pair_outputs, assert_same_weights, first_pair_outputs

NAME = "mast3r_tiny_512"
# (prediction field, reference field, stride key)
FIELDS = [
    ("pts3d_1", "pts3d_1", "stride"), ("conf_1", "conf_1", "stride"),
    ("pts3d_2_in_1", "pts3d_2_in_1", "stride"), ("conf_2", "conf_2", "stride"),
    ("desc_1", "desc_1", "desc_stride"), ("desc_conf_1", "desc_conf_1", "stride"),
    ("desc_2", "desc_2", "desc_stride"), ("desc_conf_2", "desc_conf_2", "stride"),
]


def relerr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise ``|a - b| / (|b| + 1e-3)``."""
    return (a.double() - b.double()).abs() / (b.double().abs() + 1e-3)


@pytest.fixture(scope="module")
def parity(parity_dir, tmp_path_factory):
    manifest = json.loads((parity_dir / NAME / "manifest.json").read_text())
    vec = torch.load(parity_dir / NAME / "vectors.pt", weights_only=True)
    sd = refill_state_dict(manifest["keys"], vec["seed"])
    tmp = tmp_path_factory.mktemp(NAME)
    pth = tmp / "model.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model=manifest["args"])}, pth)
    return {"manifest": manifest, "vec": vec, "sd": sd, "pth": pth, "tmp": tmp}


def check_outputs(preds, vec, pair_ids=None) -> dict[str, tuple[float, float, float]]:
    """Per field ``(max, p99, median)`` of the relative error; asserts the bounds."""
    stats = {}
    for mine_name, ref_name, stride_key in FIELDS:
        s = vec[stride_key]
        errs = []
        for k in pair_ids if pair_ids is not None else range(len(vec["pairs"])):
            q = preds.index(*vec["pairs"][k])
            mine, ref = getattr(preds, mine_name)[q][::s, ::s], vec[ref_name][k]
            assert mine.shape == ref.shape, mine_name
            errs.append(relerr(mine, ref).flatten())
        e = torch.cat(errs).sort().values
        mx, p99, med = e[-1].item(), e[int(0.99 * e.numel())].item(), e.median().item()
        stats[mine_name] = (mx, p99, med)
        assert mx <= 5e-3, f"{mine_name}: max relative error {mx:.2e}"
        assert p99 <= 1e-4, f"{mine_name}: 99th percentile {p99:.2e}"
        assert med <= 1e-5, f"{mine_name}: median {med:.2e}"
    return stats


def test_refill_matches_state_dict_sum(parity):
    total = sum(t.double().sum().item() for t in parity["sd"].values())
    assert math.isclose(total, parity["vec"]["state_dict_sum"], rel_tol=0, abs_tol=1e-9)


def test_reference_loading_rules(parity):
    """The MASt3R loader swaps ManyAR_PatchEmbed for PatchEmbedDust3R and sets
    landscape_only=False; the network has 24-dim descriptors and their own confidence."""
    assert "ManyAR_PatchEmbed" in parity["manifest"]["args"]
    cfg = parse_constructor_string(parity["manifest"]["args"])
    assert (cfg.patch_embed_cls, cfg.landscape_only) == ("PatchEmbedDust3R", False)
    assert (cfg.head_type, cfg.desc_dim, cfg.two_confs, cfg.desc_conf) == (
        "catmlp+dpt", 24, True, ("exp", 0.0, math.inf))


def test_end_to_end_parity_from_released_pth(parity, parity_dir):
    vec = parity["vec"]
    preds = all_pair_outputs(load_model(parity["pth"]), vec, parity_dir / "images")
    check_outputs(preds, vec)
    # the descriptors are unit vectors; dropping them frees the four fields
    assert torch.allclose(preds.desc_1[0].norm(dim=-1), torch.ones(()), atol=1e-5)
    preds.drop_descriptors()
    assert not preds.has_descriptors and preds.desc_conf_2 is None


def test_hub_layout(parity):
    """config.json (Infinity tokens, MASt3R keys) + model.safetensors without the DPT aliases."""
    from safetensors.torch import save_file

    cfg = parse_constructor_string(parity["manifest"]["args"])
    hub = parity["tmp"] / "hub"
    hub.mkdir()
    conf = {
        "conf_mode": ["exp", 1, math.inf], "depth_mode": ["exp", -math.inf, math.inf],
        "desc_conf_mode": ["exp", 0, math.inf], "desc_mode": "norm", "two_confs": True,
        "dec_depth": cfg.dec_depth, "dec_embed_dim": cfg.dec_embed_dim, "dec_num_heads": cfg.dec_num_heads,
        "enc_depth": cfg.enc_depth, "enc_embed_dim": cfg.enc_embed_dim, "enc_num_heads": cfg.enc_num_heads,
        "head_type": "catmlp+dpt", "img_size": [512, 512], "output_mode": "pts3d+desc24",
        "patch_embed_cls": "ManyAR_PatchEmbed", "pos_embed": "RoPE100",
    }
    text = json.dumps(conf, sort_keys=True, indent=2)
    assert "Infinity" in text
    (hub / "config.json").write_text(text)
    save_file({k: v.contiguous() for k, v in parity["sd"].items() if ".layer_rn." not in k},
              str(hub / "model.safetensors"))
    ref = load_model(parity["pth"])
    for source in (hub, hub / "model.safetensors"):
        m = load_model(source)
        assert m.config == ref.config
        assert_same_weights(m, ref)
    check_outputs(first_pair_outputs(m, parity["vec"]), parity["vec"], pair_ids=[0])


def test_convert_command(parity):
    from pointmap.cli import main

    out = parity["tmp"] / "converted.safetensors"
    assert main(["convert", str(parity["pth"]), str(out)]) == 0
    m = load_model(out)
    ref = load_model(parity["pth"])
    assert m.config == ref.config
    assert_same_weights(m, ref)
    check_outputs(first_pair_outputs(m, parity["vec"]), parity["vec"], pair_ids=[0])
    back = parity["tmp"] / "back.pth"  # and back to the released layout
    save_reference_pth(m, back)
    assert "AsymmetricMASt3R(" in torch.load(back, weights_only=False)["args"].model
    b = load_model(back)
    assert b.config == m.config
    assert_same_weights(b, m)


def test_descriptors_can_be_left_out_or_stored_smaller(parity):
    from pointmap.inference import infer_pairs

    vec = parity["vec"]
    model = load_model(parity["pth"])
    imgs = [im["img"] for im in vec["images"]]
    pair = [tuple(vec["pairs"][0])]
    none = infer_pairs(model, imgs, pair, device="cpu", descriptors=False)
    assert not none.has_descriptors and none.desc_1 is None
    half = infer_pairs(model, imgs, pair, device="cpu", desc_dtype=torch.float16)
    assert half.desc_1[0].dtype == torch.float16 and half.pts3d_1[0].dtype == torch.float32
    s = vec["desc_stride"]
    assert (half.desc_1[0][::s, ::s].float() - vec["desc_1"][0]).abs().max() < 1e-3
