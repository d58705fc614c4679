"""Why the synthetic translation and depth targets fail: what they ask of a pointmap.

    python scripts/target_analysis.py [--pairs 128] [--model default]

On the held-out synthetic pairs of ``pointmap eval synthetic`` (``val`` split, 224 x 224, seed 0):

1. **Sensitivity.** The exact GT pointmap of view 1 in camera 0's frame is perturbed by a smooth
   random 3D displacement (a 4 x 4 grid of Gaussian vectors, bilinearly upsampled) whose size is
   ``eps`` times each point's distance from camera 0, then camera 1 is recovered by the same
   PnP-RANSAC the evaluation uses (GT intrinsics, all valid pixels). The table gives the fraction
   of pairs with translation direction within 15 degrees, for all pairs and for the pairs whose
   baseline is at least 2 % of the scene depth. A perturbation *along* camera 1's rays leaves the
   PnP pose unchanged (only the lateral part matters), hence an isotropic field.
2. **The model.** The same relative 3D error of the network's ``pts3d_2_in_1`` (pair (0, 1)),
   after the one least-squares scale that the prediction leaves free, with its translation
   fraction from ``pointmap eval synthetic`` for comparison.
3. **Depth near discontinuities.** The AbsRel of view 0's depth (``pts3d_1`` of pair (0, 1), median
   scaled) split into *edge zones* (valid pixels whose 9 x 9 neighbourhood spans a GT depth ratio
   above 1.15) and the rest: the share of the error that sits at depth edges, where a linear head
   that predicts each 16 x 16 patch from one token is coarsest.

Prints Markdown tables (CPU, about two minutes for 128 pairs).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import maximum_filter, minimum_filter

from pointmap.eval import metrics as M
from pointmap.eval.cli_support import resolve_model
from pointmap.eval.synthetic_eval import baseline_ratio, eval_synthetic
from pointmap.geometry import pnp_ransac
from pointmap.inference import infer_pairs
from pointmap.train.synthetic import SyntheticConfig, render_pair_batch

EPS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08)


def _smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """``(h, w, 3)`` smooth random vectors of unit RMS length."""
    g = torch.from_numpy(rng.standard_normal((1, 3, 4, 4))).float()
    f = F.interpolate(g, size=(h, w), mode="bilinear", align_corners=True)[0].permute(1, 2, 0).numpy()
    return f / np.sqrt(3.0)


def _gt_pairs(n_pairs: int) -> list[dict[str, np.ndarray]]:
    """Per pair: view 1's GT points in camera 0's frame, its mask and intrinsics, ``T_0_from_1``,
    the baseline ratio, both images and view 0's GT depth (0 = invalid)."""
    cfg = SyntheticConfig(split="val", resolution=(224, 224), seed=0)
    out = []
    for s in range(0, n_pairs, 16):
        ids = list(range(s, min(n_pairs, s + 16)))
        v1, v2 = render_pair_batch(cfg, ids, device="cpu")
        for b in range(len(ids)):
            P0 = M.as_numpy(v1["camera_pose"][b])
            T = np.linalg.inv(P0) @ M.as_numpy(v2["camera_pose"][b])
            w2c0 = np.linalg.inv(P0)
            pts = M.as_numpy(v2["pts3d"][b]) @ w2c0[:3, :3].T + w2c0[:3, 3]
            valid0 = M.as_numpy(v1["valid_mask"][b], dtype=bool)
            depth0 = np.where(valid0, M.as_numpy(v1["depthmap"][b]), 0.0)
            out.append({"pts": pts, "mask": M.as_numpy(v2["valid_mask"][b], dtype=bool), "T": T,
                        "K": M.as_numpy(v2["camera_intrinsics"][b]), "ratio": baseline_ratio(T, depth0, valid0),
                        "img0": v1["img"][b], "img1": v2["img"][b], "depth0": depth0})
    return out


def sensitivity(pairs: list[dict[str, np.ndarray]], eps: float, seed: int = 0) -> tuple[float, float, float]:
    """``(median relative error, fraction < 15 deg (all), fraction < 15 deg (baseline >= 2 %))``."""
    rng = np.random.default_rng(seed)
    ok, ok_wide, rel = [], [], []
    for p in pairs:
        pts = p["pts"]
        dist = np.linalg.norm(pts, axis=-1, keepdims=True)
        noisy = pts + eps * dist * _smooth_field(rng, *pts.shape[:2])
        rel.append(np.median((np.linalg.norm(noisy - pts, axis=-1) / dist[..., 0])[p["mask"]]))
        K = p["K"]
        res = pnp_ransac(torch.from_numpy(noisy.astype(np.float32)), torch.from_numpy(p["mask"]),
                         focal=float(K[0, 0]), pp=(float(K[0, 2]), float(K[1, 2])), iterations=100)
        err = 180.0 if res is None else float(M.direction_error_deg(M.as_numpy(res[1])[:3, 3], p["T"][:3, 3]))
        ok.append(err < 15.0)
        if p["ratio"] >= 0.02:
            ok_wide.append(err < 15.0)
    return float(np.median(rel)), float(np.mean(ok)), float(np.mean(ok_wide))


