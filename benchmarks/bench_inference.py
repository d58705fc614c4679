"""Network inference speed: per-pair cost and stage split, bf16 accuracy, scene inference.

Builds the released 512 DPT architecture (ViT-L encoder, ViT-B decoders) with weights drawn by the
parity refill recipe (seed 0), on 512x384 inputs, and measures four modes:

* ``fp32``: float32 weights, TF32 matmuls and convolutions, eager;
* ``bf16_eager``: bfloat16 autocast, eager;
* ``bf16_optimized``: ``optimize_for_inference()`` (compiled blocks and heads, NHWC heads,
  bfloat16 trunk), heads in float32;
* ``bf16_optimized_bf16_heads``: the same with ``head_dtype=torch.bfloat16``.

Per mode: ms per ordered pair at ``--batch`` pairs (both images of every pair encoded), the
encoder / decoders / heads split, TFLOP/s, and (bf16 modes) the median relative difference of
points and confidences to float32 with TF32 off. Then the scene: ``--scene-images`` images,
symmetrized complete graph, :func:`pointmap.inference.infer_pairs` (each image encoded once) at
batch sizes 16 and 32, compiled (warmed up) outside the timed region, with a time breakdown.
Every section's result is printed as one JSON line as soon as it is known and the whole report is
rewritten to ``--out`` after each section::

    python benchmarks/bench_inference.py --device cuda --out bench_inference.json
    python benchmarks/bench_inference.py --tiny --device cpu --compile-backend aot_eager  # smoke test
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
import traceback
from collections.abc import Callable

import torch

from pointmap.inference import infer_pairs, warmup
from pointmap.model import DUSt3R, ModelConfig
from pointmap.model.network import Encoded
from pointmap.testing.refill import refilled_model
from pointmap.pairs import make_pairs

# FLOPs per ordered pair of the 512 DPT model at 512x384 (multiply-add = 2 FLOPs)
REF_TFLOP = {"encoder": 1.04, "decoders": 0.43, "heads": 0.37, "total": 1.86}
TINY = {"enc_embed_dim": 64, "enc_depth": 2, "enc_num_heads": 2, "dec_embed_dim": 64, "dec_depth": 4,
        "dec_num_heads": 2, "dpt_layer_dims": (16, 32, 32, 64), "dpt_feature_dim": 32, "dpt_last_dim": 16}


class Clock:
    """Wall time of a region; on CUDA synchronised at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], object]) -> float:
        self.sync()
        t = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t


