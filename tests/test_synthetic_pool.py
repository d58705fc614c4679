"""The device-resident synthetic view pool: exact geometry of served pairs, refresh schedule,
exact resume, and training from it (loss falls; an interrupted run resumes to the same curve)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pointmap.errors import PointmapError
from pointmap.train.config import TrainConfig
from pointmap.train.synthetic import SyntheticConfig
from pointmap.train.synthetic.pool import PoolConfig, SyntheticViewPool
from pointmap.train.runlog import read_log
from pointmap.train.trainer import train

TINY = dict(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=2,
            dec_num_heads=2, head_type="linear", img_size=[48, 48])
SMALL = SyntheticConfig(resolution=(48, 48), n_views=5, shadows=False, n_textures=8, texture_size=64,
                        photo_prob=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pool() -> SyntheticViewPool:
    return SyntheticViewPool(SMALL, PoolConfig(n_scenes=6, render_chunk=3, refresh_every=2, refresh_scenes=2))


def test_pairs_are_covisible_and_geometry_exact(pool):
    assert pool.n_valid_pairs > 0
    v1, v2 = pool.sample(8)
    assert v1["img"].shape == (8, 3, 48, 48) and v1["img"].min() >= -1 and v1["img"].max() <= 1
    for b in range(8):
        # pts3d is the unprojection of depth: back into the camera it gives z = depth, pixel = (u, v)
        for v in (v1, v2):
            P, K = v["camera_pose"][b], v["camera_intrinsics"][b]
            ok = v["valid_mask"][b]
            cam = (v["pts3d"][b] - P[:3, 3]) @ P[:3, :3]
            torch.testing.assert_close(cam[..., 2][ok], v["depthmap"][b][ok], rtol=1e-5, atol=1e-5)
            yy, xx = torch.nonzero(ok, as_tuple=True)
            uv = cam[ok] @ K.T
            torch.testing.assert_close(uv[:, 0] / uv[:, 2], xx.float(), rtol=0, atol=1e-3)
            torch.testing.assert_close(uv[:, 1] / uv[:, 2], yy.float(), rtol=0, atol=1e-3)
        # the pair overlaps: many of view 2's points land on view 1's surface
        P, K = v1["camera_pose"][b], v1["camera_intrinsics"][b]
        cam = (v2["pts3d"][b][v2["valid_mask"][b]] - P[:3, 3]) @ P[:3, :3]
        uv = cam @ K.T
        u, w = (uv[:, 0] / uv[:, 2]).round().long(), (uv[:, 1] / uv[:, 2]).round().long()
        inside = (cam[:, 2] > 0) & (u >= 0) & (u < 48) & (w >= 0) & (w < 48)
        d = v1["depthmap"][b][w[inside], u[inside]]
        agree = ((d - cam[inside, 2]).abs() < 0.03 * cam[inside, 2]).float().sum() / len(cam)
        assert agree >= 0.8 * SMALL.min_covisibility, (b, float(agree))


def test_refresh_replaces_oldest_scenes_and_resume_is_exact():
    cfg = PoolConfig(n_scenes=4, render_chunk=4, refresh_every=2, refresh_scenes=2)
    a = SyntheticViewPool(SMALL, cfg)
    assert a.slot_sample.tolist() == [0, 1, 2, 3]
    for _ in range(3):  # batches 1, 2 served; the 3rd refreshes slots 0 and 1
        a.sample(2)
    assert a.slot_sample.tolist() == [4, 5, 2, 3] and a.cursor == 2
    state = a.state_dict()
    b = SyntheticViewPool(SMALL, cfg, fill=False)
    b.load_state_dict(state)
    for _ in range(3):  # includes another refresh
        x1, x2 = a.sample(3)
        y1, y2 = b.sample(3)
        assert x1["idx"] == y1["idx"]
        for k in ("img", "pts3d", "camera_pose", "valid_mask"):
            torch.testing.assert_close(x1[k], y1[k], rtol=0, atol=1e-5)
            torch.testing.assert_close(x2[k], y2[k], rtol=0, atol=1e-5)
    assert a.slot_sample.tolist() == b.slot_sample.tolist() == [4, 5, 6, 7]


def test_ranks_and_splits_get_disjoint_scenes():
    from pointmap.train.synthetic import scene_id

    ids = {r: {scene_id(SMALL, k * 2 + r) for k in range(50)} for r in (0, 1)}
    assert not ids[0] & ids[1]
    with pytest.raises(PointmapError, match="refresh"):
        PoolConfig(n_scenes=2, refresh_scenes=3)


def _cfg(out, **kw) -> TrainConfig:
    schedule = dict(min_lr=1e-5, total_steps=kw.pop("total_steps", 6), warmup_steps=kw.pop("warmup_steps", 1))
    base = dict(model={"arch": dict(TINY)}, optimizer={"lr": kw.pop("lr", 1e-3)}, schedule=schedule,
                output_dir=str(out), log_every=1, progress=False, tensorboard=False, eval_freq=0,
                device="cpu", save_every_steps=2,
                data={"resolution": [[48, 48]], "batch_size": 4,
                      "train": [{"kind": "synthetic_pool", "num_pairs": 16,
                                 "engine": {"n_views": 5, "shadows": False, "n_textures": 8, "texture_size": 64,
                                            "photo_prob": 0.0},
                                 "pool": {"n_scenes": 4, "render_chunk": 4, "refresh_every": 3,
                                          "refresh_scenes": 1}}]})
    base.update(kw)
    return TrainConfig.from_dict(base)


class _Kill(Exception):
    pass


def test_training_from_pool_resumes_exactly(tmp_path):
    full = train(_cfg(tmp_path / "a"))
    assert full.status == "done" and full.step == 6

    def kill(step, loss):
        if step == 5:
            raise _Kill

    with pytest.raises(_Kill):
        train(_cfg(tmp_path / "b"), step_callback=kill)  # last checkpoint: step 4 (mid-epoch 2)
    st = torch.load(tmp_path / "b" / "checkpoint-last.pt", weights_only=True)
    assert st["step"] == 4 and st["pool"][0]["batches"] == 4
    again = train(_cfg(tmp_path / "b"))
    assert again.status == "done"
    la = [r["loss"] for r in read_log(tmp_path / "a" / "log.jsonl")]
    lb = [r["loss"] for r in read_log(tmp_path / "b" / "log.jsonl")]
    assert len(la) == len(lb) == 6
    np.testing.assert_allclose(lb, la, rtol=0, atol=1e-5)


def test_pool_loss_falls(tmp_path):
    """A pool that never refreshes is a fixed, small training set: the tiny model must fit it."""
    cfg = _cfg(tmp_path / "fit", total_steps=60, warmup_steps=5, lr=2e-3, save_every_steps=0)
    spec = cfg.data.train[0]
    spec.pool = dataclasses.replace(spec.pool, n_scenes=2, refresh_every=0)
    res = train(cfg)
    first, last = np.mean(res.losses[:5]), np.mean(res.losses[-5:])
    assert last < 0.8 * first, (first, last)


def test_pool_must_be_alone(tmp_path):
    cfg = _cfg(tmp_path / "x")
    cfg.data.train.append(cfg.data.train[0])
    with pytest.raises(Exception, match="only data.train"):
        train(cfg)
