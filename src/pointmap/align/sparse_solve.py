"""The sparse alignment's least-squares problem (:mod:`.sparse`) and its robust
Levenberg-Marquardt solve: matches flattened over pairs (:class:`Problem`), the per-image state
(:class:`State`), the Cauchy cost, its Gauss-Newton normal equations over the per-image unknowns
(scattered from per-match analytic Jacobians, :mod:`.sparse_model`) and the annealed solve.
Steps, damping and the dense / sparse size policy come from :mod:`.lm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import scipy.sparse
import torch

from .lm import Damping, NormalEquations, SparseSum, chunks, rotate, solves_densely
from .sparse_model import GROUP, JAC, NP, res2d

__all__ = ["Problem", "State", "cost_of", "focal_term", "local", "local_cols", "normal_equations", "solve"]

_CHUNK = 8192  # matches linearised at once


@dataclass
class Problem:
    """Matches flattened over pairs (float64 tensors) and the parameter layout."""

    ii: torch.Tensor      # (M,) image of the first side
    jj: torch.Tensor      # (M,)
    xyi: torch.Tensor     # (M, 2) pixels
    xyj: torch.Tensor
    zi: torch.Tensor      # (M,) canonical depths
    zj: torch.Tensor
    ai: torch.Tensor      # (M, 4) anchor indices
    aj: torch.Tensor
    bwi: torch.Tensor     # (M, 4) bilinear weights
    bwj: torch.Tensor
    w: torch.Tensor       # (M,) sqrt confidence weights
    pp: torch.Tensor      # (N, 2)
    fu: torch.Tensor      # (N, P, 2) canonical (x/z, y/z) of P pixels per image (focal term)
    fc: torch.Tensor      # (N, P, 2) those pixels minus the principal point
    fw: torch.Tensor      # (N, P) their confidence weights (0: unused)
    cols: torch.Tensor    # (N, 7 + G) unknown of each per-image parameter, -1 when fixed
    n_cols: int


@dataclass
class State:
    """Per-image estimate: rotations ``R (N, 3, 3)``, centres ``C (N, 3)``, ``log_f (N,)``,
    log-depth anchors ``anchors (N, G)``; float64."""

    R: torch.Tensor
    C: torch.Tensor
    log_f: torch.Tensor
    anchors: torch.Tensor

    def step(self, pb: Problem, delta: torch.Tensor) -> "State":
        """The state moved by ``delta (n_cols,)``: rotations by the exponential map."""
        d = torch.cat([delta, delta.new_zeros(1)])[pb.cols]  # (N, 7 + G); fixed -> 0
        return State(rotate(self.R, d[:, :3]), self.C + d[:, 3:6], self.log_f + d[:, 6], self.anchors + d[:, NP:])


def local(pb: Problem, st: State, sel: slice) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Local parameters ``(m, 22)`` (rotation increments 0) and per-match constants of the
    matches ``sel``."""
    ii, jj = pb.ii[sel], pb.jj[sel]
    m = len(ii)
    z3 = torch.zeros(m, 3, dtype=torch.float64)
    L = torch.cat([z3, st.C[ii], st.log_f[ii, None], torch.gather(st.anchors[ii], 1, pb.ai[sel]),
                   z3, st.C[jj], st.log_f[jj, None], torch.gather(st.anchors[jj], 1, pb.aj[sel])], 1)
    consts = (pb.bwi[sel], pb.bwj[sel], pb.zi[sel], pb.zj[sel], pb.xyi[sel], pb.xyj[sel],
              pb.pp[ii], pb.pp[jj], st.R[ii], st.R[jj])
    return L, consts


def local_cols(pb: Problem, sel: slice) -> torch.Tensor:
    """Unknown of each local parameter ``(m, 22)``; fixed ones point at ``n_cols`` (dropped)."""
    ci, cj = pb.cols[pb.ii[sel]], pb.cols[pb.jj[sel]]
    cc = torch.cat([ci[:, :NP], torch.gather(ci[:, NP:], 1, pb.ai[sel]),
                    cj[:, :NP], torch.gather(cj[:, NP:], 1, pb.aj[sel])], 1)
    return torch.where(cc < 0, pb.n_cols, cc)