def timed(fn: Callable[[], object], device: torch.device, warmup: int = 3, iters: int = 10) -> float:
    """Mean seconds per call after ``warmup`` calls (CUDA events on the GPU)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000 / iters
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def graphs_compiled() -> int:
    """Graphs compiled by ``torch.compile`` so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def median_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Median of ``|a - b| / max(|b|, 1e-6)`` over all elements (on a subsample if huge)."""
    r = ((a.float() - b.float()).abs() / b.float().abs().clamp(min=1e-6)).flatten()
    if r.numel() > 2**24:
        r = r[:: math.ceil(r.numel() / 2**24)]
    return r.median().item()


def build_model(cfg: ModelConfig, device: torch.device) -> DUSt3R:
    """The architecture of ``cfg`` with the parity refill weights (seed 0), float32, eval mode."""
    return refilled_model(cfg, seed=0).to(device)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dev = torch.device(args.device)
        self.t0 = time.perf_counter()
        self.clock = Clock(self.dev)
        self.report: dict = {}

    # ------------------------------------------------------------------ bookkeeping
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def emit(self, key: str, value: object) -> None:
        self.report[key] = value
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        print(key, json.dumps(value), flush=True)
        if self.args.out:
            with open(self.args.out, "w") as f:
                json.dump(self.report, f, indent=2)

    def section(self, key: str, fn: Callable[[], object]) -> None:
        """Run one section unless out of time; a failure is reported and the run goes on."""
        if self.elapsed() > self.args.deadline:
            self.emit(key, {"skipped": f"deadline of {self.args.deadline} s reached"})
            return
        try:
            self.emit(key, fn())
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
            traceback.print_exc()
            self.emit(key, {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()

    def peak_gb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.dev) / 1e9 if self.dev.type == "cuda" else None

    def reset_peak(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)

    # ------------------------------------------------------------------ per pair
    def per_pair(self, model: DUSt3R, dt: torch.dtype, v1: dict, v2: dict, ref) -> dict:
        """Full forward of ``B`` pairs (2B images encoded), its stage split and accuracy."""
        dev, B = self.dev, v1["img"].shape[0]
        img = torch.cat([v1["img"], v2["img"]])
        H, W = img.shape[-2:]
        ac = lambda: torch.autocast(dev.type, dtype=dt, enabled=dt != torch.float32)
        res: dict = {}
        with torch.no_grad():
            def full():
                with ac():
                    return model(v1, v2)

            g0 = graphs_compiled()
            res["first_call_s"] = self.clock(full)  # compiles an optimized model
            res["graphs_compiled_first_call"] = graphs_compiled() - g0
            t_full = timed(full, dev, iters=self.args.iters)
            with ac():
                enc = model.encode(img)
                e1, e2 = Encoded(enc.tokens[:B], enc.shape), Encoded(enc.tokens[B:], enc.shape)
                toks = model.decode(e1, e2)

            def f_enc():
                with ac():
                    model.encode(img)

            def f_dec():
                with ac():
                    model.decode(e1, e2)

            def f_head():
                with ac():
                    model.heads(toks[0], toks[1], (H, W), (H, W))

            t_enc, t_dec, t_head = (timed(f, dev, iters=self.args.iters) for f in (f_enc, f_dec, f_head))
            if dt != torch.float32:
                p1, p2 = full()
                res["vs_fp32"] = {
                    "pts3d_median_rel": median_rel(torch.cat([p1["pts3d"], p2["pts3d_in_other_view"]]),
                                                   torch.cat([ref[0]["pts3d"], ref[1]["pts3d_in_other_view"]])),
                    "conf_median_rel": median_rel(torch.cat([p1["conf"], p2["conf"]]),
                                                  torch.cat([ref[0]["conf"], ref[1]["conf"]])),
                }
            res["graphs_compiled_in_timing"] = graphs_compiled() - g0 - res["graphs_compiled_first_call"]
        stage = {"encoder": t_enc, "decoders": t_dec, "heads": t_head}
        res["ms_per_pair"] = 1000 * t_full / B
        res["stage_ms_per_pair"] = {k: 1000 * v / B for k, v in stage.items()}
        if not self.args.tiny:
            res["tflops"] = REF_TFLOP["total"] * B / t_full
            res["stage_tflops"] = {k: REF_TFLOP[k] * B / v for k, v in stage.items()}
        res["peak_gpu_GB"] = self.peak_gb()
        return res

    # ------------------------------------------------------------------ scene
    def scene(self, model: DUSt3R, imgs: list[torch.Tensor], pairs: list, bs: int) -> dict:
        """``infer_pairs`` on a scene: warm-up (compile) time, then timed runs and a breakdown."""
        dev, dt = self.dev, torch.bfloat16
        shape = tuple(imgs[0].shape[-2:])
        kw = {"batch_size": bs, "device": dev, "dtype": dt}
        res: dict = {"pairs": len(pairs), "batch_size": bs}
        g0 = graphs_compiled()
        res["warmup_s"] = warmup(model, [shape], **kw)
        res["graphs_compiled_in_warmup"] = graphs_compiled() - g0
        runs, preds = [], None
        self.reset_peak()
        g1 = graphs_compiled()
        for _ in range(self.args.scene_runs):
            def run():
                nonlocal preds
                preds = infer_pairs(model, imgs, pairs, progress=False, **kw)
            runs.append(self.clock(run))
        res["graphs_compiled_in_timed_runs"] = graphs_compiled() - g1
        res["seconds_runs"] = runs
        res["seconds"] = min(runs)
        res["ms_per_pair"] = 1000 * min(runs) / len(pairs)
        res["peak_gpu_GB"] = self.peak_gb()
        res["breakdown_s"] = self.scene_breakdown(model, imgs, pairs, bs, min(runs))
        res["first_batch_max_abs_diff"] = self.first_batch_check(model, imgs, pairs, bs, preds)
        return res

    def scene_breakdown(self, model: DUSt3R, imgs: list, pairs: list, bs: int, total: float) -> dict:
        """Encoder and decoder+head batches of the scene timed alone; the rest of ``total`` is
        copies to the CPU and Python overhead that did not overlap with the GPU."""
        dev = self.dev
        enc_bs = min(2 * bs, 8)  # infer_pairs' default
        n_enc = math.ceil(len(imgs) / enc_bs)
        n_dec = math.ceil(len(pairs) / bs)
        x = torch.stack([imgs[k % len(imgs)] for k in range(enc_bs)]).to(dev)
        ac = lambda: torch.autocast(dev.type, dtype=torch.bfloat16)
        with torch.no_grad():
            with ac():
                tok = model.encode(x).tokens
            e = Encoded(tok[:1].expand(bs, -1, -1).contiguous(), tuple(x.shape[-2:]))

            def encode_all():
                with ac():
                    for _ in range(n_enc):
                        model.encode(x)

            def decode_all():
                with ac():
                    for _ in range(n_dec):
                        model.forward_encoded(e, e)

            t_enc = timed(encode_all, dev, warmup=1, iters=1)
            t_dec = timed(decode_all, dev, warmup=1, iters=1)
        return {"encode": t_enc, "decode_and_heads": t_dec, "copies_and_overhead": total - t_enc - t_dec}

    def first_batch_check(self, model: DUSt3R, imgs: list, pairs: list, bs: int, preds) -> float:
        """Largest difference between ``infer_pairs``' first batch of pairs and the same batch
        run directly and copied synchronously (0 expected: same kernels, same batch)."""
        dev = self.dev
        chunk = pairs[:bs]
        ids = sorted({i for p in pairs for i in p})
        enc_bs = min(2 * bs, 8)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            tokens = {}
            for s in range(0, len(ids), enc_bs):
                part = ids[s : s + enc_bs]
                part = part + [part[-1]] * (enc_bs - len(part)) if model.static_shapes else part
                enc = model.encode(torch.stack([imgs[k] for k in part]).to(dev))
                tokens.update(zip(part, enc.tokens))
            shape = tuple(imgs[0].shape[-2:])
            e1 = Encoded(torch.stack([tokens[i] for i, _ in chunk]), shape)
            e2 = Encoded(torch.stack([tokens[j] for _, j in chunk]), shape)
            p1, p2 = model.forward_encoded(e1, e2)
        direct = [p1["pts3d"].cpu(), p1["conf"].cpu(), p2["pts3d_in_other_view"].cpu(), p2["conf"].cpu()]
        got = [torch.stack(x[: len(chunk)]) for x in (preds.pts3d_1, preds.conf_1, preds.pts3d_2_in_1, preds.conf_2)]
        return max((a - b).abs().max().item() for a, b in zip(got, direct))

    # ------------------------------------------------------------------ main
    def run(self) -> None:
        args, dev = self.args, self.dev
        torch.backends.cuda.matmul.allow_tf32 = True  # as the reference does
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
        cfg = ModelConfig(**TINY) if args.tiny else ModelConfig()
        H, W = (64, 96) if args.tiny else (384, 512)
        B = args.batch
        self.report.update({
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "batch": B, "resolution": f"{W}x{H}", "tiny": args.tiny,
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "compile_backend": args.compile_backend,
            "cpu_threads": torch.get_num_threads(), "scene_images": args.scene_images,
        })
        t = time.perf_counter()
        base = build_model(cfg, dev)
        self.report["build_s"] = time.perf_counter() - t
        g = torch.Generator().manual_seed(0)
        img = (torch.rand(2 * B, 3, H, W, generator=g) * 2 - 1).to(dev)
        v1, v2 = {"img": img[:B]}, {"img": img[B:]}

        # float32 reference with TF32 off, before anything is compiled (dynamo guards on TF32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            ref = base(v1, v2)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

        def optimized(head_dtype: torch.dtype | None) -> DUSt3R:
            return copy.deepcopy(base).optimize_for_inference(
                compile=True, channels_last=True, trunk_dtype=torch.bfloat16, head_dtype=head_dtype,
                compile_backend=args.compile_backend)

        models: dict[str, tuple[Callable[[], DUSt3R], torch.dtype]] = {
            "bf16_optimized_bf16_heads": (lambda: optimized(torch.bfloat16), torch.bfloat16),
            "bf16_optimized": (lambda: optimized(None), torch.bfloat16),
            "bf16_eager": (lambda: base, torch.bfloat16),
            "fp32": (lambda: base, torch.float32),
        }
        built: dict[str, DUSt3R] = {}

        def get(name: str) -> DUSt3R:
            if name not in built:
                built[name] = models[name][0]()
            return built[name]

        n = args.scene_images
        imgs = list(torch.rand(n, 3, H, W, generator=g) * 2 - 1)
        pairs = make_pairs(n, "complete", symmetrize=True)
        first, *more = sorted(set(args.scene_batches))

        def pair(name: str) -> tuple[str, Callable[[], object]]:
            return f"pair_{name}", lambda: self.per_pair(get(name), models[name][1], v1, v2, ref)

        def scene(name: str, bs: int) -> tuple[str, Callable[[], object]]:
            return f"scene_{n}_images_{name}_bs{bs}", lambda: self.scene(get(name), imgs, pairs, bs)

        # most informative first, so that a run cut short by --deadline still has the targets;
        # each optimized section compiles only the shapes not compiled before
        plan = [pair("bf16_optimized_bf16_heads"), scene("bf16_optimized_bf16_heads", first),
                pair("bf16_eager"), pair("fp32"), scene("bf16_eager", first),
                pair("bf16_optimized"), scene("bf16_optimized", first)]
        for bs in more:
            plan += [scene("bf16_optimized_bf16_heads", bs), scene("bf16_eager", bs),
                     scene("bf16_optimized", bs)]
        for key, fn in plan:
            self.reset_peak()
            self.section(key, fn)
        self.emit("total_s", self.elapsed())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16, help="pairs per batch of the per-pair timing")
    ap.add_argument("--iters", type=int, default=10, help="timed calls per per-pair measurement")
    ap.add_argument("--scene-images", type=int, default=20)
    ap.add_argument("--scene-batches", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--scene-runs", type=int, default=2, help="timed infer_pairs runs per scene (min kept)")
    ap.add_argument("--tiny", action="store_true", help="tiny model and images (smoke test on CPU)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend of the optimized modes (aot_eager for a quick CPU check)")
    ap.add_argument("--no-cudnn-benchmark", action="store_true", help="skip cuDNN autotuning")
    ap.add_argument("--deadline", type=float, default=330.0,
                    help="seconds after which remaining sections are skipped")
    ap.add_argument("--out", default=None, help="JSON report, rewritten after every section")
    args = ap.parse_args()
    if args.tiny:
        args.batch = min(args.batch, 4)
        args.iters = min(args.iters, 3)
        args.scene_images = min(args.scene_images, 5)
        args.scene_batches = [max(1, b // 8) for b in args.scene_batches]
    Bench(args).run()


if __name__ == "__main__":
    main()
