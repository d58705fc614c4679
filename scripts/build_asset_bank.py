"""Build the realistic-data asset bank from the distribution's packages (one command).

    python scripts/build_asset_bank.py -o asset-bank [--install]

Reads real photographs (wallpaper packages) and textured furniture models
(``sweethome3d-furniture``) installed from Debian packages; with ``--install`` it runs the
``apt-get install`` line itself (as root), otherwise it prints that line when packages are missing.
Writes one folder (``manifest.json`` lists every asset's package, path and licence) that can be
copied to a machine without package access. Needs the ``assets`` extra (``fast_simplification``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, required=True, help="new folder to write the bank to")
    ap.add_argument("--install", action="store_true", help="apt-get install the missing packages (root)")
    ap.add_argument("--crops", type=int, default=1200, help="photo crops in total (default 1200)")
    ap.add_argument("--crop-size", type=int, default=256, help="side of a photo crop in pixels (<= 512)")
    ap.add_argument("--max-faces", type=int, default=2500, help="decimate models above this many triangles")
    ap.add_argument("--texture-px", type=int, default=256, help="largest side of a model texture (<= 512)")
    args = ap.parse_args(argv)
    from pointmap.errors import PointmapError
    from pointmap.train.realistic.build_bank import build_debian_bank

    try:
        summary = build_debian_bank(args.out, install=args.install, n_crops=args.crops, crop_size=args.crop_size,
                                    max_faces=args.max_faces, texture_px=args.texture_px,
                                    progress=lambda s: print(s, file=sys.stderr, flush=True))
    except PointmapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
