"""FSDP training on CPU (two gloo processes): same updates as one process on the combined batch,
exact resume, and resume checkpoints exchangeable with unsharded runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from spawn_ranks import free_port, spawn_ranks
from train_scenes import tiny_train_config, write_plane_scene

from pointmap.errors import ConfigError
from pointmap.train.config import TrainConfig
from pointmap.train.parallel import setup_distributed
from pointmap.train.runlog import read_log
from pointmap.train.trainer import train

# a DPT head: covers the aliased ``layer_rn`` keys of the full state dicts (dec_depth >= 4)
DPT = dict(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=4,
           dec_num_heads=2, head_type="dpt", img_size=[64, 64], dpt_layer_dims=[8, 8, 16, 16],
           dpt_feature_dim=16, dpt_last_dim=8)
# 8 pairs, 2 pairs per iteration (2 ranks x 1 or 1 x 2), 2 iterations per step -> 2 steps per epoch
KW = dict(model=DPT, accum_iter=2, total_steps=4, warmup_steps=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_log(run / "log.jsonl") if r["kind"] == "train"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoint-final.safetensors")


def _assert_same_weights(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, worst


def _worker(rank: int, world: int, port: int, jobs: list[dict]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    setup_distributed()
    try:
        for job in jobs:
            if "copy" in job:  # keep a resume checkpoint before the next run overwrites it
                if rank == 0:
                    src, dst = map(Path, job["copy"])
                    dst.mkdir()
                    for f in ("checkpoint-last.pt", "log.jsonl"):
                        shutil.copy(src / f, dst)
                torch.distributed.barrier()
                continue
            res = train(TrainConfig.from_dict(job))
            if rank == 0:
                torch.save({"status": res.status, "step": res.step, "best": res.best_test},
                           Path(job["output_dir"]) / "result.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Single-process runs (batch 2) and FSDP runs (2 ranks x batch 1) of the same schedule.

    * ``single``: uninterrupted, batch 2, with evaluation; ``fsdp``: the same on 2 ranks;
    * ``fsdp_resumed``: FSDP, stopped after step 3, resumed to the end;
    * ``single_to_fsdp``: stopped after step 3 as a single process, resumed under FSDP;
    * ``fsdp_to_single``: stopped after step 3 under FSDP, resumed as a single process.
    """
    root = tmp_path_factory.mktemp("fsdp")
    scene = root / "scene"
    write_plane_scene(scene)
    data = [{"kind": "scene_folder", "root": str(scene), "num_pairs": 8, "color_jitter": False,
             "max_gap": 1}]
    test = [{**data[0], "num_pairs": 2}]

    def cfg(name: str, world: int, **kw) -> TrainConfig:
        return tiny_train_config(scene, root / name, batch_size=2 // world, parallel="fsdp" if world > 1 else "ddp",
                                 train_data=data, **{**KW, **kw})

    # interruptions after step 3: in the middle of the second epoch
    train(cfg("single", 1, test_data=test, eval_freq=1))
    train(cfg("single_to_fsdp", 1, stop_at_step=3))
    jobs = [cfg("fsdp", 2, test_data=test, eval_freq=1).to_dict(),
            cfg("fsdp_resumed", 2, stop_at_step=3).to_dict(),
            {"copy": [str(root / "fsdp_resumed"), str(root / "fsdp_to_single")]},
            cfg("fsdp_resumed", 2).to_dict(),
            cfg("single_to_fsdp", 2).to_dict()]
    shutil.copytree(root / "single_to_fsdp", root / "single_step3")

    def make_args(attempt: int) -> tuple:
        if attempt:  # a crashed run: drop what its ranks wrote, restore the step-3 single run
            for name in ("fsdp", "fsdp_resumed", "fsdp_to_single", "single_to_fsdp"):
                shutil.rmtree(root / name, ignore_errors=True)
            shutil.copytree(root / "single_step3", root / "single_to_fsdp")
        return 2, free_port(), jobs

    spawn_ranks(_worker, make_args, 2, root / "faults")
    shutil.copy(root / "fsdp_to_single" / "checkpoint-last.pt", root / "fsdp_step3.pt")
    train(cfg("fsdp_to_single", 1))
    return root


def test_fsdp_matches_single_process_on_combined_batch(runs):
    ref = _losses(runs / "single")
    assert len(ref) == 4 and ref[-1] != ref[0]
    np.testing.assert_allclose(_losses(runs / "fsdp"), ref, rtol=0, atol=1e-5)
    w_fsdp, w_ref = _weights(runs / "fsdp"), _weights(runs / "single")
    _assert_same_weights(w_fsdp, w_ref)
    # the training moved the weights (the comparison above is not between two initial states)
    from pointmap.model import DUSt3R, ModelConfig

    torch.manual_seed(0)
    init = DUSt3R(ModelConfig.from_dict(DPT)).state_dict()
    assert max(float((w_ref[k] - init[k]).abs().max()) for k in w_ref) > 1e-3
    # evaluation ran on the sharded model; rank 0 kept the best model
    got = torch.load(runs / "fsdp" / "result.pt", weights_only=True)
    want_best = min(r["loss_med"] for r in read_log(runs / "single" / "log.jsonl") if r["kind"] == "test")
    assert got["status"] == "done" and got["step"] == 4
    assert got["best"] == pytest.approx(want_best, abs=1e-5)
    _assert_same_weights(load_file(runs / "fsdp" / "checkpoint-best.safetensors"),
                         load_file(runs / "single" / "checkpoint-best.safetensors"))


def test_fsdp_resume_reproduces_uninterrupted_run(runs):
    ref = _losses(runs / "fsdp")
    np.testing.assert_allclose(_losses(runs / "fsdp_resumed"), ref, rtol=0, atol=1e-6)
    _assert_same_weights(_weights(runs / "fsdp_resumed"), _weights(runs / "fsdp"), atol=1e-6)


def test_resume_checkpoints_are_exchangeable(runs):
    """A single-process checkpoint resumes under FSDP and vice versa (same file format)."""
    ref = _weights(runs / "single")
    for name in ("single_to_fsdp", "fsdp_to_single"):
        np.testing.assert_allclose(_losses(runs / name), _losses(runs / "single"), rtol=0, atol=1e-5)
        _assert_same_weights(_weights(runs / name), ref)
    st = torch.load(runs / "fsdp_step3.pt", weights_only=True)
    assert st["step"] == 3 and isinstance(next(iter(st["optimizer"]["state"])), int)
    assert "downstream_head1.dpt.scratch.layer_rn.0.weight" in st["model"]  # same keys as DUSt3R


def test_parallel_option_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="parallel"):
        tiny_train_config(tmp_path, tmp_path / "run", parallel="zero")
