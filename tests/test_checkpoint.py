"""Checkpoint loading: formats, key mapping, and clear errors for bad files."""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import zipfile

import pytest
import torch

from pointmap.errors import CheckpointError
from pointmap.model import DUSt3R, ModelConfig, load_model, load_weights, save_model, save_reference_pth
from pointmap.model.config import config_to_constructor_string

CFG = ModelConfig(
    img_size=(64, 64), enc_embed_dim=32, enc_depth=2, enc_num_heads=2,
    dec_embed_dim=32, dec_depth=4, dec_num_heads=2, head_type="dpt",
    dpt_layer_dims=(8, 16, 16, 32), dpt_feature_dim=16, dpt_last_dim=16,
)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return DUSt3R(CFG).eval()


def _same(a, b):
    for k, v in a.state_dict().items():
        if k != "mask_token":
            assert torch.equal(v, b.state_dict()[k]), k


def test_pth_round_trip(model, tmp_path):
    p = save_reference_pth(model, tmp_path / "m.pth")
    _same(load_model(p), model)


def test_own_format_round_trip_and_fp16(model, tmp_path):
    p = save_model(model, tmp_path / "m.safetensors")
    _same(load_model(p), model)
    h = save_model(model, tmp_path / "h.safetensors", dtype=torch.float16)
    assert os.path.getsize(h) < 0.6 * os.path.getsize(p)
    m16 = load_model(h)
    assert next(m16.parameters()).dtype == torch.float32
    w, w16 = model.dec_blocks[0].mlp.fc1.weight, m16.dec_blocks[0].mlp.fc1.weight
    torch.testing.assert_close(w16, w, rtol=1e-3, atol=1e-4)


def test_croco_style_init_copies_decoder_and_ignores_mask_token(model):
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("dec_blocks2.") and k != "mask_token"}
    fresh = DUSt3R(CFG)
    rep = load_weights(fresh, sd)
    assert any(k.startswith("dec_blocks2.") for k in rep.filled)
    for a, b in zip(fresh.dec_blocks.parameters(), fresh.dec_blocks2.parameters()):
        assert torch.equal(a, b)


def test_aliased_dpt_keys_either_name(model, tmp_path):
    sd = model.state_dict()
    only_alias = {k: v for k, v in sd.items() if not ("scratch.layer" in k and "_rn.weight" in k and ".layer_rn." not in k)}
    fresh = DUSt3R(CFG)
    load_weights(fresh, only_alias)
    _same(fresh, model)


def test_module_prefix_is_stripped(model):
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    fresh = DUSt3R(CFG)
    load_weights(fresh, sd)
    _same(fresh, model)


