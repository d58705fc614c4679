"""Training throughput: pairs per second of one optimiser step (forward, ConfLoss, backward, AdamW)
on a synthetic random batch. Prints one JSON object.

Examples::

    python benchmarks/bench_train.py --model tiny --device cpu
    python benchmarks/bench_train.py --model 512_dpt --device cuda --amp bf16 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pointmap.model import DUSt3R, ModelConfig
from pointmap.train.losses import build_criterion
from pointmap.train.model_init import freeze_model, param_groups
from pointmap.train.trainer import forward_loss

PRESETS = {
    "tiny": dict(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=2,
                 dec_num_heads=2, head_type="linear", img_size=(64, 64)),
    "224_linear": dict(head_type="linear", img_size=(224, 224)),
    "512_linear": dict(head_type="linear"),
    "512_dpt": dict(),  # ModelConfig defaults: ViT-L encoder, ViT-B decoder, DPT heads
}
DEFAULT_RES = {"tiny": (64, 48), "224_linear": (224, 224), "512_linear": (512, 384), "512_dpt": (512, 384)}


def random_batch(B: int, W: int, H: int, device: torch.device) -> tuple[dict, dict]:
    """A collated batch of ``B`` random pairs with plausible geometry (all pixels valid)."""
    g = torch.Generator().manual_seed(0)
    views = []
    for _ in range(2):
        pts = torch.randn(B, H, W, 3, generator=g)
        pts[..., 2] = pts[..., 2].abs() + 2
        views.append({
            "img": torch.rand(B, 3, H, W, generator=g) * 2 - 1,
            "pts3d": pts,
            "valid_mask": torch.ones(B, H, W, dtype=torch.bool),
            "camera_pose": torch.eye(4).expand(B, 4, 4).clone(),
            "true_shape": torch.tensor([[H, W]] * B, dtype=torch.int32),
        })
    return views[0], views[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=4, help="pairs per step (fed in both orders)")
    ap.add_argument("--resolution", type=int, nargs=2, metavar=("W", "H"), default=None)
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--freeze", choices=["none", "encoder", "encoder_decoder"], default="none")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    W, H = args.resolution or DEFAULT_RES[args.model]
    cfg = ModelConfig(**PRESETS[args.model])
    model = DUSt3R(cfg).to(device).train()
    freeze_model(model, args.freeze)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    net = torch.compile(model) if args.compile else model
    crit = build_criterion({"type": "conf", "alpha": 0.2})
    batch = random_batch(args.batch_size, W, H, device)

    def step() -> float:
        loss, _ = forward_loss(net, crit, batch, device, args.amp, symmetrize=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    dt = (time.perf_counter() - t) / args.steps
    out = {
        "model": args.model, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "resolution": [W, H], "batch_pairs": args.batch_size, "amp": args.amp, "compile": args.compile,
        "freeze": args.freeze, "params": sum(p.numel() for p in model.parameters()),
        "step_s": dt, "pairs_per_s": args.batch_size / dt, "directed_pairs_per_s": 2 * args.batch_size / dt,
        "final_loss": loss, "torch": torch.__version__,
    }
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(json.dumps(out))


if __name__ == "__main__":
    main()
