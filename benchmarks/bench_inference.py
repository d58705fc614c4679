"""Network inference speed: per-pair cost at batch 16, stage split, bf16 accuracy, scene inference.

Builds the released 512 DPT architecture (ViT-L encoder, ViT-B decoders) with weights drawn by the
parity refill recipe (seed 0), on 512x384 inputs, and prints a JSON report::

    python benchmarks/bench_inference.py --device cuda --out bench_inference.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from pointmap.inference import infer_pairs
from pointmap.model import DUSt3R, ModelConfig, load_weights
from pointmap.model.network import Encoded
from pointmap.model.refill import refill_state_dict
from pointmap.pairs import make_pairs

# FLOPs per ordered pair of the 512 DPT model at 512x384 (multiply-add = 2 FLOPs)
REF_TFLOP = {"encoder": 1.04, "decoders": 0.43, "heads": 0.37, "total": 1.86}


def timed(fn, device, warmup=3, iters=10) -> float:
    """Mean seconds per call."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000 / iters
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--scene-images", type=int, default=20)
    ap.add_argument("--small", action="store_true", help="tiny model (smoke test on CPU)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the blocks and heads")
    ap.add_argument("--channels-last", action="store_true", help="NHWC convolutions in the heads")
    ap.add_argument("--bf16-trunk", action="store_true", help="store encoder/decoders in bfloat16")
    ap.add_argument("--cudnn-benchmark", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # as the reference does
    torch.backends.cudnn.allow_tf32 = True
    cfg = ModelConfig() if not args.small else ModelConfig(
        enc_embed_dim=64, enc_depth=2, enc_num_heads=2, dec_embed_dim=64, dec_depth=4, dec_num_heads=2)
    with torch.device("meta"):
        model = DUSt3R(cfg)
    model = model.to_empty(device="cpu")
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    load_weights(model, refill_state_dict(keys, seed=0))
    model = model.to(dev).eval()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    ref_model = None
    if args.bf16_trunk:  # float32 reference outputs need a float32 copy
        import copy
        ref_model = copy.deepcopy(model).to(dev).eval()
    model.optimize_for_inference(compile=args.compile, channels_last=args.channels_last,
                                 trunk_dtype=torch.bfloat16 if args.bf16_trunk else None)
    H, W, B = 384, 512, args.batch
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(2 * B, 3, H, W, generator=g) * 2 - 1).to(dev)
    v1, v2 = {"img": img[:B]}, {"img": img[B:]}
    report: dict = {"compile": args.compile, "channels_last": args.channels_last,
                    "bf16_trunk": args.bf16_trunk, "cudnn_benchmark": args.cudnn_benchmark, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
                    "torch": torch.__version__, "batch": B, "resolution": f"{W}x{H}"}

    with torch.no_grad():
        modes = (("bfloat16", torch.bfloat16),) if args.bf16_trunk else (("float32_tf32", torch.float32), ("bfloat16", torch.bfloat16))
        for name, dt in modes:
            ac = torch.autocast(dev.type, dtype=dt, enabled=dt != torch.float32)

            def full():
                with ac:
                    return model(v1, v2)

            t_full = timed(full, dev)
            with ac:
                enc = model.encode(img)
            e1, e2 = Encoded(enc.tokens[:B], enc.shape), Encoded(enc.tokens[B:], enc.shape)
            with ac:
                toks = model.decode(e1, e2)

            def f_enc():
                with ac:
                    model.encode(img)

            def f_dec():
                with ac:
                    model.decode(e1, e2)

            def f_head():
                with ac:
                    model.heads(toks[0], toks[1], (H, W), (H, W))

            t_enc, t_dec, t_head = timed(f_enc, dev), timed(f_dec, dev), timed(f_head, dev)
            per_pair = t_full / B
            report[name] = {
                "ms_per_pair": 1000 * per_pair,
                "tflops_achieved": REF_TFLOP["total"] / per_pair,
                "stage_ms_per_pair": {"encoder": 1000 * t_enc / B, "decoders": 1000 * t_dec / B, "heads": 1000 * t_head / B},
                "stage_tflops": {"encoder": REF_TFLOP["encoder"] * B / t_enc, "decoders": REF_TFLOP["decoders"] * B / t_dec,
                                 "heads": REF_TFLOP["heads"] * B / t_head},
            }
            print(name, json.dumps(report[name]), flush=True)

        # accuracy of bf16 against float32 (TF32 off for the reference values)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        r1, r2 = (ref_model or model)(v1, v2)
        del ref_model
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            b1, b2 = model(v1, v2)
        rel = lambda a, b: ((a - b).abs() / b.abs().clamp(min=1e-6)).flatten()  # noqa: E731
        d = torch.cat([rel(b1["pts3d"], r1["pts3d"]), rel(b2["pts3d_in_other_view"], r2["pts3d_in_other_view"])])
        dc = torch.cat([rel(b1["conf"], r1["conf"]), rel(b2["conf"], r2["conf"])])
        report["bf16_vs_fp32"] = {"pts3d_median_rel": d.median().item(), "pts3d_p90_rel": d.float().quantile(0.9).item() if d.numel() < 2**24 else None,
                                  "conf_median_rel": dc.median().item()}
        print("bf16_vs_fp32", json.dumps(report["bf16_vs_fp32"]), flush=True)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # scene: N images, symmetrized complete graph, encode once
    n = args.scene_images
    imgs = list((torch.rand(n, 3, H, W, generator=g) * 2 - 1))
    pairs = make_pairs(n, "complete", symmetrize=True)
    for bs in (16, 32):
        infer_pairs(model, imgs[:min(4, n)], make_pairs(min(4, n)), batch_size=bs, device=dev, dtype=torch.bfloat16)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        preds = infer_pairs(model, imgs, pairs, batch_size=bs, device=dev, dtype=torch.bfloat16)
        el = time.perf_counter() - t
        report[f"scene_{n}_images_bs{bs}"] = {
            "pairs": len(pairs), "seconds": el, "ms_per_pair": 1000 * el / len(pairs),
            "peak_gpu_GB": torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else None,
        }
        print(f"scene bs{bs}", json.dumps(report[f"scene_{n}_images_bs{bs}"]), flush=True)
        assert len(preds) == len(pairs)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
