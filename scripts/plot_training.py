"""Plot the bundled model's training curve from its stage logs (``docs/training_logs``).

Left: training regression error (mean of ``Regr3D_pts3d_1`` and ``Regr3D_pts3d_2``: the
normalised 3D point error before confidence weighting, comparable across stages) against the
number of training pairs seen. Right: the held-out scale-and-shift-invariant error of each
stage's final weights, all measured by one procedure (``--heldout``, a JSON written by
``pointmap.train.trainer.evaluate`` per stage).

    python scripts/plot_training.py --heldout heldout.json --out docs/training_loss.svg
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pointmap.train.runlog import read_log  # noqa: E402

# stage, log, pairs per optimiser step (batch size x accumulation; each pair is also fed reversed),
# and the last step whose weights the next stage continued from (None: the stage's final weights)
STAGES: list[tuple[str, str, int, int | None]] = [
    ("stage 1", "bundled_stage1.jsonl", 32, None), ("stage 2", "bundled_stage2.jsonl", 32, None),
    ("stage 3", "bundled_stage3.jsonl", 64, None), ("stage 4", "bundled_stage4.jsonl", 64, None),
    ("stage 5", "bundled_stage5.jsonl", 64, None), ("stage 6", "bundled_stage6.jsonl", 128, 1200),
    ("stage 7", "bundled_stage7.jsonl", 256, None), ("stage 8", "bundled_stage8.jsonl", 256, None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "training_logs")
    ap.add_argument("--heldout", type=Path, required=True, help="JSON {stage: {set: {loss_avg, loss_med}}}")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    held = json.loads(args.heldout.read_text())
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2.2, 1]})
    seen = 0
    ends = []
    for name, file, batch, last in STAGES:
        rows = [r for r in read_log(args.logs / file)
                if r.get("kind") == "train" and (last is None or r["step"] <= last)]
        x = [seen + r["step"] * batch for r in rows]
        y = [0.5 * (r["Regr3D_pts3d_1"] + r["Regr3D_pts3d_2"]) for r in rows]
        a.plot([v / 1e3 for v in x], y, lw=1, label=name)
        seen += rows[-1]["step"] * batch
        ends.append(seen)
        a.axvline(seen / 1e3, color="0.8", lw=0.8)
    a.set_xscale("log")
    a.set_xlabel("training pairs seen (thousands, log scale)")
    a.set_ylabel("train 3D point error (normalised)")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    names = [s[0] for s in STAGES if s[0] in held]
    vals = [next(iter(held[n].values()))["loss_avg"] for n in names]
    b.plot([e / 1e3 for s, e in zip(STAGES, ends) if s[0] in held], vals, "o-")
    for n, e, v in zip(names, [e for s, e in zip(STAGES, ends) if s[0] in held], vals):
        b.annotate(n, (e / 1e3, v), textcoords="offset points", xytext=(4, 4), fontsize=8)
    b.set_xscale("log")
    b.set_xlabel("pairs seen (thousands)")
    b.set_ylabel("held-out error (scale-shift inv.)")
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, format=args.out.suffix.lstrip(".") or "svg", metadata={"Date": None})
    print(f"wrote {args.out}; pairs seen per stage end: {ends}")


if __name__ == "__main__":
    main()
