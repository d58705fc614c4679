"""The Levenberg-Marquardt core both alignment solvers share (the dense coarse stage,
:mod:`.gauss_newton`, and the sparse solver, :mod:`.sparse_solve`).

* the size policy: normal equations of ``K`` unknowns (``8 K^2`` bytes as a dense float64
  matrix) are assembled and solved densely (Cholesky) up to ``AlignConfig.dense_solve_bytes``
  (:func:`dense_solve_bytes` by default), as a scipy sparse matrix (SuperLU with a
  fill-reducing ordering, factorised in float32 and refined in float64: :func:`sparse_solve`)
  above it;
* :class:`SparseSum`: chunked accumulation of ``(row, col, value)`` blocks into a sparse matrix;
* :class:`NormalEquations`: the damped step ``-(H + mu diag(H)) ^-1 g``, dense or sparse, with an
  optional zero-mean constraint on some unknowns (a gauge: projected in the dense system, a
  Lagrange multiplier in the sparse one; the same step);
* :class:`Damping`: the damping schedule; :func:`extrapolate`: longer steps along an accepted one
  while the cost keeps falling;
* small pieces: cross-product matrices, chunks, rotation updates on SO(3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import roma
import scipy.sparse
import torch
from scipy.sparse.linalg import splu

from .pcg import BlockJacobi, block_groups, csr_diagonal, pcg

__all__ = [
    "Damping", "NormalEquations", "SparseSum", "chunks", "dense_solve_bytes", "extrapolate",
    "rotate", "skew", "solves_densely", "sparse_method", "sparse_solve",
]

T = TypeVar("T")


def skew(v: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` cross-product matrices ``[v]_x`` of ``(..., 3)`` vectors."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v.unbind(-1)
    return torch.stack([z, -w, y, w, z, -x, -y, x, z], -1).reshape(v.shape + (3,))


def chunks(total: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` (at least 1) covering ``range(total)``."""
    size = max(1, int(size))
    return [slice(a, min(a + size, total)) for a in range(0, total, size)]


def rotate(R: torch.Tensor, rotvec: torch.Tensor) -> torch.Tensor:
    """Rotations ``(..., 3, 3)`` moved by left axis-angle increments ``(..., 3)`` (radians):
    ``exp([rotvec]_x) R``."""
    return roma.rotvec_to_rotmat(rotvec) @ R


def dense_solve_bytes(device: torch.device | str) -> int:
    """Default largest dense normal matrix (bytes) the solvers factorise: 128 MiB on the CPU
    (4096 unknowns, e.g. 50 images with ``logwin-5`` in the dense solver, about 500 images in
    the sparse one), 16 GiB on a GPU; larger systems are solved as sparse matrices (at 100
    images with ``logwin-5`` on the CPU the sparse solve is faster than the dense one and needs a
    fraction of its memory)."""
    return (16 << 30) if torch.device(device).type == "cuda" else (128 << 20)


def solves_densely(n_unknowns: int, limit_bytes: int | None, device: torch.device | str = "cpu") -> bool:
    """The size policy: whether ``n_unknowns`` unknowns are solved with a dense matrix
    (``8 n^2 <= limit_bytes``; ``None``: :func:`dense_solve_bytes` of ``device``)."""
    limit = dense_solve_bytes(device) if limit_bytes is None else limit_bytes
    return 8 * n_unknowns**2 <= limit


def sparse_method(solver: str, device: torch.device | str) -> str:
    """How normal equations too large for a dense matrix are solved: ``'direct'`` (a scipy
    matrix factorised on the CPU, :func:`sparse_solve`) or ``'cg'`` (a sparse tensor on the
    device, conjugate gradients, :mod:`.pcg`); ``solver='auto'``: ``'cg'`` on a GPU, ``'direct'``
    on the CPU (where one factorisation costs less than the hundreds of CG iterations)."""
    if solver not in ("auto", "direct", "cg"):
        raise ValueError(f"sparse solver {solver!r}: use 'auto', 'direct' or 'cg'")
    if solver != "auto":
        return solver
    return "cg" if torch.device(device).type == "cuda" else "direct"