def edge_zones(depth: np.ndarray, size: int = 9, ratio: float = 1.15) -> np.ndarray:
    """Valid pixels of a depth map (0 = invalid) whose ``size`` neighbourhood spans a depth ratio above ``ratio``."""
    valid = depth > 0
    log_d = np.log(np.where(valid, depth, 1.0))
    log_d[~valid] = np.median(log_d[valid]) if valid.any() else 0.0
    return valid & (maximum_filter(log_d, size=size) - minimum_filter(log_d, size=size) > np.log(ratio))


def model_error(pairs: list[dict[str, np.ndarray]], model: str) -> tuple[float, dict[str, float]]:
    """Median over pairs of the median relative 3D error of ``pts3d_2_in_1`` after one scale, and
    view 0's depth error split at depth edges (see the module docstring)."""
    net = resolve_model(model, "cpu")
    errs, rel_all, rel_flat, edge_frac, mass_edge, mass_all = [], [], [], [], 0.0, 0.0
    for s in range(0, len(pairs), 16):
        chunk = pairs[s:s + 16]
        imgs = [im for p in chunk for im in (p["img0"], p["img1"])]
        preds = infer_pairs(net, imgs, [(2 * k, 2 * k + 1) for k in range(len(chunk))], batch_size=16,
                            device="cpu")
        for k, p in enumerate(chunk):
            g = p["pts"][p["mask"]]
            q = M.as_numpy(preds.pts3d_2_in_1[k])[p["mask"]]
            scale = (g * q).sum() / (q * q).sum()
            errs.append(np.median(np.linalg.norm(scale * q - g, axis=-1) / np.linalg.norm(g, axis=-1)))
            rel_map = M.abs_rel_map(preds.pts3d_1[k][..., 2], p["depth0"])
            valid = np.isfinite(rel_map)
            rel, edge = rel_map[valid], edge_zones(p["depth0"])[valid]
            rel_all.append(rel.mean())
            rel_flat.append(rel[~edge].mean() if (~edge).any() else np.nan)
            edge_frac.append(edge.mean())
            mass_edge += rel[edge].sum()
            mass_all += rel.sum()
    depth = {"abs_rel": float(np.mean(rel_all)), "abs_rel_outside_edges": float(np.nanmean(rel_flat)),
             "edge_pixels": float(np.mean(edge_frac)), "edge_error_share": mass_edge / mass_all}
    return float(np.median(errs)), depth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--model", default="default")
    args = ap.parse_args()
    pairs = _gt_pairs(args.pairs)
    wide = sum(p["ratio"] >= 0.02 for p in pairs)
    print(f"{len(pairs)} held-out pairs, {wide} with a baseline of at least 2 % of the scene depth\n")
    print("| pointmap | median relative 3D error | translation < 15 deg (all pairs) | (baseline >= 2 %) |")
    print("|---|---|---|---|")
    for eps in EPS:
        rel, frac, frac_wide = sensitivity(pairs, eps)
        print(f"| GT + smooth error, eps = {eps:g} | {100 * rel:.2f} % | {100 * frac:.1f} % | "
              f"{100 * frac_wide:.1f} % |", flush=True)
    rel, depth = model_error(pairs, args.model)
    res, items = eval_synthetic(None, model=args.model, n_pairs=args.pairs, plots=False)
    frac = res["ours"]["frac_trans_lt15"]
    frac_wide = float(np.mean([it["trans_err_deg"] < 15 for it in items if it["baseline_ratio"] >= 0.02]))
    print(f"| network ({args.model}), PnP with estimated focal | {100 * rel:.2f} % | {100 * frac:.1f} % | "
          f"{100 * frac_wide:.1f} % |")
    print("\n| view 0 depth (pair (0, 1)) | AbsRel | AbsRel outside edge zones | edge-zone pixels "
          "| share of the error in edge zones |")
    print("|---|---|---|---|---|")
    print(f"| network ({args.model}) | {depth['abs_rel']:.3f} | {depth['abs_rel_outside_edges']:.3f} | "
          f"{100 * depth['edge_pixels']:.1f} % | {100 * depth['edge_error_share']:.1f} % |")


if __name__ == "__main__":
    main()
