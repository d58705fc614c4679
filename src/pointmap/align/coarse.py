"""Coarse stage of global alignment: the reference parametrisation on a strided pixel sample and
its two solvers (robust Levenberg-Marquardt, :mod:`.gauss_newton`, or the reference Adam loop).

Model (as the reference): per image a log-depth per pixel, a camera-to-world pose (quaternion +
signed-log translation) and a focal (``20 log f``); per edge a similarity ``sigma (R X + T)`` whose
scales have their geometric mean pinned to ``base_scale``. Loss: confidence-weighted (``log``)
Euclidean distance between each image's points and every edge's prediction of them, normalised by
the total pixel area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..geometry.camera import normalize_pixels
from .common import KnownCameras
from .config import AlignConfig
from .data import CoarseData
from .gauss_newton import GNProblem, GNState, gauss_newton, loss_and_depth
from .init import InitResult
from .params import lr_at, params_to_pose, pose_to_params

__all__ = ["CoarseModel", "CoarseResult", "coarse_solve", "optimise_adam"]


class CoarseModel(torch.nn.Module):
    """Reference parametrisation on the coarse pixels; frozen entries via ``torch.where`` (the
    log-depths of the images whose depth is known stay at the initial ones)."""

    def __init__(
        self, data: CoarseData, init: InitResult, known: KnownCameras, shared_focal: bool,
        base_scale: float,
    ) -> None:
        """Parameters initialised from ``init``; entries given in ``known`` stay frozen."""
        super().__init__()
        dev = data.pts_i.device
        self.data = data
        self.norm_pw_scale = init.norm_pw_scale
        self.base_scale = base_scale
        d = init.depth
        good = (d > 0) & torch.isfinite(d)
        med = torch.stack([
            d[k][good[k]].median() if good[k].any() else d.new_tensor(1.0) for k in range(len(d))
        ])
        logd = torch.where(good, d.clamp(min=1e-30).log(), med.log()[:, None])
        self.log_depth = torch.nn.Parameter(logd)
        self.register_buffer("depth_frozen", known.depth_mask.to(dev))
        self.register_buffer("log_depth_fixed", logd.detach().clone())
        self.pose_params = torch.nn.Parameter(
            pose_to_params(init.poses[:, :3, :3], init.poses[:, :3, 3])
        )
        kp = known.pose_mask.to(dev)
        self.register_buffer("pose_frozen", kp)
        self.register_buffer(
            "pose_fixed", pose_to_params(known.poses[:, :3, :3].to(dev), known.poses[:, :3, 3].to(dev))
        )
        kf = known.focal_mask.to(dev)
        self.register_buffer("focal_frozen", kf)
        self.register_buffer("focal_fixed", known.focals.to(dev))
        self.register_buffer("pp", known.pp.to(dev))
        self.register_buffer("skew", known.skew.to(dev))
        self.shared = shared_focal
        free_f = init.focals[~kf] if (~kf).any() else init.focals
        if shared_focal:
            self.focal_param = torch.nn.Parameter(20 * free_f.log().mean().reshape(1))
        else:
            self.focal_param = torch.nn.Parameter(20 * init.focals.log())
        s = init.pw_s
        self.pw_params = torch.nn.Parameter(
            torch.cat([pose_to_params(init.pw_R, init.pw_T / s[:, None]), s.log()[:, None]], -1)
        )
        area = data.valid.sum(1).float()
        self.A_i = area[data.ei].sum().clamp(min=1)
        self.A_j = area[data.ej].sum().clamp(min=1)

    def cameras(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``R (N,3,3)``, ``C (N,3)``, ``fx (N,)``, ``fy (N,)``."""
        p = torch.where(self.pose_frozen[:, None], self.pose_fixed, self.pose_params)
        R, C = params_to_pose(p)
        f = torch.exp(self.focal_param / 20)
        f = f.expand(len(p)) if self.shared else f
        fx = torch.where(self.focal_frozen, self.focal_fixed[:, 0], f)
        fy = torch.where(self.focal_frozen, self.focal_fixed[:, 1], f)
        return R, C, fx, fy

    def pair_similarities(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(s (E,), R (E,3,3), T (E,3))``: prediction ``P`` -> world ``s R P + T``."""
        R, Tp = params_to_pose(self.pw_params[:, :7])
        ls = self.pw_params[:, 7]
        if self.norm_pw_scale:
            ls = ls - ls.mean() + math.log(self.base_scale)
        s = ls.exp()
        return s, R, s[:, None] * Tp

    def log_depths(self) -> torch.Tensor:
        """``(N, n)`` log z-depths of the coarse pixels (the known ones held)."""
        return torch.where(self.depth_frozen[:, None], self.log_depth_fixed, self.log_depth)

    def rays(self, R: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
        """``(N, n, 3)`` world directions (unit camera-z) of the coarse pixels."""
        xy = normalize_pixels(self.data.uv, fx[:, None], fy[:, None], self.pp[:, None], self.skew[:, None])
        cam = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)
        return cam @ R.transpose(1, 2)

    def targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every edge's predictions in the world: ``(E, n, 3)`` for its first and second image."""
        s, Rp, Tp = self.pair_similarities()
        M = (s[:, None, None] * Rp).transpose(1, 2)
        d = self.data
        return torch.baddbmm(Tp[:, None, :], d.pts_i, M), torch.baddbmm(Tp[:, None, :], d.pts_j, M)

    def residuals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E, n)`` distances between each image's points and their edge predictions."""
        d = self.data
        R, C, fx, fy = self.cameras()
        X = C[:, None, :] + self.log_depths().exp()[..., None] * self.rays(R, fx, fy)
        Yi, Yj = self.targets()
        return (X[d.ei] - Yi).norm(dim=-1), (X[d.ej] - Yj).norm(dim=-1)

    def forward(self, dist: str) -> torch.Tensor:
        d = self.data
        li, lj = self.residuals()
        if dist == "l2":
            li, lj = li * li, lj * lj
        return (d.w_i * li).sum() / self.A_i + (d.w_j * lj).sum() / self.A_j


