"""Trainer acceptance tests on CPU with a tiny DUSt3R: overfitting, exact resume, DDP equivalence."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from spawn_ranks import free_port, spawn_ranks
from train_scenes import TINY, tiny_train_config, write_plane_scene

from pointmap.errors import ConfigError
from pointmap.train.batching import BatchedRandomSampler, collate_pairs
from pointmap.train.config import TrainConfig, load_train_config
from pointmap.train.losses import build_criterion
from pointmap.train.model_init import build_model, freeze_model, param_groups
from pointmap.train.parallel import setup_distributed
from pointmap.train.runlog import plot_loss_curve, read_log
from pointmap.train.schedule import lr_at
from pointmap.train.specs import build_mixture
from pointmap.train.trainer import forward_loss, main_train, train


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scene")
    write_plane_scene(root)
    return root


def test_lr_schedule():
    assert lr_at(0, 1.0, 0.0, 10, 100) == 0
    assert lr_at(5, 1.0, 0.0, 10, 100) == pytest.approx(0.5)
    assert lr_at(10, 1.0, 0.1, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 0.1, 10, 100) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: cos(pi/2) = 0
    assert lr_at(100, 1.0, 0.1, 10, 100) == pytest.approx(0.1)


def test_param_groups_and_freeze(scene, tmp_path):
    model = build_model(tiny_train_config(scene, tmp_path))
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = [names[id(p)] for p in groups[0]["params"]]
    no_decay = [names[id(p)] for p in groups[1]["params"]]
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0
    assert all(not n.endswith(".bias") and "norm" not in n for n in decay)
    assert "patch_embed.proj.bias" in no_decay and "enc_norm.weight" in no_decay
    assert "enc_blocks.0.attn.qkv.weight" in decay
    freeze_model(model, "encoder")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "enc_blocks.1.mlp.fc1.weight" in frozen and "patch_embed.proj.weight" in frozen
    assert "dec_blocks.0.attn.qkv.weight" not in frozen
    freeze_model(model, "encoder_decoder")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("downstream_head") for n in trainable)


def test_config_yaml_and_overrides(tmp_path, scene):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(tiny_train_config(scene, tmp_path / "run").to_dict()))  # JSON is YAML
    cfg = load_train_config(path, ["optimizer.lr=2e-4", "data.train.0.num_pairs=3", "amp=bf16"])
    assert cfg.optimizer.lr == 2e-4 and cfg.data.train[0].num_pairs == 3 and cfg.amp == "bf16"
    with pytest.raises(ConfigError, match="unknown training config keys"):
        load_train_config(path, ["learning_rate=1"])
    with pytest.raises(ConfigError, match="freeze"):
        load_train_config(path, ["model.freeze=all"])


def test_overfit_fixed_batch(scene, tmp_path):
    """2 pairs, batch 2: every step sees the same batch; the loss must fall clearly."""
    cfg = tiny_train_config(scene, tmp_path / "run", batch_size=2, total_steps=50, warmup_steps=3, lr=2e-3,
               log_every=10,
               train_data=[{"kind": "scene_folder", "root": str(scene), "num_pairs": 2, "color_jitter": False,
                            "max_gap": 1}])
    res = train(cfg)
    assert res.status == "done" and res.step == 50
    first, last = res.losses[0], float(np.mean(res.losses[-5:]))
    assert last < first - 0.5 * abs(first), (first, last)
    from pointmap.model import load_model

    m = load_model(tmp_path / "run" / "checkpoint-final.safetensors")
    assert m.config.enc_embed_dim == 32
    rows = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 10, 20, 30, 40, 50]
    pytest.importorskip("matplotlib")
    png = plot_loss_curve(tmp_path / "run" / "log.jsonl", tmp_path / "loss.png")
    assert png.stat().st_size > 1000


class _Kill(Exception):
    pass


def test_resume_reproduces_uninterrupted_run(scene, tmp_path):
    """4 pairs, batch 1, accum 2 -> 2 steps per epoch, 6 steps. Run B stops cleanly at step 3
    (mid-epoch), resumes, is killed at step 5 (last checkpoint at step 4) and resumes to the end."""
    kw = dict(total_steps=6, warmup_steps=2, accum_iter=2, save_every_steps=2)
    full = train(tiny_train_config(scene, tmp_path / "a", **kw))
    assert full.status == "done" and full.step == 6
    r1 = train(tiny_train_config(scene, tmp_path / "b", stop_at_step=3, **kw))
    assert r1.status == "stopped" and r1.step == 3

    def kill(step, loss):
        if step == 5:
            raise _Kill

    with pytest.raises(_Kill):
        train(tiny_train_config(scene, tmp_path / "b", **kw), step_callback=kill)
    r3 = train(tiny_train_config(scene, tmp_path / "b", **kw))
    assert r3.status == "done" and r3.step == 6
    la = [r["loss"] for r in read_log(tmp_path / "a" / "log.jsonl")]
    lb = [r["loss"] for r in read_log(tmp_path / "b" / "log.jsonl")]
    assert len(la) == len(lb) == 6
    np.testing.assert_allclose(lb, la, rtol=0, atol=1e-6)
    from safetensors.torch import load_file

    pa = load_file(tmp_path / "a" / "checkpoint-final.safetensors")
    pb = load_file(tmp_path / "b" / "checkpoint-final.safetensors")
    assert all(torch.allclose(pa[k], pb[k], atol=1e-6) for k in pa)


def test_time_budget_and_eval(scene, tmp_path):
    cfg = tiny_train_config(scene, tmp_path / "run", total_steps=1000, max_minutes=0.0, eval_freq=1,
               test_data=[{"kind": "scene_folder", "root": str(scene), "num_pairs": 2, "color_jitter": False,
                           "max_gap": 1}])
    res = train(cfg)
    assert res.status == "time_limit" and res.step == 1
    assert (tmp_path / "run" / "checkpoint-last.pt").exists()
    st = torch.load(tmp_path / "run" / "checkpoint-last.pt", weights_only=True)
    assert st["step"] == 1 and st["iter"] == 1
    # a stopped run has no final model file; its resume state loads as a model, architecture included
    assert not (tmp_path / "run" / "checkpoint-final.safetensors").exists()
    from pointmap.model import ModelConfig, load_model

    m = load_model(tmp_path / "run" / "checkpoint-last.pt")
    assert m.config == cfg.model.arch == ModelConfig.from_dict(TINY)
    own = m.state_dict()
    assert all(torch.equal(own[k], v) for k, v in st["model"].items())
    # a short full run with evaluation keeps the best model
    cfg = tiny_train_config(scene, tmp_path / "run2", total_steps=4, eval_freq=1,
               test_data=[{"kind": "scene_folder", "root": str(scene), "num_pairs": 2, "color_jitter": False,
                           "max_gap": 1}])
    res = train(cfg)
    assert math.isfinite(res.best_test)
    assert (tmp_path / "run2" / "checkpoint-best.safetensors").exists()
    assert any(r["kind"] == "test" for r in read_log(tmp_path / "run2" / "log.jsonl"))


def test_main_train_entry(scene, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(tiny_train_config(scene, tmp_path / "run", total_steps=2).to_dict()))
    res = main_train(path, ["amp=bf16", "tensorboard=true", "progress=true"])
    assert res.status == "done" and res.step == 2 and math.isfinite(res.losses[-1])
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


# ------------------------------------------------------------------------------------------------
# DDP: two gloo processes == one process on the combined batch
# ------------------------------------------------------------------------------------------------


def _grads(cfg: TrainConfig, rank: int, world: int, ddp: bool) -> torch.Tensor:
    model = build_model(cfg)
    freeze_model(model, "none")
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    ds = build_mixture(cfg.data.train, [(64, 48)], seed=cfg.seed)
    sampler = BatchedRandomSampler(len(ds), cfg.data.batch_size, 1, world, rank, seed=cfg.data.seed)
    keys = next(iter(sampler))
    loss, _ = forward_loss(net, build_criterion(cfg.criterion.train.spec()), collate_pairs([ds[k] for k in keys]),
                           torch.device("cpu"))
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    r, w, _ = setup_distributed()
    assert (r, w) == (rank, world)
    cfg = TrainConfig.from_dict(cfg_dict)
    g = _grads(cfg, rank, world, ddp=True)
    res = train(cfg)  # the trainer itself under DDP
    if rank == 0:
        torch.save({"grads": g, "losses": torch.tensor(res.losses)}, out)
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_match_single(scene, tmp_path):
    cfg_ddp = tiny_train_config(scene, tmp_path / "ddp", batch_size=1, total_steps=2, warmup_steps=1)
    out = tmp_path / "ddp.pt"

    def make_args(attempt: int) -> tuple:
        shutil.rmtree(tmp_path / "ddp", ignore_errors=True)  # a crashed run's partial output
        return 2, free_port(), cfg_ddp.to_dict(), str(out)

    spawn_ranks(_ddp_worker, make_args, 2, tmp_path / "faults")
    got = torch.load(out, weights_only=True)
    cfg_single = tiny_train_config(scene, tmp_path / "single", batch_size=2, total_steps=2, warmup_steps=1)
    ref = _grads(cfg_single, 0, 1, ddp=False)
    assert ref.abs().max() > 0
    torch.testing.assert_close(got["grads"], ref, rtol=1e-4, atol=1e-5)
    res = train(cfg_single)
    np.testing.assert_allclose(got["losses"].numpy(), res.losses, atol=1e-5)
    from safetensors.torch import load_file

    pa = load_file(tmp_path / "ddp" / "checkpoint-final.safetensors")
    pb = load_file(tmp_path / "single" / "checkpoint-final.safetensors")
    assert all(torch.allclose(pa[k], pb[k], atol=1e-5) for k in pa)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_train_config(path)
    assert cfg.data.train and cfg.optimizer.lr > 0 and cfg.data.batch_size >= 1


@pytest.mark.parametrize("head", ["linear", "dpt"])
def test_every_trainable_parameter_gets_a_gradient(head):
    """DDP runs without searching for unused parameters: after freeze_model every parameter that
    still requires a gradient must receive one from the loss."""
    from pointmap.model import DUSt3R, ModelConfig

    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=4, enc_num_heads=2, dec_embed_dim=32,
                      dec_depth=4, dec_num_heads=2, head_type=head)
    model = DUSt3R(cfg)
    frozen = freeze_model(model, "none")
    assert frozen == (1 if head == "linear" else 9)  # mask_token (+ 2 x 4 tensors of refinenet4's unit 1)
    g = torch.Generator().manual_seed(0)
    views = []
    for _ in range(2):
        pts = torch.randn(2, 48, 64, 3, generator=g)
        pts[..., 2] = pts[..., 2].abs() + 2
        views.append({"img": torch.rand(2, 3, 48, 64, generator=g) * 2 - 1, "pts3d": pts,
                      "valid_mask": torch.ones(2, 48, 64, dtype=torch.bool),
                      "camera_pose": torch.eye(4).expand(2, 4, 4).clone(),
                      "true_shape": torch.tensor([[48, 64]] * 2, dtype=torch.int32)})
    loss, _ = forward_loss(model, build_criterion({"type": "conf", "alpha": 0.2}), tuple(views), torch.device("cpu"))
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_run_log_is_strict_json_with_a_nan_loss(tmp_path):
    """A NaN or infinite value is logged as ``null`` (strict JSON parsers reject ``NaN``), and the
    loss curve still plots."""
    from pointmap.train.runlog import RunLogger

    log = RunLogger(tmp_path, enabled=True, tensorboard=False, resume_step=None)
    log.write({"kind": "train", "step": 1, "epoch": 0, "loss": 0.5})
    log.write({"kind": "train", "step": 2, "epoch": 0, "loss": float("nan"), "grad_norm": float("inf")})
    log.close()

    def refuse(c):
        raise ValueError(c)

    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=refuse) for line in lines]
    assert rows[1]["loss"] is None and rows[1]["grad_norm"] is None and rows[0]["loss"] == 0.5
    assert read_log(tmp_path / "log.jsonl") == rows
    pytest.importorskip("matplotlib")
    png = plot_loss_curve(tmp_path / "log.jsonl", tmp_path / "loss.png")
    assert png.stat().st_size > 0


def test_init_checkpoint_passes_on_its_confidence_threshold(scene, tmp_path):
    from pointmap.model import save_model
    from pointmap.model.checkpoint import recommended_threshold

    first = build_model(tiny_train_config(scene, tmp_path))
    first.recommended_conf_threshold = 1.25
    save_model(first, tmp_path / "init.safetensors")
    assert recommended_threshold(tmp_path / "init.safetensors") == 1.25
    cfg = tiny_train_config(scene, tmp_path)
    cfg.model.init = str(tmp_path / "init.safetensors")
    again = build_model(cfg)
    assert again.recommended_conf_threshold == 1.25
    assert build_model(tiny_train_config(scene, tmp_path)).recommended_conf_threshold == 3.0  # no init: default
