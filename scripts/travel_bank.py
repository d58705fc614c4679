"""Copy a built asset bank into a smaller one that fits a byte budget (to travel with the code).

    python scripts/travel_bank.py asset-bank -o bank-travel --max-mb 22

Keeps every photo crop; leaves out the models of ``--drop`` categories, then the largest models
(model file plus textures) until the copy fits ``--max-mb``, never more than half of one category.
The copy's ``manifest.json`` lists what it keeps (and what was left out, under ``"left_out"``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def _bytes(root: Path, files: list[str]) -> int:
    return sum((root / f).stat().st_size for f in files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="a built asset bank")
    ap.add_argument("-o", "--out", type=Path, required=True, help="new folder for the copy")
    ap.add_argument("--max-mb", type=float, default=22.0, help="size budget in MB (1e6 bytes)")
    ap.add_argument("--drop", nargs="*", default=["Lights", "Staircases"], help="model categories to leave out")
    args = ap.parse_args(argv)
    try:
        man = json.loads((args.src / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        print(f"error: cannot read the bank {args.src}: {e}", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    models = [m for m in man["models"] if m.get("category") not in args.drop]
    size = {m["file"]: _bytes(args.src, [m["file"], *m["textures"]]) for m in models}
    total = _bytes(args.src, [p["file"] for p in man["photos"]]) + sum(size.values()) + 400_000
    per_cat: dict[str, int] = {}
    for m in models:
        per_cat[m.get("category", "")] = per_cat.get(m.get("category", ""), 0) + 1
    dropped: set[str] = set()
    left = dict(per_cat)
    for m in sorted(models, key=lambda m: -size[m["file"]]):
        if total <= args.max_mb * 1e6:
            break
        c = m.get("category", "")
        if left[c] - 1 < per_cat[c] / 2:
            continue
        dropped.add(m["file"])
        left[c] -= 1
        total -= size[m["file"]]
    if total > args.max_mb * 1e6:
        print(f"error: cannot fit {args.max_mb} MB by dropping models (at {total / 1e6:.1f} MB)", file=sys.stderr)
        return 2
    kept = [m for m in models if m["file"] not in dropped]
    (args.out / "photos").mkdir(parents=True, exist_ok=True)
    (args.out / "models").mkdir(exist_ok=True)
    for f in [p["file"] for p in man["photos"]] + [f for m in kept for f in (m["file"], *m["textures"])]:
        shutil.copyfile(args.src / f, args.out / f)
    left_out = [m["file"] for m in man["models"] if m not in kept]
    (args.out / "manifest.json").write_text(json.dumps({**man, "models": kept, "left_out": left_out}, indent=1))
    real = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(json.dumps({"photos": len(man["photos"]), "models": len(kept), "left_out": len(left_out),
                      "bytes": real}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