class SparseSum:
    """Sums ``(row, col, value)`` triplets chunk by chunk into a ``(K, K)`` float64 CSR matrix
    (duplicates summed)."""

    def __init__(self, K: int) -> None:
        self.K = K
        self.H = scipy.sparse.csr_matrix((K, K), dtype=np.float64)

    def add(self, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor) -> None:
        """Add ``vals`` at ``(rows, cols)`` (1-D tensors of one length, any device)."""
        part = scipy.sparse.coo_matrix(
            (vals.double().cpu().reshape(-1).numpy(),
             (rows.cpu().reshape(-1).numpy(), cols.cpu().reshape(-1).numpy())), shape=(self.K, self.K)
        ).tocsr()
        self.H = self.H + part

    def matrix(self) -> scipy.sparse.csr_matrix:
        return self.H


def _project_zero_mean(H: torch.Tensor, g: torch.Tensor, idx: torch.Tensor) -> None:
    """In place ``H <- P H P + c 1 1^T / m``, ``g <- P g`` with ``P`` centring the ``m`` entries
    ``idx``: the unknowns become zero-mean updates. The rank-one term removes the null direction
    (a common shift) without changing the solution, which is orthogonal to it."""
    H[:, idx] -= H[:, idx].mean(1, keepdim=True)
    H[idx, :] -= H[idx, :].mean(0, keepdim=True)
    g[idx] -= g[idx].mean()
    c = H.diagonal()[idx].mean().clamp(min=1e-30)
    H[idx[:, None], idx[None, :]] += c / len(idx)


class NormalEquations:
    """Gauss-Newton normal equations ``H (K, K)``, ``g (K,)`` (float64) and their damped steps.

    ``H`` is a dense tensor (damped in place: it is the largest buffer) or a scipy sparse matrix;
    ``zero_mean`` (indices) constrains the step to zero-mean updates of those unknowns.
    """

    def __init__(self, H: torch.Tensor | scipy.sparse.spmatrix, g: torch.Tensor,
                 zero_mean: torch.Tensor | None = None, blocks: torch.Tensor | None = None) -> None:
        self.H, self.g = H, g
        self.on_device = isinstance(H, torch.Tensor) and H.layout == torch.sparse_csr
        self.dense = isinstance(H, torch.Tensor) and not self.on_device
        self.pin: np.ndarray | None = None
        self.cg_iterations = 0
        if self.dense:
            if zero_mean is not None:
                _project_zero_mean(H, g, zero_mean)
            diag = H.diagonal().clone()
        elif self.on_device:  # conjugate gradients on the device (:mod:`.pcg`)
            K = H.shape[0]
            self.blocks = block_groups(blocks if blocks is not None else torch.arange(K, device=g.device)[:, None], K)
            self.a = None if zero_mean is None else torch.zeros_like(g).index_fill_(0, zero_mean, 1.0)
            diag = csr_diagonal(H)
        else:
            if zero_mean is not None:
                self.pin = zero_mean.cpu().numpy()
            diag = torch.from_numpy(H.diagonal()).to(g.device)
        self.diag = diag
        self.floor = diag.clamp(min=1e-12 * float(diag.abs().max().clamp(min=1e-30))) if len(diag) else diag

    def step(self, mu: float) -> torch.Tensor | None:
        """The step ``-(H + mu floor(diag H))^-1 g`` (``None`` when the factorisation fails)."""
        if self.dense:
            self.H.diagonal().copy_(self.diag + mu * self.floor)
            Lc, info = torch.linalg.cholesky_ex(self.H)
            if int(info) != 0:
                return None
            return -torch.cholesky_solve(self.g[:, None], Lc)[:, 0]
        if self.on_device:
            return self._device_step(mu * self.floor)
        return self._sparse_step((mu * self.floor).cpu().numpy())

    def _device_step(self, damp: torch.Tensor) -> torch.Tensor | None:
        B = self.g[:, None] if self.a is None else torch.stack([self.g, self.a], 1)
        X, self.cg_iterations = pcg(self.H, damp, B, BlockJacobi(self.H, damp, self.blocks))
        x = X[:, 0] if self.a is None else _constrained(X, self.a)
        return -x if bool(torch.isfinite(x).all()) else None

    def _sparse_step(self, damp: np.ndarray) -> torch.Tensor | None:
        gn = self.g.cpu().numpy()
        B = gn[:, None] if self.pin is None else np.stack([gn, _indicator(len(gn), self.pin)], 1)
        X = sparse_solve(self.H, B, damp=damp)
        if X is None:
            return None
        x = X[:, 0] if self.pin is None else _constrained(X, B[:, 1])
        if not np.isfinite(x).all():
            return None
        return -torch.from_numpy(x).to(self.g.device)


