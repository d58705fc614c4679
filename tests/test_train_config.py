"""The typed training config: nested sections, one dataclass per dataset kind, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pointmap.errors import ConfigError, PointmapError
from pointmap.model import ModelConfig
from pointmap.train.config import LossConfig, TrainConfig, load_train_config
from pointmap.train.specs import Co3dData, DatasetSpec, SceneFolderData, SyntheticData, SyntheticPoolData
from pointmap.train.synthetic.pool import PoolConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
ARCH = dict(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=2, dec_num_heads=2,
            head_type="linear", img_size=[64, 64])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_round_trip(path, tmp_path):
    cfg = load_train_config(path)
    d = cfg.to_dict()
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(d))
    assert load_train_config(again).to_dict() == d
    assert all(isinstance(s, DatasetSpec) for s in cfg.data.train + cfg.data.test)


def test_sections_are_typed():
    cfg = TrainConfig.from_dict({
        "model": {"arch": ARCH, "freeze": "encoder"},
        "criterion": {"train": {"type": "regr3d"}},
        "data": {"train": [{"kind": "co3d", "root": "r", "mask_bg": "rand", "num_pairs": 5},
                           {"kind": "scene_folder", "root": "s", "max_gap": 2},
                           {"kind": "synthetic", "engine": {"n_views": 4}}],
                 "batch_size": 3},
        "optimizer": {"lr": "1e-4"},  # YAML 1.1 reads 1e-4 without a dot as a string
        "schedule": {"total_steps": 10, "min_lr": 0},
    })
    assert cfg.model.arch == ModelConfig.from_dict(ARCH)
    assert cfg.criterion.train == LossConfig(type="regr3d") and cfg.criterion.test.type == "scale_shift_inv"
    assert cfg.optimizer.lr == 1e-4 and cfg.data.batch_size == 3
    co3d, folder, synth = cfg.data.train
    assert isinstance(co3d, Co3dData) and co3d.mask_bg == "rand" and co3d.num_pairs == 5
    assert isinstance(folder, SceneFolderData) and folder.max_gap == 2
    assert isinstance(synth, SyntheticData) and synth.engine.n_views == 4


def test_pool_entry_types_engine_and_pool():
    spec = DatasetSpec.from_dict({"kind": "synthetic_pool", "num_pairs": 16, "engine": {"n_views": 5},
                                  "pool": {"n_scenes": 4, "refresh_every": 3, "refresh_scenes": 1}})
    assert isinstance(spec, SyntheticPoolData)
    assert spec.engine.n_views == 5 and spec.pool == PoolConfig(n_scenes=4, refresh_every=3, refresh_scenes=1)
    assert DatasetSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="only be"):
        spec.build([(48, 48)])


def test_synthetic_entry_takes_the_run_resolution_and_seed():
    spec = DatasetSpec.from_dict({"kind": "synthetic", "split": "val", "num_pairs": 3,
                                  "engine": {"n_views": 3, "shadows": False}})
    ds = spec.build([(48, 32), (32, 32)], seed=5)
    engine = ds.base.config
    assert engine.resolutions == [(48, 32), (32, 32)] and engine.seed == 5 and engine.split == "val"
    assert len(ds) == 3 and ds.resolutions == [(48, 32), (32, 32)]


@pytest.mark.parametrize("entry, message", [
    ({"kind": "nerf", "root": "x"}, "use one of"),
    ({"kind": "co3d"}, "root"),
    ({"kind": "co3d", "root": "x", "mask_bg": "sometimes"}, "mask_bg"),
    ({"kind": "scene_folder", "root": "x", "options": {"max_gap": 1}}, "unknown fields"),
    ({"kind": "synthetic", "engine": {"resolution": [64, 64]}}, "run's resolution"),
    ({"kind": "synthetic", "engine": {"n_views": 1}}, "n_views"),
    ({"kind": "synthetic_pool", "pool": {"n_scenes": 0}}, "n_scenes"),
    ("co3d", "mapping"),
])
def test_bad_dataset_entries(entry, message):
    with pytest.raises(ConfigError, match=message):
        DatasetSpec.from_dict(entry)


@pytest.mark.parametrize("d, message", [
    ({"model": {"arch": ARCH}, "optimizer": {"learning_rate": 1}}, "optimizer.learning_rate"),
    ({"model": {"arch": ARCH}, "lr": 1e-4}, r"\['lr'\]"),
    ({"model": {"arch": {**ARCH, "bogus": 1}}}, "model.arch"),
    ({"model": {"arch": ARCH, "freeze": "all"}}, "model.freeze"),
    ({"model": {}}, "model.init"),
    ({"model": {"arch": ARCH}, "criterion": {"test": {"type": "l1"}}}, "criterion type"),
    ({"model": {"arch": ARCH}, "schedule": {"min_lr": "x"}}, "schedule.min_lr must be a number"),
    ({"model": {"arch": ARCH}, "data": {"train": {"kind": "co3d"}}}, "data.train must be a list"),
    ({"model": {"arch": ARCH}, "amp": "fp16"}, "amp"),
])
def test_bad_configs_name_the_key(d, message):
    with pytest.raises(ConfigError, match=message) as info:
        TrainConfig.from_dict(d)
    assert isinstance(info.value, PointmapError)


def test_overrides_reach_nested_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": ARCH},
                                    "data": {"train": [{"kind": "synthetic_pool", "pool": {"n_scenes": 8, "refresh_scenes": 2}}]}}))
    cfg = load_train_config(path, ["data.train.0.pool.refresh_every=7", "optimizer.lr=3e-4", "seed=4"])
    assert cfg.data.train[0].pool.refresh_every == 7 and cfg.data.train[0].pool.n_scenes == 8
    assert cfg.optimizer.lr == 3e-4 and cfg.seed == 4
    with pytest.raises(ConfigError, match="data.train.3"):
        load_train_config(path, ["data.train.3.num_pairs=1"])
