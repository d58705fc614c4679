"""Network structure: released architectures, attention twins, shapes, RoPE."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pointmap.model import DUSt3R, ModelConfig, parse_constructor_string
from pointmap.model.config import config_to_constructor_string
from pointmap.model.layers import RoPE2D, patch_positions

TINY = ModelConfig(
    img_size=(64, 64), enc_embed_dim=32, enc_depth=2, enc_num_heads=2,
    dec_embed_dim=32, dec_depth=4, dec_num_heads=2, head_type="dpt",
    dpt_layer_dims=(8, 16, 16, 32), dpt_feature_dim=16, dpt_last_dim=16,
)


@pytest.mark.parametrize("name", ["manifest_224_linear", "manifest_512_linear", "manifest_512_dpt",
                                  "manifest_mast3r_512"])
def test_released_architectures_have_the_manifest_keys(parity_dir, name):
    manifest = json.loads((parity_dir / name / "manifest.json").read_text())
    cfg = parse_constructor_string(manifest["args"])
    with torch.device("meta"):
        model = DUSt3R(cfg)
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert keys == manifest["keys"]
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["num_params"]


def test_constructor_string_round_trip():
    s = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', "
         "img_size=(512, 512), head_type='dpt', output_mode='pts3d', depth_mode=('exp', -inf, inf), "
         "conf_mode=('exp', 1, inf), enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, "
         "dec_embed_dim=768, dec_depth=12, dec_num_heads=12, landscape_only=False)")
    cfg = parse_constructor_string(s)
    assert cfg == ModelConfig(patch_embed_cls="ManyAR_PatchEmbed")
    assert cfg.depth_mode == ("exp", -math.inf, math.inf)
    assert parse_constructor_string(config_to_constructor_string(cfg)) == cfg


@pytest.mark.parametrize("bad, msg", [
    ("__import__('os').system('echo hi')", "not a simple call"),
    ("os.system('x')", "not a simple call"),
    ("Evil(enc_depth=2)", "not a DUSt3R model"),
    ("AsymmetricCroCo3DStereo(enc_depth=open('x'))", "not a literal"),
    ("AsymmetricCroCo3DStereo(head_type='transformer')", "head_type"),
    ("AsymmetricCroCo3DStereo(enc_depth=", "cannot parse"),
])
def test_constructor_string_is_parsed_not_evaluated(bad, msg):
    from pointmap.errors import CheckpointError

    with pytest.raises(CheckpointError, match=msg):
        parse_constructor_string(bad)


def test_rope_matches_formula():
    D, base = 16, 100.0
    pos = patch_positions(3, 4)
    t = torch.randn(1, 1, 12, D, dtype=torch.float64)
    cos, sin = RoPE2D(base).tables(pos, D, torch.float64)
    out = RoPE2D.apply(t, cos, sin)
    q = D // 4
    w = base ** (-torch.arange(q, dtype=torch.float64) / q)
    for n in range(12):
        for half in range(2):
            h = t[0, 0, n, half * 2 * q:(half + 1) * 2 * q]
            u, v = h[:q], h[q:]
            th = pos[n, half] * w
            exp = torch.cat([u * th.cos() - v * th.sin(), v * th.cos() + u * th.sin()])
            torch.testing.assert_close(out[0, 0, n, half * 2 * q:(half + 1) * 2 * q], exp, atol=1e-6, rtol=0)


@pytest.mark.parametrize("head", ["linear", "dpt"])
def test_sdpa_agrees_with_explicit_attention(head):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY.__dict__, "head_type": head})
    model = DUSt3R(cfg).eval()
    v1 = {"img": torch.randn(2, 3, 48, 64)}
    v2 = {"img": torch.randn(2, 3, 48, 64)}
    with torch.no_grad():
        a1, a2 = model(v1, v2)
        b1, b2 = model.set_attention("math")(v1, v2)
        model.set_attention("sdpa")
        twin = DUSt3R(cfg, attention="math").eval()
        twin.load_state_dict(model.state_dict())
        d1, _ = twin(v1, v2)
    torch.testing.assert_close(a1["pts3d"], b1["pts3d"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a2["conf"], b2["conf"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d1["pts3d"], b1["pts3d"])
    assert {m.impl for m in twin.modules() if hasattr(m, "impl")} == {"math"}
    # and the explicit twin differs from a perturbed model: the comparison can fail
    with torch.no_grad():
        model.enc_blocks[0].attn.proj.weight.mul_(1.5)
        c1, _ = model(v1, v2)
    assert not torch.allclose(a1["pts3d"], c1["pts3d"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hw", [(48, 64), (64, 48), (80, 32), (48, 80)])
def test_any_multiple_of_16_landscape_and_portrait(hw):
    """Odd token counts exercise the DPT crop; output is at full resolution, conf > 1."""
    torch.manual_seed(0)
    model = DUSt3R(TINY).eval()
    H, W = hw
    with torch.no_grad():
        p1, p2 = model({"img": torch.randn(1, 3, H, W)}, {"img": torch.randn(1, 3, H, W)})
    assert p1["pts3d"].shape == (1, H, W, 3) and p2["pts3d_in_other_view"].shape == (1, H, W, 3)
    assert (p1["conf"] > 1).all() and (p2["conf"] > 1).all()


def test_mixed_shapes_forward_and_shape_errors():
    model = DUSt3R(TINY).eval()
    with torch.no_grad():
        p1, p2 = model({"img": torch.randn(1, 3, 48, 64)}, {"img": torch.randn(1, 3, 64, 48)})
    assert p1["pts3d"].shape == (1, 48, 64, 3) and p2["pts3d_in_other_view"].shape == (1, 64, 48, 3)
    with pytest.raises(ValueError, match="multiple of the 16-pixel"):
        model({"img": torch.randn(1, 3, 50, 64)}, {"img": torch.randn(1, 3, 50, 64)})


def test_exp_depth_and_conf_postprocess():
    from pointmap.model.heads import postprocess

    out = torch.zeros(1, 4, 1, 2)
    out[0, :3, 0, 0] = torch.tensor([3.0, 0.0, 4.0])  # |xyz| = 5
    out[0, 3, 0, 0] = math.log(2.0)
    pts, conf = postprocess(out, ("exp", -math.inf, math.inf), ("exp", 1.0, math.inf))
    torch.testing.assert_close(pts[0, 0, 0], torch.tensor([3.0, 0.0, 4.0]) / 5 * math.expm1(5.0))
    assert conf[0, 0, 0].item() == pytest.approx(3.0)
    assert torch.equal(pts[0, 0, 1], torch.zeros(3)) and conf[0, 0, 1].item() == pytest.approx(2.0)
