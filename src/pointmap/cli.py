"""The ``pointmap`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import PointmapError

__all__ = ["main", "build_parser"]


def _cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from .model.checkpoint import load_model, save_model, save_reference_pth

    model = load_model(args.input)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    if args.output.endswith((".pth", ".pt")):
        save_reference_pth(model.to(dtype), args.output)
    else:
        save_model(model, args.output, dtype=dtype)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output} ({n / 1e6:.1f} M parameters, {args.dtype})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = argparse.ArgumentParser(prog="pointmap", description="Unposed photos to 3D with DUSt3R.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a checkpoint to pointmap's safetensors format (or back to .pth)")
    c.add_argument("input", help="checkpoint file, hub-layout folder, hub id or bundled model name")
    c.add_argument("output", help="output .safetensors (pointmap format) or .pth (reference layout)")
    c.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    c.set_defaults(func=_cmd_convert)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors print a message, no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PointmapError as exc:
        print(f"pointmap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pointmap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