def optimise_adam(model: CoarseModel, cfg: AlignConfig, niter: int, progress: bool) -> float:
    """Reference coarse stage: Adam (betas ``(0.9, 0.9)``) on every parameter with the reference
    learning-rate schedule. Returns the final loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if niter > 0:
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.9))
        with tqdm(range(niter), desc="global alignment (Adam)", disable=not progress) as bar:
            for t in bar:
                for g in opt.param_groups:
                    g["lr"] = lr_at(t, niter, cfg.lr, cfg.lr_min, cfg.schedule)
                opt.zero_grad(set_to_none=True)
                loss = model(cfg.dist)
                loss.backward()
                opt.step()
                if progress and t % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss):.5g}")
    with torch.no_grad():
        return float(model(cfg.dist))


@dataclass
class CoarseResult:
    """Result of the coarse stage (on the compute device).

    ``R (N,3,3)``, ``C (N,3)``, ``fx, fy (N,)``, ``pp (N,2)`` cameras; ``s (E,)``, ``Rp (E,3,3)``,
    ``Tp (E,3)`` pair similarities (prediction ``P`` -> world ``s Rp P + Tp``); ``log_depth
    (N, n)`` at the coarse pixels; coarse losses before / after; ``skew (N,)`` the cameras'
    skews (pixels; those of known intrinsics, else 0).
    """

    R: torch.Tensor
    C: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    pp: torch.Tensor
    s: torch.Tensor
    Rp: torch.Tensor
    Tp: torch.Tensor
    log_depth: torch.Tensor
    init_loss: float
    loss: float
    iterations: int
    skew: torch.Tensor | None = None


def coarse_solve(
    data: CoarseData, init: InitResult, known: KnownCameras, cfg: AlignConfig, progress: bool,
) -> CoarseResult:
    """Coarse stage with ``cfg.solver`` from the initialisation ``init``."""
    model = CoarseModel(data, init, known, cfg.shared_focal, cfg.base_scale)
    if cfg.solver == "adam":
        with torch.no_grad():
            init_loss = float(model(cfg.dist))
        loss = optimise_adam(model, cfg, cfg.iterations, progress)
        with torch.no_grad():
            R, C, fx, fy = model.cameras()
            s, Rp, Tp = model.pair_similarities()
        return CoarseResult(
            R, C, fx, fy, model.pp, s, Rp, Tp, model.log_depths().detach(), init_loss, loss, cfg.iterations,
            model.skew,
        )
    with torch.no_grad():
        R, C, fx, fy = model.cameras()
        s, Rp, Tp = model.pair_similarities()
        st = GNState(
            R=R, C=C, log_f=torch.stack([fx, fy], -1).log(), depth=model.log_depths().exp(),
            Re=Rp, te=Tp, log_s=s.log(),
        )
    pb = GNProblem.build(
        data, model.pp, model.pose_frozen, model.focal_frozen, cfg.shared_focal, model.norm_pw_scale,
        model.skew, model.depth_frozen,
    )
    # the loss at the initialisation, image by image (memory bounded by the chunk budget)
    init_loss = loss_and_depth(st, pb, cfg.dist, 1e-12, None, 0, cfg.chunk_slot_pixels)[0]
    st, loss, iters = gauss_newton(
        st, pb, cfg.dist, cfg.iterations, cfg.tol, cfg.chunk_slot_pixels, progress,
        dense_bytes=cfg.dense_solve_bytes, sparse_solver=cfg.sparse_solver,
    )
    f = st.log_f.exp()
    return CoarseResult(
        st.R, st.C, f[:, 0], f[:, 1], model.pp, st.log_s.exp(), st.Re, st.te,
        st.depth.clamp(min=1e-30).log(), init_loss, loss, iters, model.skew,
    )
