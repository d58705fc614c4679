"""Multi-GPU scaling: data-parallel training steps and distributed pair inference.

Run once per process count with torchrun and compare (results as JSON lines on rank 0)::

    torchrun --nproc_per_node 1 benchmarks/bench_distributed.py infer --images 50 --out r1.json
    torchrun --nproc_per_node 2 benchmarks/bench_distributed.py infer --images 50 --out r2.json
    torchrun --nproc_per_node 1 benchmarks/bench_distributed.py train --batch-size 8 --out t1.json
    torchrun --nproc_per_node 2 benchmarks/bench_distributed.py train --batch-size 8 --out t2.json

``infer``: the released 512 DPT architecture (random weights: speed does not depend on them),
``--images`` random 512x384 images, the symmetrized complete graph, through
:func:`pointmap.distributed.infer_pairs_distributed` (one process: plain ``infer_pairs``); timed
from a barrier until rank 0 holds every pair's result on the CPU. ``train``: the same
architecture trained as the trainer does it (DDP, bf16 autocast, ConfLoss, AdamW) on random
batches of ``--batch-size`` pairs per GPU (each fed in both orders). ``--tiny`` runs a tiny model on
the CPU (gloo) to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import random_batch  # noqa: E402

from pointmap.model import DUSt3R, ModelConfig  # noqa: E402
from pointmap.train.losses import build_criterion  # noqa: E402
from pointmap.train.model_init import freeze_model, param_groups  # noqa: E402
from pointmap.train.parallel import setup_distributed  # noqa: E402
from pointmap.train.trainer import forward_loss  # noqa: E402

TINY = dict(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=4, dec_num_heads=2,
            head_type="dpt", img_size=(64, 64))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if dist.is_initialized():
        dist.barrier()


def bench_infer(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> dict:
    from pointmap.distributed import infer_pairs_distributed
    from pointmap.inference import warmup
    from pointmap.pairs import make_pairs

    torch.manual_seed(0)
    model = DUSt3R(ModelConfig(**TINY) if args.tiny else ModelConfig()).to(device).eval()
    W, H = (64, 48) if args.tiny else (512, 384)
    if device.type == "cuda" and args.optimized:
        model.optimize_for_inference(trunk_dtype=torch.bfloat16, head_dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, H, W, generator=g) * 2 - 1 for _ in range(args.images)]
    pairs = make_pairs(len(images), "complete", symmetrize=True)
    t = time.perf_counter()
    warmup(model, [(H, W)], batch_size=args.batch_size, device=device)
    t_warm = time.perf_counter() - t
    runs = []
    for _ in range(args.repeats):
        _sync(device)
        t = time.perf_counter()
        preds = infer_pairs_distributed(model, images, pairs, batch_size=args.batch_size, device=device,
                                        progress=False)
        _sync(device)
        runs.append(time.perf_counter() - t)
        if rank == 0:
            assert preds is not None and len(preds.pairs) == len(pairs)
        del preds
    return {"task": "infer", "world": world, "images": len(images), "pairs": len(pairs), "size": [W, H],
            "batch_size": args.batch_size, "optimized": bool(device.type == "cuda" and args.optimized),
            "warmup_s": t_warm, "seconds_runs": runs, "seconds": min(runs),
            "pairs_per_s": len(pairs) / min(runs)}


def bench_train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = DUSt3R(ModelConfig(**TINY) if args.tiny else ModelConfig()).to(device).train()
    freeze_model(model, "none")
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    crit = build_criterion({"type": "conf", "alpha": 0.2})
    W, H = (64, 48) if args.tiny else (512, 384)
    batch = random_batch(args.batch_size, W, H, device)
    amp = "bf16" if device.type == "cuda" else "none"

    def step() -> None:
        loss, _ = forward_loss(net, crit, batch, device, amp, symmetrize=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    dt = (time.perf_counter() - t) / args.steps
    out = {"task": "train", "world": world, "size": [W, H], "batch_pairs_per_gpu": args.batch_size,
           "amp": amp, "step_s": dt, "pairs_per_s": world * args.batch_size / dt,
           "params": sum(p.numel() for p in model.parameters())}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["infer", "train"])
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16, help="infer: pairs per batch; train: pairs per GPU")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eager", dest="optimized", action="store_false",
                    help="infer: plain bf16 autocast instead of optimize_for_inference (compiled, bf16 heads)")
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU (checks the script)")
    ap.add_argument("--out", type=Path, default=None, help="append the result (JSON line) to this file")
    args = ap.parse_args()
    if args.tiny:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    rank, world, device = setup_distributed()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    res = (bench_infer if args.task == "infer" else bench_train)(args, rank, world, device)
    if rank == 0:
        res["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        res["torch"] = torch.__version__
        line = json.dumps(res)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
