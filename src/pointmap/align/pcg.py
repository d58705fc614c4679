"""Large sparse normal equations kept on the compute device and solved by block-Jacobi
preconditioned conjugate gradients.

Above the dense size policy (:func:`.lm.solves_densely`) the coarse stage's reduced normal
equations were assembled as a scipy matrix and factorised on the CPU (SuperLU): at 1000 images
with ``logwin-5`` (76,994 unknowns, 20.5 M non-zeros) one factorisation takes 16 s on a 2-core
CPU, and every step is a host round trip. On a GPU the matrix stays on the device instead
(:class:`DeviceSparseSum`, a CSR tensor) and each damped step is solved by conjugate gradients
(:func:`pcg`), preconditioned by the exact inverses of the 7x7 blocks of each camera and each
pair similarity (:class:`BlockJacobi`). On that 1000-image system CG needed 480 iterations for a
relative residual of 1e-4 and 891 for 1e-6 (plain Jacobi: 705 and 1215); each is one sparse
matrix product, so a step costs a fraction of a second on a GPU. A step that has not converged
within ``max_iter`` is returned as it is: Levenberg-Marquardt keeps it only if it lowers the
loss, else raises the damping, which also makes the system better conditioned.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["BlockJacobi", "DeviceSparseSum", "block_groups", "csr_diagonal", "pcg"]


class DeviceSparseSum:
    """Sums ``(row, col, value)`` triplets into a ``(K, K)`` float64 CSR tensor on ``device``
    (duplicates summed); the twin of :class:`.lm.SparseSum`, which builds a scipy matrix."""

    def __init__(self, K: int, device: torch.device | str) -> None:
        self.K, self.device = K, torch.device(device)
        self.parts: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor) -> None:
        """Add ``vals`` at ``(rows, cols)`` (1-D tensors of one length)."""
        idx = torch.stack([rows.reshape(-1), cols.reshape(-1)]).to(self.device)
        self.parts.append((idx, vals.reshape(-1).to(self.device, torch.float64)))

    def matrix(self) -> torch.Tensor:
        """The sum as a ``(K, K)`` float64 sparse CSR tensor (the parts coalesced once: each
        image's blocks are about 150^2 entries, 2.6 GB of triplets at 5000 images)."""
        idx = torch.cat([p[0] for p in self.parts], 1) if self.parts else torch.zeros(2, 0, dtype=torch.long,
                                                                                       device=self.device)
        val = torch.cat([p[1] for p in self.parts]) if self.parts else torch.zeros(0, dtype=torch.float64,
                                                                                   device=self.device)
        self.parts = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            coo = torch.sparse_coo_tensor(idx, val, (self.K, self.K), check_invariants=False)
            del idx, val
            return coo.coalesce().to_sparse_csr()


def block_groups(groups: torch.Tensor, K: int) -> torch.Tensor:
    """``(G, B)`` unknown indices of the preconditioner's blocks (``K`` pads) from candidate
    groups ``(G0, B)`` (e.g. each camera's and each edge's 7 unknowns, ``>= K`` for frozen
    ones): an unknown in several candidate groups (a shared focal) and an unknown in none get a
    block of their own."""
    dev = groups.device
    B = groups.shape[1]
    g = torch.where(groups < K, groups, K)
    count = torch.bincount(g.reshape(-1), minlength=K + 1)
    g = torch.where((g < K) & (count[g] == 1), g, K)
    g = g[(g < K).any(1)]
    alone = torch.nonzero(count[:K] != 1).flatten()
    single = torch.full((len(alone), B), K, dtype=torch.long, device=dev)
    single[:, 0] = alone
    return torch.cat([g, single])


class BlockJacobi:
    """The preconditioner ``z = blockdiag(A)^-1 r`` of a CSR matrix ``A`` with ``damp`` added to
    its diagonal, for the blocks ``blocks (G, B)`` of :func:`block_groups`."""

    def __init__(self, A: torch.Tensor, damp: torch.Tensor, blocks: torch.Tensor) -> None:
        K = A.shape[0]
        G, B = blocks.shape
        dev = damp.device
        self.blocks, self.K = blocks, K
        which = torch.full((K + 1,), -1, dtype=torch.long, device=dev)
        pos = torch.zeros(K + 1, dtype=torch.long, device=dev)
        real = blocks < K
        which[blocks[real]] = torch.nonzero(real)[:, 0]
        pos[blocks[real]] = torch.nonzero(real)[:, 1]
        rows = _csr_rows(A)
        cols, vals = A.col_indices(), A.values()
        keep = (which[rows] >= 0) & (which[rows] == which[cols])
        M = torch.zeros(G, B, B, dtype=torch.float64, device=dev)
        M[which[rows[keep]], pos[rows[keep]], pos[cols[keep]]] = vals[keep]
        diag = M.diagonal(dim1=1, dim2=2)
        diag += torch.where(real, torch.cat([damp, damp.new_zeros(1)])[blocks], 1.0)
        inv, info = torch.linalg.inv_ex(M)
        bad = info != 0
        if bool(bad.any()):  # a singular block: its diagonal alone
            inv[bad] = torch.diag_embed(1 / diag[bad].clamp(min=1e-300))
        self.inv = inv

    def __call__(self, R: torch.Tensor) -> torch.Tensor:
        """``(K, m)`` -> ``(K, m)``."""
        ext = torch.cat([R, R.new_zeros(1, R.shape[1])])
        Z = self.inv @ ext[self.blocks]  # (G, B, m)
        out = torch.zeros_like(ext)
        out[self.blocks.reshape(-1)] = Z.reshape(-1, R.shape[1])
        return out[:-1]


def pcg(A: torch.Tensor, damp: torch.Tensor, B: torch.Tensor, precond: BlockJacobi, rtol: float = 1e-6,
        max_iter: int = 400) -> tuple[torch.Tensor, int]:
    """Solve ``(A + diag(damp)) X = B`` for each column of ``B (K, m)`` by preconditioned
    conjugate gradients (``A`` a symmetric positive semi-definite CSR tensor); stops when every
    column's residual is below ``rtol`` times its right-hand side (2-norm) or after
    ``max_iter`` iterations (each iterate, from ``X = 0``, lowers the quadratic model, so a
    truncated solve is still a descent step: Levenberg-Marquardt's time per step stays bounded
    whatever the predictions). Returns ``(X, iterations)``."""

    def apply(X: torch.Tensor) -> torch.Tensor:
        return A @ X + damp[:, None] * X

    X = torch.zeros_like(B)
    R = B.clone()
    Z = precond(R)
    P = Z.clone()
    rz = (R * Z).sum(0)
    target = rtol * B.norm(dim=0)
    it = 0
    check = 10  # the convergence test syncs with the host: every few iterations
    while it < max_iter:
        AP = apply(P)
        alpha = rz / (P * AP).sum(0).clamp(min=1e-300)
        X += alpha * P
        R -= alpha * AP
        it += 1
        if it % check == 0:
            res = R.norm(dim=0)
            if bool((res <= target).all()) or not bool(torch.isfinite(res).all()):
                break
        Z = precond(R)
        rz_new = (R * Z).sum(0)
        P = Z + (rz_new / rz.clamp(min=1e-300)) * P
        rz = rz_new
    return X, it


def csr_diagonal(A: torch.Tensor) -> torch.Tensor:
    """The diagonal ``(K,)`` of a square CSR tensor (zeros where it stores nothing)."""
    K = A.shape[0]
    rows = _csr_rows(A)
    on = rows == A.col_indices()
    return torch.zeros(K, dtype=A.dtype, device=A.device).index_add_(0, rows[on], A.values()[on])


def _csr_rows(A: torch.Tensor) -> torch.Tensor:
    """The row index of each stored entry of a CSR tensor."""
    return torch.repeat_interleave(torch.arange(A.shape[0], device=A.device), A.crow_indices().diff())
