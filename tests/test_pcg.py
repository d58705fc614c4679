"""Conjugate gradients on the device (align/pcg.py): blocks, preconditioner and solve against
dense linear algebra."""

from __future__ import annotations

import torch

from pointmap.align.pcg import BlockJacobi, DeviceSparseSum, block_groups, csr_diagonal, pcg


def _csr(M: torch.Tensor) -> torch.Tensor:
    r, c = torch.nonzero(M, as_tuple=True)
    s = DeviceSparseSum(M.shape[0], "cpu")
    half = len(r) // 2  # two parts, summed
    s.add(r[:half], c[:half], M[r[:half], c[:half]])
    s.add(r[half:], c[half:], M[r[half:], c[half:]])
    return s.matrix()


def test_device_sparse_sum_and_diagonal():
    M = torch.tensor([[2.0, 0, 1], [0, 0, 0], [1, 0, 3]], dtype=torch.float64)
    A = _csr(M)
    torch.testing.assert_close(A.to_dense(), M)
    torch.testing.assert_close(csr_diagonal(A), torch.tensor([2.0, 0, 3], dtype=torch.float64))


def test_block_groups_split_shared_and_missing_unknowns():
    K = 7
    groups = torch.tensor([[0, 1, 6], [2, 3, 6], [4, 9, 9]])  # 6 shared, 5 in no group, 9 frozen
    got = block_groups(groups, K)
    assert got.tolist() == [[0, 1, 7], [2, 3, 7], [4, 7, 7], [5, 7, 7], [6, 7, 7]]


def test_block_jacobi_is_the_inverse_of_a_block_diagonal_matrix():
    torch.manual_seed(0)
    blocks = torch.arange(12).reshape(4, 3)
    M = torch.zeros(12, 12, dtype=torch.float64)
    for b in blocks:
        J = torch.randn(5, 3, dtype=torch.float64)
        M[b[:, None], b[None, :]] = J.T @ J
    damp = torch.full((12,), 0.5, dtype=torch.float64)
    P = BlockJacobi(_csr(M), damp, block_groups(blocks, 12))
    R = torch.randn(12, 2, dtype=torch.float64)
    torch.testing.assert_close(P(R), torch.linalg.solve(M + 0.5 * torch.eye(12, dtype=torch.float64), R))


def test_pcg_solves_a_coupled_system():
    torch.manual_seed(1)
    J = torch.randn(80, 30, dtype=torch.float64)
    M = J.T @ J
    damp = torch.linspace(1e-3, 1e-2, 30, dtype=torch.float64)
    B = torch.randn(30, 2, dtype=torch.float64)
    A = _csr(M)
    X, it = pcg(A, damp, B, BlockJacobi(A, damp, block_groups(torch.arange(30).reshape(10, 3), 30)), rtol=1e-10)
    exact = torch.linalg.solve(M + torch.diag(damp), B)
    torch.testing.assert_close(X, exact, atol=1e-8, rtol=1e-8)
    assert 1 < it <= 200
