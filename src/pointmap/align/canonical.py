"""What the sparse alignment (:mod:`.sparse`) reads from the pair predictions: each image's
canonical pointmap (the confidence-weighted mean of every pointmap where it comes first, at one
scale: MASt3R-SfM's canonical pointmaps) with its focal, the pixels of the focal term, and the
trimmed similarity registering two images' matched points at initialisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import GraphError
from ..geometry.camera import estimate_focal
from ..geometry.registration import rigid_registration
from ..predictions import PairPredictions
from .params import conf_transform

__all__ = ["canonical_pointmaps", "focal_pixels", "trimmed_similarity"]


def canonical_pointmaps(preds: PairPredictions, images: list[int], pp: torch.Tensor, conf_trf: str
                         ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict[int, float]]:
    """Per image its canonical pointmap ``(H, W, 3)`` (its camera frame, float64), confidence
    ``(H, W)`` and focal (pixels, :func:`~pointmap.geometry.camera.estimate_focal` of the
    canonical pointmap with principal point ``pp[k]``): the confidence-weighted (``conf_trf``)
    mean of every ``pts3d_1`` where it comes first, each brought to the scale of the most
    confident one (median ratio of depths), and the largest confidence. Averaging the pairs'
    independent errors is what makes one pointmap per image as good as all of them
    (MASt3R-SfM's canonical pointmaps)."""
    by_img: dict[int, list[int]] = {}
    for e, (i, j) in enumerate(preds.pairs):
        if i in images and i != j:
            by_img.setdefault(i, []).append(e)
    missing = [k for k in images if k not in by_img]
    if missing:
        raise GraphError(f"sparse alignment needs a pair (k, j) for every image k (its own "
                         f"pointmap); images {missing} only come second: symmetrize the pairs")
    pts, conf, focal = {}, {}, {}
    for k in images:
        ps = [preds.pts3d_1[e].double() for e in by_img[k]]
        cs = [preds.conf_1[e].float() for e in by_img[k]]
        best = max(range(len(ps)), key=lambda a: float(cs[a].mean()))
        zb = ps[best][..., 2]
        num = torch.zeros_like(ps[best])
        den = torch.zeros_like(zb)
        for p, c in zip(ps, cs):
            ok = (p[..., 2] > 0) & (zb > 0)
            s = (zb[ok] / p[..., 2][ok]).median() if bool(ok.any()) else torch.ones((), dtype=p.dtype)
            wgt = conf_transform(c, conf_trf).double().clamp(min=0) * (p[..., 2] > 0)
            num += (wgt * s)[..., None] * p
            den += wgt
        pts[k] = torch.where((den > 0)[..., None], num / den.clamp(min=1e-12)[..., None], ps[best])
        conf[k] = torch.stack(cs).amax(0)
        focal[k] = float(estimate_focal(pts[k], pp[k].double()))
    return pts, conf, focal


def focal_pixels(pts: dict[int, torch.Tensor], conf: dict[int, torch.Tensor], pp: torch.Tensor, N: int,
                  conf_trf: str, masks: Sequence[torch.Tensor | None] | None, budget: int = 4096
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pixels of the focal term (:func:`~.sparse_solve.focal_term`): per image about ``budget`` pixels on a
    regular grid, their canonical ``(x/z, y/z)`` ``(N, P, 2)``, offsets from the principal point
    ``(N, P, 2)`` and confidence weights ``(N, P)`` (0 for padding, masked or invalid pixels)."""
    per = {}
    for k, p in pts.items():
        H, W = p.shape[:2]
        step = max(1, int((H * W / budget) ** 0.5))
        ys, xs = torch.meshgrid(torch.arange(0, H, step), torch.arange(0, W, step), indexing="ij")
        ys, xs = ys.reshape(-1), xs.reshape(-1)
        q = p[ys, xs]
        ok = q[:, 2] > 0
        if masks is not None and masks[k] is not None:
            ok &= masks[k].bool()[ys, xs]
        wk = conf_transform(conf[k][ys, xs], conf_trf).double().clamp(min=0) * ok
        c = torch.stack([xs, ys], 1).double() - pp[k]
        per[k] = (q[:, :2] / q[:, 2:3].clamp(min=1e-12) * ok[:, None], c, wk)
    P = max(len(v[2]) for v in per.values())
    fu = torch.zeros(N, P, 2, dtype=torch.float64)
    fc = torch.zeros(N, P, 2, dtype=torch.float64)
    fw = torch.zeros(N, P, dtype=torch.float64)
    for k, (a, c, wk) in per.items():
        fu[k, : len(wk)], fc[k, : len(wk)], fw[k, : len(wk)] = a, c, wk
    return fu, fc, fw


def trimmed_similarity(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, rounds: int = 4
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarity ``y ~ s R x + t`` by weighted Umeyama, refitted on the best 60 % residuals."""
    keep = torch.ones(len(x), dtype=torch.bool)
    for _ in range(rounds):
        s, R, t = rigid_registration(x[keep], y[keep], w[keep])
        r = (s * x @ R.T + t - y).norm(dim=-1)
        keep = r <= r.quantile(0.6)
    return s, R, t
