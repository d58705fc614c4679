"""Distributed pair inference: two CPU processes (gloo) must reproduce single-process inference."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from spawn_ranks import free_port, spawn_ranks

from pointmap.distributed import infer_pairs_distributed, init_from_env, split_pairs
from pointmap.errors import PointmapError
from pointmap.inference import infer_pairs
from pointmap.model import DUSt3R, ModelConfig

WORLD = 2


def _tiny_model() -> DUSt3R:
    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=2, enc_num_heads=2,
                      dec_embed_dim=32, dec_depth=2, dec_num_heads=2, head_type="linear")
    return DUSt3R(cfg).eval()


def _images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shapes = [(48, 64), (64, 48), (48, 64), (64, 48), (48, 64)]
    return [torch.rand(3, h, w, generator=g) * 2 - 1 for h, w in shapes]


def _pairs(n: int) -> list[tuple[int, int]]:
    """Symmetrized complete graph, in an order that is not the sorted one."""
    return [(i, j) for i in range(n) for j in range(n) if i < j] + \
           [(j, i) for i in range(n) for j in range(n) if i < j]


def _flat(p) -> list[torch.Tensor]:
    return [*p.pts3d_1, *p.conf_1, *p.pts3d_2_in_1, *p.conf_2]


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(WORLD))  # one host: results travel through shared files
    device = init_from_env(backend="gloo")
    try:
        model, images = _tiny_model(), _images()
        pairs = _pairs(len(images))
        res = {
            "default": infer_pairs_distributed(model, images, pairs, batch_size=3, device=device),
            "objects": infer_pairs_distributed(model, images, pairs, batch_size=3, device=device,
                                               shared_memory=False),
            "half": infer_pairs_distributed(model, images, pairs, batch_size=3, device=device,
                                            storage_dtype=torch.float16),
            "all": infer_pairs_distributed(model, images, pairs, batch_size=3, device=device,
                                           all_ranks=True),
            "group": infer_pairs_distributed(model, images, pairs, batch_size=3, device=device,
                                             group=dist.new_group([0, 1])),
        }
        if rank == 0:  # the shared results are views of the mapped files, not copies
            t = res["default"].pts3d_2_in_1[-1]  # (4, 3) ran on rank 1: a view of its whole file
            assert t.untyped_storage().nbytes() > 12 * t.numel() * t.element_size()
            t = res["objects"].pts3d_2_in_1[-1]  # gathered as objects: a batch of at most 3 rows
            assert t.untyped_storage().nbytes() <= 3 * t.numel() * t.element_size()
        torch.save({k: None if v is None else (v.pairs, [t.clone() for t in _flat(v)]) for k, v in res.items()},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _assert_same(got: tuple, ref, dtype: torch.dtype = torch.float32) -> None:
    pairs, tensors = got
    assert pairs == ref.pairs
    ref_t = _flat(ref)
    assert len(tensors) == len(ref_t)
    for a, b in zip(tensors, ref_t):
        assert a.shape == b.shape and a.device.type == "cpu" and a.dtype == dtype
        assert torch.allclose(a.float(), b, rtol=1e-5 if dtype == torch.float32 else 1e-3, atol=1e-6), \
            (a - b).abs().max()


def _shared_files() -> set[str]:
    d = Path("/dev/shm")
    return {p.name for p in d.glob("pointmap-*")} if d.is_dir() else set()


def test_two_processes_match_single_process(tmp_path: Path) -> None:
    before = _shared_files()
    spawn_ranks(_worker, lambda attempt: (free_port(), str(tmp_path)), WORLD, tmp_path / "faults")
    assert _shared_files() <= before  # no shared result file is left behind
    images = _images()
    ref = infer_pairs(_tiny_model(), images, _pairs(len(images)), batch_size=3, device="cpu")
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for key in ("default", "objects", "all", "group"):
        _assert_same(r0[key], ref)
    _assert_same(r0["half"], ref, torch.float16)
    assert r1["default"] is None and r1["group"] is None and r1["objects"] is None and r1["half"] is None
    _assert_same(r1["all"], ref)
    # the network saw both shapes in both orders
    assert {(tuple(a.shape[:2]), tuple(b.shape[:2])) for a, b in zip(ref.pts3d_1, ref.pts3d_2_in_1)} == {
        ((48, 64), (64, 48)), ((64, 48), (48, 64)), ((48, 64), (48, 64)), ((64, 48), (64, 48))}


def test_split_pairs_balanced_and_keeps_mirrors_together() -> None:
    pairs = _pairs(5) + [(3, 3)]
    for world in (1, 2, 3, 4, 7, 30):
        blocks = split_pairs(pairs, world)
        assert len(blocks) == world
        assert sorted(q for b in blocks for q in b) == list(range(len(pairs)))
        if world <= 10:  # at least one image set per rank: within one mirror group of even
            assert all(abs(len(b) - len(pairs) / world) <= 2 for b in blocks), [len(b) for b in blocks]
        else:
            assert max(len(b) for b in blocks) <= 2
        assert [q for b in blocks for q in b] == sorted(
            range(len(pairs)), key=lambda q: (min(pairs[q]), max(pairs[q]), pairs[q][0]))
    owner = {q: r for r, b in enumerate(split_pairs(pairs, 2)) for q in b}
    for q, (i, j) in enumerate(pairs):
        assert owner[pairs.index((j, i))] == owner[q]
    # rank 1 of two never needs image 0 in the sorted complete graph of 5 images
    assert all(0 not in pairs[q] for q in split_pairs(pairs, 2)[1])
    with pytest.raises(ValueError):
        split_pairs(pairs, 0)


def test_world_size_one_equals_infer_pairs(tmp_path: Path) -> None:
    model, images = _tiny_model(), _images()
    pairs = _pairs(len(images))
    ref = infer_pairs(model, images, pairs, batch_size=4, device="cpu")
    assert not dist.is_initialized()
    plain = infer_pairs_distributed(model, images, pairs, batch_size=4, device="cpu")
    _assert_same((plain.pairs, _flat(plain)), ref)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1, timeout=timedelta(seconds=30))
    try:
        one = infer_pairs_distributed(model, images, pairs, batch_size=4, device="cpu")
    finally:
        dist.destroy_process_group()
    _assert_same((one.pairs, _flat(one)), ref)


def test_init_from_env_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(PointmapError, match="torchrun"):
        init_from_env(backend="gloo")
