"""Streamed reductions' depth (:mod:`pointmap.align.reduced`): one canonical pointmap per image.

Today the dense stage re-solves every pixel's depth from every edge side's full prediction. A store
that keeps per pair only the coarse samples cannot do that; this measures what a per-image reduction
loses. The reduction (:class:`pointmap.align.reduced.PairReducer`): each image's canonical depth (its camera frame, the confidence-weighted
mean of every ``pts3d_1`` where it comes first, each divided by its median depth, then brought to
the median depth of the most confident one), accumulated pair by pair as the predictions leave the
network. The dense depth is then the canonical depth times the coarse solution's correction: the
ratio ``coarse depth / canonical depth`` at the coarse pixels, upsampled bilinearly (log) over the
image, so the coarse stage's depths stay exact at its pixels.

Synthetic scene with exact ground truth (:func:`pointmap.testing.synthetic_pairs.make_synthetic_scene`);
the poses come from the coarse stage either way (the dense stage does not move them). Reports the
median and 90th percentile of ``|s d - d_true| / d_true`` over every pixel, ``s`` the similarity
scale onto the true cameras, for: the dense stage (``dense``), the upsampled coarse depth
(``coarse``) and alignment from the reductions (``canonical``,
:func:`pointmap.align.reduced.align_reduced`)::

    python benchmarks/bench_reduction.py --images 20 --size 128x96 --graph logwin-5 --out red.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pointmap.align import AlignConfig, align_pairs
from pointmap.align.data import CoarsePlan
from pointmap.align.reduced import PAIR_FIELDS, PairReducer, align_reduced
from pointmap.geometry import align_multiple_poses
from pointmap.testing.synthetic_pairs import make_synthetic_scene


def reduce_stream(preds, batch: int = 16) -> tuple[PairReducer, dict[str, torch.Tensor]]:
    """The reductions of ``preds`` as a stream of batches would make them (float32 rows)."""
    cfg = AlignConfig()
    plan = CoarsePlan.make(list(preds.image_shapes), cfg.coarse_stride, cfg.coarse_pixels_for(len(preds)),
                           torch.device("cpu"))
    red = PairReducer(plan, cfg.conf_trf, "cpu")
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in PAIR_FIELDS}
    for a in range(0, len(preds), batch):
        es = range(a, min(a + batch, len(preds)))
        arrays = {name: torch.stack([getattr(preds, name)[e] for e in es])
                  for name in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")}
        for k, v in red.reduce([preds.pairs[e] for e in es], arrays).items():
            rows[k].append(v)
    return red, {k: torch.cat(v) for k, v in rows.items()}


def depth_errors(depths: list[torch.Tensor], poses: torch.Tensor, gt) -> dict[str, float]:
    s, _, _ = align_multiple_poses(poses.double(), gt.poses.double())
    rel = torch.cat([((float(s) * d.double() - g.double()).abs() / g.double()).reshape(-1)
                     for d, g in zip(depths, gt.depths)])
    rel = rel[torch.isfinite(rel)]
    return {"median": float(rel.median()), "p90": float(rel.quantile(0.9)) if rel.numel() < 2**24
            else float(rel[:: rel.numel() // 2**23 + 1].quantile(0.9))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--graph", default="logwin-5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    W, H = (int(x) for x in args.size.split("x"))
    gt = make_synthetic_scene(args.images, (W, H), graph=args.graph, seed=args.seed)
    row: dict = {"n_images": args.images, "size": args.size, "graph": args.graph, "n_pairs": len(gt.preds)}
    t0 = time.perf_counter()
    dense = align_pairs(gt.preds, config=AlignConfig(), device="cpu", progress=False)
    coarse = align_pairs(gt.preds, config=AlignConfig(dense=False), device="cpu", progress=False)
    row["seconds_align"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    red, rows = reduce_stream(gt.preds)
    reduced = align_reduced(red, gt.preds.pairs, rows, AlignConfig(), "cpu")
    row["seconds_reduction"] = time.perf_counter() - t0
    for name, depths, poses in (("dense", dense.scene.depths, dense.scene.poses),
                                ("coarse", coarse.scene.depths, coarse.scene.poses),
                                ("canonical", reduced.scene.depths, reduced.scene.poses)):
        row[f"depth_err_{name}"] = depth_errors(depths, poses, gt)
    row["same_poses"] = bool(torch.allclose(dense.scene.poses, coarse.scene.poses))
    row["reduced_same_poses"] = bool(torch.allclose(reduced.scene.poses, coarse.scene.poses, atol=1e-5))
    print(json.dumps(row, indent=1))
    with open(args.out, "w") as f:
        json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
