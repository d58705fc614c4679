"""Alignment of store-backed predictions: streamed image by image, same result as in memory."""

from __future__ import annotations

import pytest
import torch

from pointmap.align import AlignConfig, align_pairs
from pointmap.store import PredictionStore
from pointmap.testing.synthetic_pairs import make_synthetic_scene


def _stored(preds, path):
    store = PredictionStore.open(path, {"test": 1})
    for a in range(0, len(preds), 5):
        idx = range(a, min(a + 5, len(preds)))
        store.write([preds.pairs[e] for e in idx], {
            name: torch.stack([getattr(preds, name)[e] for e in idx])
            for name in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")})
    return store.predictions(preds.pairs, n_images=preds.n_images)


def test_store_backed_alignment_matches_in_memory(tmp_path):
    gt = make_synthetic_scene(6, (40, 30), graph="swin-2", seed=4, dtype=torch.float16)
    lazy = _stored(gt.preds, tmp_path / "s")
    assert lazy.lazy
    cfg = AlignConfig()
    ref = align_pairs(gt.preds, config=cfg)
    got = align_pairs(lazy, config=cfg)
    torch.testing.assert_close(got.scene.poses, ref.scene.poses, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.scene.focals, ref.scene.focals, atol=1e-3, rtol=0)
    for a, b in zip(got.scene.depths, ref.scene.depths):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=5e-4)  # streamed vs cached dense passes
    for a, b in zip(got.scene.confidence, ref.scene.confidence):
        torch.testing.assert_close(a, b)
    assert abs(got.dense_loss - ref.dense_loss) <= 1e-5 * abs(ref.dense_loss)
    assert got.scene.placed.all()


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_sparse_coarse_solve_equals_dense(solver):
    """The sparse normal-equation solves of large scenes (factorised on the CPU, or conjugate
    gradients on the device) reach the dense one's solution: same loss and cameras (they damp
    the scale-constrained system slightly differently, so they agree to a small tolerance, and
    the stopping test may fire an iteration or two apart); with two known poses (no scale
    pinning) and a shared focal (one unknown in every camera's block) too."""
    gt = make_synthetic_scene(8, (32, 24), graph="swin-3", seed=2)
    for kw, shared in (({}, False), ({"known_poses": {0: gt.poses[0], 5: gt.poses[5]}}, False), ({}, True)):
        dense = align_pairs(gt.preds, config=AlignConfig(dense_solve_bytes=1 << 40, dense=False,
                                                         shared_focal=shared), **kw)
        sparse = align_pairs(gt.preds, config=AlignConfig(dense_solve_bytes=0, dense=False, sparse_solver=solver,
                                                          shared_focal=shared), **kw)
        assert min(sparse.iterations, dense.iterations) > 3
        assert abs(sparse.iterations - dense.iterations) <= 2
        assert abs(sparse.loss - dense.loss) <= 1e-3 * dense.loss
        torch.testing.assert_close(sparse.scene.poses, dense.scene.poses, atol=1e-3, rtol=0)
        torch.testing.assert_close(sparse.scene.focals, dense.scene.focals, atol=0, rtol=1e-3)
        torch.testing.assert_close(sparse.pair_poses, dense.pair_poses, atol=1e-3, rtol=0)


def test_sparse_solve_in_float32_refined_to_float64_accuracy():
    import numpy as np
    import scipy.sparse

    from pointmap.align.lm import sparse_solve

    rng = np.random.default_rng(0)
    n = 400
    # a chain of 7x7 blocks with couplings to the 1st, 2nd and 4th neighbours, as logwin graphs
    rows, cols = [], []
    for d in (1, 2, 4):
        rows += list(range(n - 7 * d))
        cols += list(range(7 * d, n))
    J = scipy.sparse.coo_matrix((rng.normal(size=len(rows)), (rows, cols)), shape=(n, n))
    J = J + J.T + scipy.sparse.eye(n) * 0.1
    B = rng.normal(size=(n, 2))
    for scale in (1.0, 1e-9):  # well conditioned; then about 1e10, beyond float32: the float64 path
        A = (J.T @ J + scipy.sparse.diags(np.linspace(scale, 1.0, n))).tocsc()
        X = sparse_solve(A, B)
        exact = scipy.sparse.linalg.spsolve(A, B)
        assert np.abs(A @ X - B).max() <= 1e-8 * np.abs(B).max()
        assert np.abs(X - exact).max() <= 1e-6 * np.abs(exact).max()
    # the damping given apart, on a CSR matrix (factorised as its transpose): the same solution
    d = np.linspace(1e-3, 1.0, n)
    X = sparse_solve(scipy.sparse.csr_matrix(J.T @ J), B, damp=d)
    exact = scipy.sparse.linalg.spsolve((J.T @ J + scipy.sparse.diags(d)).tocsc(), B)
    assert np.abs(X - exact).max() <= 1e-6 * np.abs(exact).max()
    singular = scipy.sparse.csc_matrix((n, n))
    assert sparse_solve(singular, B) is None