def focal_term(pb: Problem, st: State, sigma: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The canonical pointmaps' own evidence on the focals: every image's pixels ``p`` against the
    projection ``f u + pp`` of their canonical points (``u = (x/z, y/z)``), pixel offsets with the
    Cauchy loss of the 2-D stage (what :func:`~pointmap.geometry.camera.estimate_focal` fits,
    here weighed against the reprojections). Returns the cost and, per image, the Gauss-Newton
    terms ``H_ff (N,)`` and ``g_f (N,)`` of its log focal."""
    f = st.log_f.exp()[:, None, None]
    J = pb.fw[..., None] * f * pb.fu                      # d r / d log f, (N, P, 2)
    r = pb.fw[..., None] * (f * pb.fu - pb.fc)
    r2 = r.square().sum(-1)
    rho = 1.0 / (1.0 + r2 / sigma**2)
    cost = float((0.5 * sigma**2 * torch.log1p(r2 / sigma**2)).sum())
    return cost, (rho * J.square().sum(-1)).sum(1), (rho * (J * r).sum(-1)).sum(1)


def cost_of(pb: Problem, st: State, fn, sigma: float) -> float:
    """Robust (Cauchy) cost ``sum sigma^2 / 2 log(1 + |w r|^2 / sigma^2)`` over the matches'
    3-D distances or pixel offsets ``r``."""
    total = 0.0
    batched = torch.func.vmap(fn)
    for sel in chunks(len(pb.ii), _CHUNK):
        L, consts = local(pb, st, sel)
        r = batched(L, *consts) * pb.w[sel, None]
        r2 = r.square().reshape(len(r), -1, GROUP[fn]).sum(-1)
        total += float((0.5 * sigma**2 * torch.log1p(r2 / sigma**2)).sum())
    if fn is res2d:
        total += focal_term(pb, st, sigma)[0]
    return total


def normal_equations(pb: Problem, st: State, fn, sigma: float, dense: bool = True
                     ) -> tuple[torch.Tensor | scipy.sparse.csr_matrix, torch.Tensor, float]:
    """Gauss-Newton system of the Cauchy cost at ``st`` (reweighted: each match weighted by
    ``1 / (1 + |w r|^2 / sigma^2)`` per 3-D distance or pixel offset): ``H (n, n)`` (a dense
    tensor, or with ``dense=False`` a scipy CSR matrix), gradient ``g (n,)`` and the cost. The
    per-match Jacobian ``(D, 22)`` is analytic (:data:`~.sparse_model.JAC`)."""
    n = pb.n_cols
    H: torch.Tensor | SparseSum = torch.zeros((n + 1) * (n + 1), dtype=torch.float64) if dense else SparseSum(n + 1)
    g = torch.zeros(n + 1, dtype=torch.float64)
    cost = 0.0
    for sel in chunks(len(pb.ii), _CHUNK):
        L, consts = local(pb, st, sel)
        w = pb.w[sel, None]
        r, J = JAC[fn](L, *consts)
        r = r * w                                         # (m, D)
        J = J * w[..., None]                              # (m, D, 22)
        m, D = r.shape
        r2 = r.square().reshape(m, -1, GROUP[fn]).sum(-1)  # (m, D / group)
        cost += float((0.5 * sigma**2 * torch.log1p(r2 / sigma**2)).sum())
        rho = (1.0 / (1.0 + r2 / sigma**2)).repeat_interleave(GROUP[fn], 1)  # (m, D) IRLS weights
        Jw = J * rho[..., None].sqrt()
        Hl = Jw.transpose(1, 2) @ Jw                      # (m, 22, 22)
        gl = (J.transpose(1, 2) @ (rho * r)[..., None])[..., 0]  # (m, 22)
        cc = local_cols(pb, sel)
        g.index_add_(0, cc.reshape(-1), gl.reshape(-1))
        _scatter(H, cc[:, :, None], cc[:, None, :], Hl, n + 1)
    if fn is res2d:
        cf, hf, gf = focal_term(pb, st, sigma)
        fcol = torch.where(pb.cols[:, 6] < 0, n, pb.cols[:, 6])
        g.index_add_(0, fcol, gf)
        cost += cf
        _scatter(H, fcol, fcol, hf, n + 1)
    if isinstance(H, SparseSum):
        return H.matrix()[:n, :n], g[:n], cost
    return H.reshape(n + 1, n + 1)[:n, :n], g[:n], cost


def _scatter(H: torch.Tensor | SparseSum, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
             size: int) -> None:
    """Add ``vals`` at ``(rows, cols)`` (index tensors broadcast to ``vals``' shape) of a flat
    dense ``(size * size,)`` matrix or a :class:`~.lm.SparseSum`."""
    if isinstance(H, SparseSum):
        H.add(rows.expand_as(vals).reshape(-1), cols.expand_as(vals).reshape(-1), vals.reshape(-1))
    else:
        H.index_add_(0, (rows * size + cols).reshape(-1), vals.reshape(-1))


def solve(pb: Problem, st: State, fn, sigmas: Sequence[float], iters: int, tol: float = 1e-7,
          dense_bytes: int | None = None) -> tuple[State, int]:
    """Robust Levenberg-Marquardt from ``st``: for each Cauchy scale of ``sigmas`` (large to small,
    so that residuals far off at the start are not taken for outliers) iterate until the relative
    cost decrease is below ``tol``; at most ``iters`` linearisations over all scales. The normal
    equations are dense up to ``dense_bytes`` (:func:`.lm.solves_densely`). Returns the state and
    the number of linearisations."""
    if iters <= 0 or pb.n_cols == 0 or len(pb.ii) == 0:
        return st, 0
    dense = solves_densely(pb.n_cols, dense_bytes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: thread start-up costs more than it saves
    used = 0
    try:
        for sigma in sigmas:
            damping = Damping(1e-4, 1e-9)
            while used < iters:
                H, g, cost = normal_equations(pb, st, fn, sigma, dense)
                used += 1
                st, new = _damped_trials(pb, st, fn, sigma, NormalEquations(H, g), cost, damping)
                if new is None or (cost - new) <= tol * cost:
                    break
    finally:
        torch.set_num_threads(threads)
    return st, used


def _damped_trials(pb: Problem, st: State, fn, sigma: float, system: NormalEquations, cost: float,
                   damping: Damping, trials: int = 10) -> tuple[State, float | None]:
    """Up to ``trials`` damped steps on one linearisation: the first that lowers the cost is
    taken (``(state, its cost)``); ``(st, None)`` when none does."""
    for _ in range(trials):
        delta = system.step(damping.mu)
        if delta is None:
            damping.failed()
            continue
        trial = st.step(pb, delta)
        new = cost_of(pb, trial, fn, sigma)
        if new < cost:
            damping.accepted()
            return trial, new
        damping.rejected()
    return st, None
