"""Reciprocal nearest-neighbour matching of two dense feature maps (descriptors or 3D points).

One algorithm serves both MASt3R descriptors and DUSt3R pointmaps: start from a grid of pixels of
image 1 (every ``subsample``-th pixel), go to the nearest neighbour in image 2, back to the
nearest neighbour in image 1, and repeat (at most 10 rounds) until a pixel's trip comes back to
where it started; the pixels that converged are reciprocal nearest neighbours. With
``subsample=1`` every pixel is a seed and the result is the full set of reciprocal pairs.

Nearest neighbours are exact: highest dot product for descriptors (``dist="dot"``), smallest
Euclidean distance for points (``dist="l2"``); ties go to the lowest raster index. The search is
brute force in blocks (bounded memory) and batched over pairs (one batch of matrix products per
step for all pairs, which is what a GPU wants); each pixel's neighbour is computed once and
remembered, so later rounds only search for pixels not seen yet. Points on the CPU use a k-d tree.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["reciprocal_matches", "reciprocal_matches_batched", "grid_seeds", "MAX_ROUNDS"]

MAX_ROUNDS = 10
"""Rounds of the there-and-back iteration before unconverged seeds are dropped."""


def grid_seeds(H: int, W: int, subsample: int) -> torch.Tensor:
    """Raster indices ``y * W + x`` (int64, ascending) of the seed grid: ``x = s/2, s/2 + s, ...``,
    ``y`` likewise, for ``s = subsample`` (every pixel for ``s = 1``)."""
    s = int(subsample)
    if s < 1:
        raise ValueError(f"subsample must be >= 1, not {subsample}")
    ys = torch.arange(s // 2, H, s)
    xs = torch.arange(s // 2, W, s)
    return (ys[:, None] * W + xs[None, :]).reshape(-1)


def _first_argbest(vals: torch.Tensor, idx: torch.Tensor, larger: bool) -> torch.Tensor:
    """Combine per-block winners ``(..., nblocks)``: the best value, ties to the earliest block."""
    pick = (vals.argmax(-1) if larger else vals.argmin(-1)).unsqueeze(-1)
    return idx.gather(-1, pick).squeeze(-1)


def _brute_nn(q: torch.Tensor, db: torch.Tensor, dist: str, db_valid: torch.Tensor | None,
              block: int) -> torch.Tensor:
    """Exact nearest neighbours ``(P, k)`` of queries ``(P, k, D)`` among ``db`` ``(P, N, D)``
    (``db_valid`` ``(P, N)`` bool excludes entries), blockwise over ``N``."""
    if q.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        # TF32 products would rank near-equal neighbours differently from float32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            return _brute_nn(q, db, dist, db_valid, block)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = True
    P, k, _ = q.shape
    N = db.shape[1]
    larger = dist == "dot"
    bad = float("-inf") if larger else float("inf")
    vals, idxs = [], []
    # bound the (P, k, bn) similarity block to ~2**22 elements
    bn = max(256, min(N, block, (1 << 22) // max(1, P * k)))
    for s in range(0, N, bn):
        d = db[:, s : s + bn]
        if larger:
            sim = torch.bmm(q, d.transpose(1, 2))
        else:
            sim = torch.cdist(q, d, compute_mode="donot_use_mm_for_euclid_dist")
        if db_valid is not None:
            sim.masked_fill_(~db_valid[:, None, s : s + bn], bad)
        v, i = sim.max(-1) if larger else sim.min(-1)
        vals.append(v)
        idxs.append(i + s)
    if len(vals) == 1:
        return idxs[0]
    return _first_argbest(torch.stack(vals, -1), torch.stack(idxs, -1), larger)


class _Searcher:
    """Nearest neighbours in one image's feature map for every pair, memoised per pixel."""

    def __init__(self, db: torch.Tensor, valid: torch.Tensor | None, dist: str, block: int,
                 use_tree: bool) -> None:
        self.db, self.valid, self.dist, self.block = db, valid, dist, block  # (P, N, D), (P, N)
        P, N = db.shape[:2]
        self.memo = torch.full((P, N), -1, dtype=torch.int64, device=db.device)
        self.trees: list | None = None
        if use_tree:
            from scipy.spatial import cKDTree

            self.trees = []
            for p in range(P):
                pts = db[p].double().numpy()
                ids = np.arange(N) if valid is None else np.nonzero(valid[p].numpy())[0]
                self.trees.append((cKDTree(pts[ids]) if len(ids) else None, ids))

    def query(self, src: torch.Tensor, ids: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Neighbours ``(P, S)`` in this image of pixels ``ids`` ``(P, S)`` of the other image
        (features ``src`` ``(P, N_src, D)``), for the ``active`` ``(P, S)`` entries (others -1)."""
        P = ids.shape[0]
        out = torch.full_like(ids, -1)
        # pixels whose neighbour is not known yet (each pixel searched once, duplicates merged)
        need = active.clone()
        need[active] = self.memo_src[torch.nonzero(active, as_tuple=True)[0], ids[active]] < 0
        if bool(need.any()):
            pair = torch.arange(P, device=ids.device)[:, None].expand_as(ids)
            key = torch.unique(pair[need] * self.n_src + ids[need])  # sorted: grouped by pair
            kp, kid = key // self.n_src, key % self.n_src
            if self.trees is not None:
                res = torch.empty_like(kid)
                for p in range(P):
                    sel = kp == p
                    tree, tids = self.trees[p]
                    if bool(sel.any()):
                        if tree is None:
                            res[sel] = -1
                        else:
                            _, j = tree.query(src[p, kid[sel]].double().numpy(), k=1)
                            res[sel] = torch.from_numpy(tids[np.asarray(j)]).long()
            else:
                counts = torch.bincount(kp, minlength=P)
                kmax = int(counts.max())
                start = torch.cumsum(counts, 0) - counts
                slot = torch.arange(len(key), device=key.device) - start[kp]
                pad = torch.zeros(P, kmax, dtype=torch.int64, device=key.device)
                pad[kp, slot] = kid
                nn = _brute_nn(src.gather(1, pad[..., None].expand(-1, -1, src.shape[-1])),
                               self.db, self.dist, self.valid, self.block)
                res = nn[kp, slot]
            self.memo_src[kp, kid] = res
        rows = torch.nonzero(active, as_tuple=True)[0]
        out[active] = self.memo_src[rows, ids[active]]
        return out

    def bind(self, src_n: int, memo: torch.Tensor) -> "_Searcher":
        """Set the memo table of the querying image (``(P, src_n)``, -1 = unknown)."""
        self.n_src, self.memo_src = src_n, memo
        return self


def _prepare(feat: torch.Tensor, mask: torch.Tensor | None, dist: str, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    P, H, W, D = feat.shape
    f = feat.reshape(P, H * W, D).to(device=device, dtype=torch.float32)
    valid = None
    if dist == "l2":
        fin = torch.isfinite(f).all(-1)
        if not bool(fin.all()):
            valid = fin
            f = torch.where(fin[..., None], f, torch.zeros((), device=device))
    if mask is not None:
        m = mask.reshape(P, H * W).to(device=device, dtype=torch.bool)
        valid = m if valid is None else valid & m
    return f, valid


def reciprocal_matches_batched(
    feat1: torch.Tensor,
    feat2: torch.Tensor,
    subsample: int = 8,
    mask1: torch.Tensor | None = None,
    mask2: torch.Tensor | None = None,
    dist: str = "auto",
    block_size: int = 8192,
    device: str | torch.device | None = None,
    kdtree: bool | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Reciprocal nearest-neighbour matches of ``P`` pairs of feature maps at once.

    Args:
        feat1: ``(P, H1, W1, D)`` features of the first images (descriptors, or 3D points
            expressed in one frame for both images of a pair).
        feat2: ``(P, H2, W2, D)`` features of the second images.
        subsample: seed grid step in pixels (1: every pixel).
        mask1, mask2: ``(P, H, W)`` bool, pixels allowed to match (default all; non-finite points
            never match).
        dist: ``"dot"`` (largest dot product; for L2-normalised descriptors), ``"l2"``
            (Euclidean), or ``"auto"``: ``"l2"`` for ``D = 3``, else ``"dot"``.
        block_size: database entries per block of the brute-force search (bounds memory).
        device: where to search (default: ``feat1``'s device).
        kdtree: search ``"l2"`` neighbours with a k-d tree (default: on the CPU); else blockwise
            brute force.

    Returns:
        per pair ``(xy1 (M, 2), xy2 (M, 2))``: int64 pixel coordinates ``(x, y)`` on the CPU,
        unique pairs sorted by the raster index of ``xy1`` (then of ``xy2``).
    """
    if feat1.ndim != 4 or feat2.ndim != 4 or feat1.shape[0] != feat2.shape[0] or feat1.shape[-1] != feat2.shape[-1]:
        raise ValueError(f"expected (P, H, W, D) feature maps with equal P and D, got "
                         f"{tuple(feat1.shape)} and {tuple(feat2.shape)}")
    P, H1, W1, D = feat1.shape
    _, H2, W2, _ = feat2.shape
    if dist == "auto":
        dist = "l2" if D == 3 else "dot"
    if dist not in ("dot", "l2"):
        raise ValueError(f"dist must be 'dot', 'l2' or 'auto', not {dist!r}")
    dev = torch.device(device) if device is not None else feat1.device
    f1, v1 = _prepare(feat1, mask1, dist, dev)
    f2, v2 = _prepare(feat2, mask2, dist, dev)
    use_tree = dist == "l2" and (dev.type == "cpu" if kdtree is None else bool(kdtree))
    if use_tree and dev.type != "cpu":
        raise ValueError("kdtree=True needs device='cpu'")
    to2 = _Searcher(f2, v2, dist, block_size, use_tree)  # neighbours in image 2
    to1 = _Searcher(f1, v1, dist, block_size, use_tree)  # neighbours in image 1
    to2.bind(H1 * W1, to2.memo.new_full((P, H1 * W1), -1))
    to1.bind(H2 * W2, to1.memo.new_full((P, H2 * W2), -1))

    seeds = grid_seeds(H1, W1, subsample).to(dev)
    xy1 = seeds[None].repeat(P, 1)  # (P, S) pixel ids in image 1
    notyet = torch.ones_like(xy1, dtype=torch.bool)
    if v1 is not None:
        notyet &= v1.gather(1, xy1)
    seeded = notyet.clone()
    xy2 = torch.full_like(xy1, -1)
    old1, old2 = xy1.clone(), xy2.clone()
    for _ in range(MAX_ROUNDS):
        if not bool(notyet.any()):
            break
        new2 = to2.query(f1, xy1, notyet)
        xy2 = torch.where(notyet, new2, xy2)
        notyet &= (old2 != xy2) & (xy2 >= 0)  # the trip to image 2 did not move: converged
        new1 = to1.query(f2, xy2.clamp(min=0), notyet)
        xy1 = torch.where(notyet, new1, xy1)
        notyet &= old1 != xy1  # back where it started: converged
        old1, old2 = xy1.clone(), xy2.clone()
    done = seeded & ~notyet & (xy2 >= 0)

    out = []
    for p in range(P):
        a, b = xy1[p][done[p]].cpu(), xy2[p][done[p]].cpu()
        key = torch.unique(a * (H2 * W2) + b)  # unique pairs, sorted by a then b
        a, b = key // (H2 * W2), key % (H2 * W2)
        out.append((torch.stack([a % W1, a // W1], -1), torch.stack([b % W2, b // W2], -1)))
    return out


def reciprocal_matches(
    feat1: torch.Tensor,
    feat2: torch.Tensor,
    subsample: int = 8,
    mask1: torch.Tensor | None = None,
    mask2: torch.Tensor | None = None,
    dist: str = "auto",
    block_size: int = 8192,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reciprocal nearest-neighbour matches of two dense feature maps.

    Args:
        feat1: ``(H1, W1, D)`` features of image 1: MASt3R descriptors (``D = 24``), or 3D points
            (``D = 3``; both pointmaps in the same frame, e.g. ``pts3d_1`` and ``pts3d_2_in_1``
            of one pair).
        feat2: ``(H2, W2, D)`` features of image 2.
        subsample: seed grid step in pixels (8 as in MASt3R's demo; 1: all reciprocal pairs).
        mask1, mask2: ``(H, W)`` bool pixels allowed to match.
        dist, block_size, device: see :func:`reciprocal_matches_batched`.

    Returns:
        ``(xy1 (M, 2), xy2 (M, 2))``: int64 pixel coordinates ``(x, y)``, sorted by the raster
        index of ``xy1``.
    """
    if feat1.ndim != 3 or feat2.ndim != 3:
        raise ValueError(f"expected (H, W, D) feature maps, got {tuple(feat1.shape)} and {tuple(feat2.shape)}")
    return reciprocal_matches_batched(
        feat1[None], feat2[None], subsample,
        None if mask1 is None else mask1[None], None if mask2 is None else mask2[None],
        dist, block_size, device,
    )[0]

