"""Plain reference twin of the coarse optimiser (per-edge Python loop, full resolution).

Written for clarity, not speed: one log-depth map, pose and focal per image, one similarity per
edge, the reference loss summed edge by edge, Adam with betas ``(0.9, 0.9)`` and the reference
schedule. Tests compare :func:`pointmap.align.align_pairs` against it.
"""

from __future__ import annotations

import math

import torch

from ..geometry.camera import default_principal_point, normalize_pixels, pixel_grid
from ..predictions import PairPredictions
from .init import InitResult
from .params import conf_transform, lr_at, params_to_pose, pose_to_params

__all__ = ["reference_optimise"]


def reference_optimise(
    preds: PairPredictions,
    init: InitResult,
    niter: int,
    lr: float = 0.01,
    lr_min: float = 1e-6,
    schedule: str = "cosine",
    base_scale: float = 0.5,
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Optimise from ``init`` (full-resolution depths ``init.depth (N, H*W)``).

    Returns:
        ``(final loss, poses (N, 4, 4), focals (N,))``.
    """
    N = preds.n_images
    H, W = preds.image_shapes[0]
    uv = pixel_grid(H, W).reshape(-1, 2)
    pp = default_principal_point(H, W)
    log_depth = torch.nn.Parameter(init.depth.clamp(min=1e-30).log().clone())
    poses = torch.nn.Parameter(pose_to_params(init.poses[:, :3, :3], init.poses[:, :3, 3]))
    focal = torch.nn.Parameter(20 * init.focals.log())
    s = init.pw_s
    pw = torch.nn.Parameter(
        torch.cat([pose_to_params(init.pw_R, init.pw_T / s[:, None]), s.log()[:, None]], -1)
    )
    opt = torch.optim.Adam([log_depth, poses, focal, pw], lr=lr, betas=(0.9, 0.9))

    def loss_fn() -> torch.Tensor:
        pts = []
        for k in range(N):
            R, T = params_to_pose(poses[k])
            f = torch.exp(focal[k] / 20)
            d = log_depth[k].exp()
            cam = torch.cat([normalize_pixels(uv, f, f, pp) * d[:, None], d[:, None]], -1)
            pts.append(cam @ R.T + T)
        ls = pw[:, 7] - pw[:, 7].mean() + math.log(base_scale)
        li = lj = 0.0
        for e, (i, j) in enumerate(preds.pairs):
            R, T = params_to_pose(pw[e])
            sig = ls[e].exp()
            yi = sig * (preds.pts3d_1[e].reshape(-1, 3).float() @ R.T + T)
            yj = sig * (preds.pts3d_2_in_1[e].reshape(-1, 3).float() @ R.T + T)
            wi = conf_transform(preds.conf_1[e].reshape(-1).float(), "log")
            wj = conf_transform(preds.conf_2[e].reshape(-1).float(), "log")
            li = li + (wi * (pts[i] - yi).norm(dim=-1)).sum()
            lj = lj + (wj * (pts[j] - yj).norm(dim=-1)).sum()
        area = len(preds.pairs) * H * W
        return li / area + lj / area

    for t in range(niter):
        for g in opt.param_groups:
            g["lr"] = lr_at(t, niter, lr, lr_min, schedule)
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(loss_fn())
        R, T = params_to_pose(poses)
        P = torch.eye(4).repeat(N, 1, 1)
        P[:, :3, :3], P[:, :3, 3] = R, T
        return final, P, torch.exp(focal / 20)
