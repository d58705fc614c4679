"""The realistic engine served to the trainer: a mixture with the procedural engine, and the view
pool mixing both engines; tiny model, CPU, a tiny bank built in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointmap.errors import ConfigError
from pointmap.train.config import TrainConfig
from pointmap.train.realistic.capture import RealisticConfig
from pointmap.train.realistic.pool import RealisticViewPool
from pointmap.train.specs import DatasetSpec
from pointmap.train.synthetic.pool import PoolConfig
from pointmap.train.trainer import train

from realistic_bank import tiny_bank  # noqa: F401 - fixture

TINY = dict(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=2,
            dec_num_heads=2, head_type="linear", img_size=[32, 32])
PROCEDURAL = {"n_views": 4, "shadows": False, "n_textures": 8, "texture_size": 32, "photo_prob": 0.0}

pytestmark = pytest.mark.usefixtures("one_thread")


def _engine(bank) -> dict:
    return {"bank": str(bank), "n_views": 4, "bank_texture_size": 16, "covis_width": 16, "max_attempts": 2,
            "min_covisibility": 0.1}


def _cfg(out, train_data, steps=3) -> TrainConfig:
    return TrainConfig.from_dict(dict(
        model={"arch": dict(TINY)}, optimizer={"lr": 1e-3}, schedule=dict(min_lr=1e-5, total_steps=steps, warmup_steps=1),
        output_dir=str(out), log_every=1, progress=False, tensorboard=False, eval_freq=0, device="cpu",
        save_every_steps=0, data={"resolution": [[32, 32]], "batch_size": 2, "num_workers": 0, "train": train_data}))


def test_realistic_entry_needs_a_bank():
    with pytest.raises(ConfigError, match="asset bank"):
        DatasetSpec.from_dict({"kind": "realistic", "num_pairs": 4})


def test_spec_round_trips(tiny_bank):
    spec = DatasetSpec.from_dict({"kind": "realistic_pool", "engine": _engine(tiny_bank), "procedural_fraction": 0.5})
    again = DatasetSpec.from_dict(spec.to_dict())
    assert again == spec and again.engine.bank == str(tiny_bank)


def test_tiny_training_on_a_mixture_of_realistic_and_procedural(tmp_path, tiny_bank):
    data = [{"kind": "realistic", "num_pairs": 4, "engine": _engine(tiny_bank)},
            {"kind": "synthetic", "num_pairs": 2, "engine": PROCEDURAL}]
    res = train(_cfg(tmp_path / "mix", data))
    assert res.status == "done" and len(res.losses) == 3 and np.isfinite(res.losses).all()


def test_pool_mixes_both_engines_and_serves_exact_geometry(tiny_bank):
    cfg = RealisticConfig(**{**_engine(tiny_bank), **PROCEDURAL}, resolution=(32, 24))
    pool = RealisticViewPool(cfg, PoolConfig(n_scenes=6, render_chunk=6, refresh_every=0, refresh_scenes=0), procedural_fraction=0.5)
    engines = {pool.is_procedural(k) for k in range(6)}
    assert engines == {True, False}
    assert pool.n_valid_pairs > 0
    # procedural slots carry the procedural layouts' scenes, realistic ones the composer's: both render
    for s in range(6):
        assert float(pool.depth[s].gt(0).float().mean()) > 0.2
    v1, v2 = pool.sample(4)
    for v in (v1, v2):
        valid = v["valid_mask"]
        # world points unproject the depth exactly through the pose
        cam = torch.einsum("bhwj,bji->bhwi", v["pts3d"] - v["camera_pose"][:, None, None, :3, 3],
                           v["camera_pose"][:, :3, :3])
        torch.testing.assert_close(cam[..., 2][valid], v["depthmap"][valid], atol=1e-4, rtol=1e-4)


def test_tiny_training_from_the_mixed_pool(tmp_path, tiny_bank):
    data = [{"kind": "realistic_pool", "num_pairs": 8, "engine": {**_engine(tiny_bank), **PROCEDURAL},
             "pool": {"n_scenes": 4, "render_chunk": 4, "refresh_every": 2, "refresh_scenes": 1},
             "procedural_fraction": 0.5}]
    res = train(_cfg(tmp_path / "pool", data, steps=4))
    assert res.status == "done" and len(res.losses) == 4 and np.isfinite(res.losses).all()