def _constrained(X, a):
    """The step of the zero-mean constraint ``a^T x = 0`` from the solutions ``X = [x1, xa]`` of
    the right-hand sides ``[g, a]`` (a Lagrange multiplier: the KKT solution, the same step as
    the projected dense system); numpy arrays or tensors."""
    x1, xa = X[:, 0], X[:, 1]
    return x1 - (a @ x1) / (a @ xa) * xa


def _indicator(n: int, idx: np.ndarray) -> np.ndarray:
    a = np.zeros(n)
    a[idx] = 1.0
    return a


def _factorise(A: scipy.sparse.spmatrix, damp: np.ndarray, dtype: type):
    """SuperLU, in ``dtype``, of ``A + diag(damp)`` for a symmetric positive definite ``A`` (CSR
    or CSC; fill-reducing ordering of ``A + A^T``, no pivoting); ``None`` when it is exactly
    singular. A CSR matrix is factorised as its transpose, the CSC matrix with its arrays: no
    copy beyond the damped ``dtype`` one."""
    M = A.astype(dtype) + scipy.sparse.diags(damp.astype(dtype))
    M = M.T if M.format == "csr" else M.tocsc()  # symmetric: the transpose is the matrix
    try:
        return splu(M, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    except RuntimeError:
        return None


def sparse_solve(A: scipy.sparse.spmatrix, B: np.ndarray, refine: int = 3, rtol: float = 1e-12,
                 damp: np.ndarray | None = None) -> np.ndarray | None:
    """``(A + diag(damp))^-1 B`` (float64) for a sparse symmetric positive definite ``A (K, K)``
    (CSR or CSC), ``damp (K,)`` (zero when ``None``) and ``B (K, m)``: factorised in float32 (half
    the fill's memory: 1.9 GB against 2.8 GB of peak for the normal equations of 1000 images
    under ``logwin-5``, 77,000 unknowns) and refined in float64 (each round solves for the
    residual ``B - (A + diag(damp)) X``, the damped matrix never formed in float64) until the
    relative residual is below ``rtol`` (two rounds gave 1e-14 there, the float64
    factorisation's own); if ``refine`` rounds do not get it below ``1e-8``, the float64
    factorisation is used instead. ``None`` when the matrix is singular."""
    d = np.zeros(A.shape[0]) if damp is None else np.asarray(damp, dtype=np.float64)
    lu = _factorise(A, d, np.float32)
    if lu is not None:
        X = lu.solve(B.astype(np.float32)).astype(np.float64)
        scale = max(float(np.abs(B).max()), 1e-300)
        for r in range(refine + 1):  # the residual of each X, refined at most `refine` times
            R = B - A @ X - d[:, None] * X
            err = float(np.abs(R).max()) / scale
            if not np.isfinite(err) or err <= rtol or r == refine:
                break
            X += lu.solve(R.astype(np.float32)).astype(np.float64)
        if np.isfinite(X).all() and err <= 1e-8:
            return X
        del lu
    lu = _factorise(A, d, np.float64)
    return None if lu is None else lu.solve(B)


@dataclass
class Damping:
    """Levenberg-Marquardt damping ``mu``: divided by 3 (down to ``floor``) after an accepted
    step, times 8 after a rejected one, times 10 when the damped system cannot be factorised."""

    mu: float = 1e-4
    floor: float = 1e-8

    def accepted(self) -> None:
        self.mu = max(self.mu / 3, self.floor)

    def rejected(self) -> None:
        self.mu *= 8

    def failed(self) -> None:
        self.mu *= 10


def extrapolate(trial: Callable[[float], tuple[float, T]], cost: float, value: T, times: int
                ) -> tuple[float, T]:
    """After an accepted step (cost ``cost``, result ``value``) try the steps ``2, 4, ...,
    2**times`` times as long (``trial(factor) -> (cost, value)``) and keep them while the cost keeps
    falling. A majoriser (e.g. IRLS weights) is stiffer than the robust loss along the residuals,
    so its steps fall short along smooth deformations of long camera chains."""
    for t in range(1, times + 1):
        far_cost, far_value = trial(float(2**t))
        if not (math.isfinite(far_cost) and far_cost < cost):
            break
        cost, value = far_cost, far_value
    return cost, value

