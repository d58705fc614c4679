"""Cut the small parity subset that ships in ``tests/data/parity`` from the full parity vectors.

The full vectors (the reference DUSt3R's outputs on four images, for the tiny 224-linear and
512-DPT configurations) live beside the repository, in ``../shared/parity``. The subset keeps two
of the images (the portrait PNG and the JPEG with EXIF orientation 6), the manifests, and for the
pair of those two images (both orders) the reference outputs; the preprocessed images are kept as
SHA-256 digests of their float32 bytes. ``tests/test_parity_subset.py`` checks it; the full
parity tests check that it is an exact cut of the full vectors.

    python scripts/make_parity_subset.py ../shared/parity tests/data/parity
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import torch

CONFIGS = ("tiny_224_linear", "tiny_512_dpt")
FILES = ("c_portrait.png", "d_exif_rot.jpg")
OUTPUTS = ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")


def image_sha256(img: torch.Tensor) -> str:
    """SHA-256 of a preprocessed ``(3, H, W)`` float32 image's bytes (C order)."""
    return hashlib.sha256(img.contiguous().numpy().tobytes()).hexdigest()


def subset(vec: dict) -> dict:
    """The entries of full vectors ``vec`` for :data:`FILES` (image indices renumbered 0, 1)."""
    keep = [vec["files"].index(f) for f in FILES]
    pairs = [k for k, (i, j) in enumerate(vec["pairs"]) if i in keep and j in keep]
    out = {key: vec[key] for key in ("config", "seed", "size", "stride", "state_dict_sum")}
    out["files"] = list(FILES)
    out["images"] = [{"name": vec["images"][i]["name"], "img_sha256": image_sha256(vec["images"][i]["img"]),
                      "true_shape": vec["images"][i]["true_shape"]} for i in keep]
    out["pairs"] = [(keep.index(vec["pairs"][k][0]), keep.index(vec["pairs"][k][1])) for k in pairs]
    for key in OUTPUTS:
        out[key] = [vec[key][k].clone() for k in pairs]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("full", type=Path, help="the full parity folder (../shared/parity)")
    ap.add_argument("out", type=Path, help="where the subset goes (tests/data/parity)")
    args = ap.parse_args()
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copyfile(args.full / "images" / f, args.out / "images" / f)
    for name in CONFIGS:
        (args.out / name).mkdir(exist_ok=True)
        shutil.copyfile(args.full / name / "manifest.json", args.out / name / "manifest.json")
        vec = torch.load(args.full / name / "vectors.pt", weights_only=True)
        torch.save(subset(vec), args.out / name / "vectors.pt")


if __name__ == "__main__":
    main()