def test_key_errors_list_the_keys(model):
    sd = dict(model.state_dict())
    sd.pop("enc_norm.weight")
    sd["extra.weight"] = torch.zeros(3)
    sd["decoder_embed.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as ei:
        load_weights(DUSt3R(CFG), sd)
    msg = str(ei.value)
    assert "enc_norm.weight" in msg and "extra.weight" in msg and "decoder_embed.bias" in msg
    assert "(7,)" in msg


def test_truncated_and_non_checkpoint_files(model, tmp_path):
    p = save_reference_pth(model, tmp_path / "m.pth")
    data = p.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pth"):
        load_model(tmp_path / "trunc.pth")
    (tmp_path / "notes.pth").write_text("hello, I am not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_model(tmp_path / "notes.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "empty.pth")
    st = save_model(model, tmp_path / "m.safetensors")
    (tmp_path / "t.safetensors").write_bytes(st.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="t.safetensors"):
        load_model(tmp_path / "t.safetensors")


def test_foreign_checkpoint(tmp_path):
    torch.save({"state": {"w": torch.zeros(2)}, "epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a DUSt3R checkpoint"):
        load_model(tmp_path / "other.pth")
    torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(model="ResNet(depth=50)")}, tmp_path / "r.pth")
    with pytest.raises(CheckpointError, match="not a DUSt3R model"):
        load_model(tmp_path / "r.pth")
    torch.save({"w": torch.zeros(2)}, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="no architecture"):
        load_model(tmp_path / "bare.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {}, "args": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="execute code"):
        load_model(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned_marker").exists()


def test_pickle_refusal_advice_agrees_with_convert(model, tmp_path, monkeypatch, capsys):
    """``pointmap convert`` refuses the pickled file with the same message, which says so; the
    advice it gives (re-save the state dict and the constructor string) gives a file that loads."""
    import argparse

    from pointmap.cli import main
    from pointmap.model.config import config_to_constructor_string

    monkeypatch.chdir(tmp_path)
    sd = model.state_dict()
    torch.save({"model": sd, "args": _Evil()}, tmp_path / "evil.pth")
    assert main(["convert", str(tmp_path / "evil.pth"), str(tmp_path / "out.safetensors")]) != 0
    err = capsys.readouterr().err
    assert "execute code" in err and "'pointmap convert' included" in err and "Traceback" not in err
    assert not (tmp_path / "pwned_marker").exists() and not (tmp_path / "out.safetensors").exists()
    args = argparse.Namespace(model=config_to_constructor_string(model.config))
    torch.save({"model": sd, "args": args}, tmp_path / "resaved.pth")
    assert main(["convert", str(tmp_path / "resaved.pth"), str(tmp_path / "out.safetensors")]) == 0
    back = load_model(tmp_path / "out.safetensors").state_dict()
    assert all(torch.equal(back[k], v) for k, v in sd.items() if k in back)


def test_missing_file_and_bundled_model(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pth")
    import pointmap.model.checkpoint as ck

    monkeypatch.setattr(ck, "_WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="bundled model 'default'"):
        load_model("default")


def test_hub_id_uses_huggingface_hub_on_local_files(model, tmp_path, monkeypatch):
    """The hub path is real code, exercised on local files (no network in tests)."""
    hub = pytest.importorskip("huggingface_hub")
    folder = tmp_path / "snap"
    folder.mkdir()
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in model.state_dict().items() if ".layer_rn." not in k}
    save_file(sd, str(folder / "model.safetensors"))
    conf = {**CFG.to_dict(), "pos_embed": "RoPE100"}
    conf.pop("rope_base")
    (folder / "config.json").write_text(json.dumps(conf))
    calls = []

    def fake_download(repo_id, filename, **kw):
        calls.append((repo_id, filename))
        return str(folder / filename)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    m = load_model("naver/tiny_test_model")
    _same(m, model)
    assert calls == [("naver/tiny_test_model", "config.json"), ("naver/tiny_test_model", "model.safetensors")]

    def offline(*a, **k):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(hub, "hf_hub_download", offline)
    with pytest.raises(CheckpointError, match="Download config.json and model.safetensors"):
        load_model("naver/tiny_test_model")


def test_hub_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(tmp_path)


def test_convert_cli_errors_are_messages(tmp_path, capsys):
    from pointmap.cli import main

    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.safetensors")]) == 2
    assert "missing.pth" in capsys.readouterr().err


def _hub_snapshot(model, folder):
    """``model`` in the hub layout (config.json + model.safetensors without pointmap metadata)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if ".layer_rn." not in k}
    save_file(sd, str(folder / "model.safetensors"))
    conf = {**CFG.to_dict(), "pos_embed": "RoPE100"}
    conf.pop("rope_base")
    (folder / "config.json").write_text(json.dumps(conf))
    return folder


def test_short_names_map_to_the_released_hub_ids():
    from pointmap.model.checkpoint import RELEASED_MODELS

    assert {k: v.hub_id for k, v in RELEASED_MODELS.items()} == {
        "dust3r-512-dpt": "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt",
        "dust3r-512-linear": "naver/DUSt3R_ViTLarge_BaseDecoder_512_linear",
        "dust3r-224-linear": "naver/DUSt3R_ViTLarge_BaseDecoder_224_linear",
        "mast3r-512": "naver/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric",
    }


@pytest.mark.parametrize("layout", ["released_pth", "short_pth", "short_safetensors", "hub_folder"])
def test_short_name_loads_a_file_in_the_weights_folder(model, tmp_path, monkeypatch, layout):
    """A short name finds the checkpoint in $POINTMAP_WEIGHTS under any documented name; the hub
    is never asked."""
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("POINTMAP_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(hub, "hf_hub_download", lambda *a, **k: pytest.fail("hub was asked"))
    if layout == "released_pth":
        save_reference_pth(model, tmp_path / "DUSt3R_ViTLarge_BaseDecoder_224_linear.pth")
    elif layout == "short_pth":
        save_reference_pth(model, tmp_path / "dust3r-224-linear.pth")
    elif layout == "short_safetensors":
        save_model(model, tmp_path / "dust3r-224-linear.safetensors")
    else:
        _hub_snapshot(model, tmp_path / "dust3r-224-linear")
    _same(load_model("dust3r-224-linear"), model)


def test_short_name_downloads_its_hub_id(model, tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("POINTMAP_WEIGHTS", str(tmp_path / "empty"))
    snap = _hub_snapshot(model, tmp_path / "snap")
    calls = []

    def fake_download(repo_id, filename, **kw):
        calls.append((repo_id, filename))
        return str(snap / filename)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    _same(load_model("dust3r-512-dpt"), model)
    assert {c[0] for c in calls} == {"naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt"}


def test_short_name_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    folder = tmp_path / "w"
    monkeypatch.setenv("POINTMAP_WEIGHTS", str(folder))

    def offline(*a, **k):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(hub, "hf_hub_download", offline)
    with pytest.raises(CheckpointError) as err:
        load_model("dust3r-512-linear")
    msg = str(err.value)
    assert str(folder / "dust3r-512-linear.safetensors") in msg
    assert str(folder / "DUSt3R_ViTLarge_BaseDecoder_512_linear.pth") in msg
    assert "POINTMAP_WEIGHTS" in msg and "Offline?" in msg and "\n" not in msg


def test_short_name_without_the_hub_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setenv("POINTMAP_WEIGHTS", str(tmp_path))
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(CheckpointError, match=r'-e "\.\[hub\]"') as err:
        load_model("dust3r-224-linear")
    assert str(tmp_path / "dust3r-224-linear.safetensors") in str(err.value)


def test_weights_folder_default(monkeypatch, tmp_path):
    from pointmap.model.checkpoint import weights_dir

    monkeypatch.delenv("POINTMAP_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights_dir() == tmp_path / ".cache" / "pointmap" / "weights"


def test_unknown_name_lists_the_model_names():
    with pytest.raises(CheckpointError, match="dust3r-512-dpt, dust3r-512-linear, dust3r-224-linear, mast3r-512"):
        load_model("dust3r-512")
