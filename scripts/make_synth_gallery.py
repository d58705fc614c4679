"""Render the synthetic-data gallery of docs/training.md: one scene per layout of an engine, a few
views each, with their depth maps (turbo colour map, black = no surface).

    python scripts/make_synth_gallery.py --engine realistic --bank asset-bank -o docs/synth_gallery.png
    python scripts/make_synth_gallery.py --bank asset-bank -o docs/world_gallery.png \
        --layouts room room street street --seeds 5 8 2 6    # rows of any layouts
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def _depth_rgb(d: np.ndarray) -> np.ndarray:
    import matplotlib

    ok = d > 0
    out = np.zeros(d.shape + (3,), np.uint8)
    if ok.any():
        lo, hi = np.percentile(d[ok], [2, 98])
        x = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
        out[ok] = (matplotlib.colormaps["turbo"](1 - x[ok])[:, :3] * 255).astype(np.uint8)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="realistic")
    ap.add_argument("--bank", default=None)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 192))
    ap.add_argument("--layouts", nargs="+", default=["room", "turntable", "street", "clutter"])
    ap.add_argument("--seeds", type=int, nargs="+", default=(1, 2, 3, 4), help="one per layout")
    args = ap.parse_args()
    from pointmap.train.preview import render_preview

    if len(args.seeds) != len(args.layouts):
        ap.error(f"give one seed per layout ({len(args.layouts)} layouts, {len(args.seeds)} seeds)")
    rows = []
    for layout, seed in zip(args.layouts, args.seeds):
        cap = render_preview(args.engine, args.views, seed=seed, size=tuple(args.size), layout=layout, bank=args.bank)
        tiles = [np.concatenate([img, _depth_rgb(d)], 0) for img, d in zip(cap.images, cap.depths)]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1))
        print(layout, "done", flush=True)
    # a 256-colour palette keeps the documentation image small
    Image.fromarray(np.concatenate(rows, 0)).quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)


if __name__ == "__main__":
    main()
