"""Sparse alignment from pixel matches (MASt3R-SfM style), for many images.

Each image keeps its own canonical pointmap (the ``pts3d_1`` of its most confident pair where it
comes first); its unknowns are a pose, a focal (optionally shared) and a few depth anchors: a
``grid`` of log-depth offsets interpolated bilinearly over the image (one anchor = a per-image
depth scale). A matched pixel ``p`` of image ``k`` lands in the world at

    X_k(p) = R_k (d_k(p) K_k^-1 [p, 1]) + C_k,   d_k(p) = z_k(p) exp(sum_a b_a(p) a_{k,a})

Stages (robust least squares, :func:`scipy.optimize.least_squares` with an exact sparse Jacobian
from :func:`torch.func.jacfwd`; per match only the two images' parameters enter):

1. **init**: spanning tree over the pair graph weighted by match counts; each edge's relative
   similarity is a trimmed Umeyama registration of the matched canonical points;
2. **coarse**: 3-D distances ``X_i(p) - X_j(q)`` of matched points;
3. **fine**: 2-D reprojection errors of each matched point into the other image (pixels).

The dense depth of every image is then its canonical depth times its anchor field, so the result
is the same :class:`~pointmap.scene.Scene` as :func:`pointmap.align.global_align`. Memory is
``O(images x pixels + matches)``: no per-pair full-resolution state is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import roma
import scipy.optimize
import scipy.sparse
import torch

from ..errors import GraphError
from ..geometry.camera import estimate_focal, intrinsics_matrix
from ..geometry.registration import align_multiple_poses, rigid_registration
from ..matching import match_pair
from ..predictions import PairPredictions
from ..scene import Scene
from .config import AlignConfig
from .common import AlignInputs, CameraSet, assemble_scene, connected_image_sets, validate_inputs
from .params import conf_transform

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Matches", "SparseConfig", "pair_matches", "sparse_align"]

#: ``{(i, j): (xy_i (M, 2), xy_j (M, 2))}`` integer pixel coordinates ``(x, y)`` of matches.
Matches = Mapping[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SparseConfig:
    """Settings of :func:`sparse_align` besides :class:`AlignConfig` (whose ``conf_threshold``,
    ``conf_trf`` and ``shared_focal`` it uses).

    Attributes:
        grid: ``(gx, gy)`` depth anchors per image (log-depth offsets, bilinear); ``(1, 1)`` is a
            per-image depth scale.
        coarse_iters, fine_iters: maximum least-squares iterations (Jacobian evaluations) of
            the 3-D and the 2-D stages (0 skips a stage).
        fine_px: scale of the robust (Cauchy) loss of the 2-D stage, pixels.
        coarse_rel: scale of the robust loss of the 3-D stage, as a fraction of the median
            canonical depth.
        subsample: seed grid step of the matcher when matches are computed here.
        max_matches: at most this many matches per pair (evenly subsampled) are used.
    """

    grid: tuple[int, int] = (1, 1)
    coarse_iters: int = 30
    fine_iters: int = 30
    fine_px: float = 1.5
    coarse_rel: float = 0.01
    subsample: int = 8
    max_matches: int = 1024


def pair_matches(preds: PairPredictions, subsample: int = 8, conf_threshold: float | None = None,
                 device: str | torch.device | None = None) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """Matches of every pair ``(i, j)`` with ``i != j`` (:func:`pointmap.matching.match_pair`:
    descriptors when the predictions have them, else 3-D points). Returns :data:`Matches`."""
    out = {}
    for e, (i, j) in enumerate(preds.pairs):
        if i == j or (j, i) in out:
            continue
        xy1, xy2 = match_pair(preds, e, subsample, "auto", conf_threshold, device)
        out[(i, j)] = (xy1.cpu(), xy2.cpu())
    return out


# ----------------------------------------------------------------------------- residual model

_NP = 7  # per-image parameters before the anchors: rotvec (3), centre (3), log focal (1)


def _bilinear(xy: torch.Tensor, H: int, W: int, gx: int, gy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor indices ``(M, 4)`` and bilinear weights ``(M, 4)`` of pixels ``xy (M, 2)``."""
    def axis(v: torch.Tensor, size: int, g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if g == 1:
            z = torch.zeros_like(v, dtype=torch.long)
            return z, z, torch.zeros_like(v, dtype=torch.float64)
        t = v.double() / max(size - 1, 1) * (g - 1)
        i0 = t.floor().long().clamp(0, g - 2)
        return i0, i0 + 1, (t - i0).clamp(0, 1)

    x0, x1, fx = axis(xy[:, 0], W, gx)
    y0, y1, fy = axis(xy[:, 1], H, gy)
    idx = torch.stack([y0 * gx + x0, y0 * gx + x1, y1 * gx + x0, y1 * gx + x1], 1)
    w = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    return idx, w


def _world_r(theta: torch.Tensor, anc: torch.Tensor, bw: torch.Tensor, z: torch.Tensor,
             xy: torch.Tensor, pp: torch.Tensor, R0: torch.Tensor) -> torch.Tensor:
    """World points ``(M, 3)`` of matched pixels: parameters ``theta (M, 7)`` (rotation
    ``exp(rotvec) R0``), gathered anchors ``anc (M, 4)`` with bilinear weights ``bw (M, 4)``,
    canonical depths ``z (M,)``, pixels ``xy (M, 2)``, principal points ``pp (M, 2)``."""
    R = roma.rotvec_to_rotmat(theta[:, :3]) @ R0
    f = theta[:, 6:7].exp()
    d = z * (anc * bw).sum(-1).exp()
    ray = torch.cat([(xy - pp) / f, torch.ones_like(f)], -1)
    return (R @ (d[:, None] * ray)[..., None])[..., 0] + theta[:, 3:6]


def _project_r(theta: torch.Tensor, X: torch.Tensor, pp: torch.Tensor, R0: torch.Tensor) -> torch.Tensor:
    """Pixels ``(M, 2)`` of world points ``X (M, 3)`` in the cameras ``theta (M, 7)``."""
    R = roma.rotvec_to_rotmat(theta[:, :3]) @ R0
    c = (R.transpose(-1, -2) @ (X - theta[:, 3:6])[..., None])[..., 0]
    f = theta[:, 6:7].exp()
    return f * c[:, :2] / c[:, 2:3].clamp(min=1e-9) + pp


def _res3d(ti, ai, tj, aj, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0):
    """3-D residuals ``(M, 3)`` of matches (arguments as :func:`_eval` gathers them)."""
    return _world_r(ti, ai, bwi, zi, xyi, ppi, Ri0) - _world_r(tj, aj, bwj, zj, xyj, ppj, Rj0)


def _res2d(ti, ai, tj, aj, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0):
    """2-D residuals ``(M, 4)`` (pixels): each side's point projected into the other image."""
    Xi = _world_r(ti, ai, bwi, zi, xyi, ppi, Ri0)
    Xj = _world_r(tj, aj, bwj, zj, xyj, ppj, Rj0)
    return torch.cat([_project_r(tj, Xi, ppj, Rj0) - xyj, _project_r(ti, Xj, ppi, Ri0) - xyi], -1)


@dataclass
class _Problem:
    """Matches flattened over pairs (float64 tensors), plus the parameter layout."""

    ii: torch.Tensor      # (M,) image of the first side
    jj: torch.Tensor      # (M,)
    xyi: torch.Tensor     # (M, 2)
    xyj: torch.Tensor
    zi: torch.Tensor      # (M,) canonical depths
    zj: torch.Tensor
    ai: torch.Tensor      # (M, 4) anchor indices
    aj: torch.Tensor
    bwi: torch.Tensor     # (M, 4) bilinear weights
    bwj: torch.Tensor
    w: torch.Tensor       # (M,) sqrt confidence weights
    pp: torch.Tensor      # (N, 2)
    R0: torch.Tensor      # (N, 3, 3) initial rotations
    cols: torch.Tensor    # (N, 7 + G) column of each local parameter, -1 when fixed
    n_cols: int


def _local(pb: _Problem, x: np.ndarray, base: torch.Tensor) -> torch.Tensor:
    """Per-image parameters ``(N, 7 + G)``: ``base`` with the free columns taken from ``x``."""
    full = base.clone()
    free = pb.cols >= 0
    full[free] = torch.as_tensor(x, dtype=torch.float64)[pb.cols[free]]
    return full


def _eval(pb: _Problem, P: torch.Tensor, fn, jac: bool):
    """Weighted residuals ``(M, D)`` and, with ``jac``, their sparse Jacobian ``(M D, n_cols)``."""
    ti, tj = P[pb.ii, :_NP], P[pb.jj, :_NP]
    ai = torch.gather(P[pb.ii, _NP:], 1, pb.ai)
    aj = torch.gather(P[pb.jj, _NP:], 1, pb.aj)
    args = (ti, ai, tj, aj, pb.bwi, pb.bwj, pb.zi, pb.zj, pb.xyi, pb.xyj, pb.pp[pb.ii], pb.pp[pb.jj],
            pb.R0[pb.ii], pb.R0[pb.jj])
    r = fn(*args) * pb.w[:, None]
    if not jac:
        return r, None
    # each residual depends on its match's 22 local parameters only: central differences of the
    # batched residuals, one local slot at a time (44 evaluations, float64, exact to ~1e-9)
    L = torch.cat([ti, ai, tj, aj], 1)
    M, D = r.shape
    J = torch.empty(M, D, L.shape[1], dtype=torch.float64)
    h = 1e-6
    for c in range(L.shape[1]):
        Lp, Lm = L.clone(), L.clone()
        Lp[:, c] += h
        Lm[:, c] -= h
        fp = fn(Lp[:, :7], Lp[:, 7:11], Lp[:, 11:18], Lp[:, 18:22], *args[4:])
        fm = fn(Lm[:, :7], Lm[:, 7:11], Lm[:, 11:18], Lm[:, 18:22], *args[4:])
        J[:, :, c] = (fp - fm) / (2 * h)
    J *= pb.w[:, None, None]
    cols_i, cols_j = pb.cols[pb.ii], pb.cols[pb.jj]
    cc = torch.cat([cols_i[:, :_NP], torch.gather(cols_i[:, _NP:], 1, pb.ai),
                    cols_j[:, :_NP], torch.gather(cols_j[:, _NP:], 1, pb.aj)], 1)  # (M, 22)
    rr = torch.arange(M * D).reshape(M, D, 1).expand(M, D, cc.shape[1])
    cc = cc[:, None, :].expand(M, D, cc.shape[1])
    keep = cc >= 0
    Jm = scipy.sparse.coo_matrix(
        (J[keep].numpy(), (rr[keep].numpy(), cc[keep].numpy())),
        shape=(M * D, pb.n_cols)).tocsr()  # duplicate entries (shared focal / anchors) are summed
    return r, Jm


def _solve(pb: _Problem, base: torch.Tensor, x0: np.ndarray, fn, f_scale: float, iters: int) -> np.ndarray:
    """Robust (Cauchy) trust-region least squares from ``x0``; returns the free parameters."""
    if iters <= 0 or pb.n_cols == 0 or len(pb.ii) == 0:
        return x0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: thread start-up costs more than it saves
    try:
        return _least_squares(pb, base, x0, fn, f_scale, iters)
    finally:
        torch.set_num_threads(threads)


def _least_squares(pb: _Problem, base: torch.Tensor, x0: np.ndarray, fn, f_scale: float, iters: int
                   ) -> np.ndarray:
    res = scipy.optimize.least_squares(
        lambda x: _eval(pb, _local(pb, x, base), fn, False)[0].reshape(-1).numpy(),
        x0,
        jac=lambda x: _eval(pb, _local(pb, x, base), fn, True)[1],
        loss="cauchy", f_scale=f_scale, method="trf", tr_solver="lsmr", x_scale="jac",
        max_nfev=iters, xtol=1e-10, ftol=1e-10, gtol=1e-10,
    )
    return res.x


# ----------------------------------------------------------------------------- driver


def _canonical(preds: PairPredictions, images: list[int]) -> dict[int, int]:
    """Per image, the pair (index) whose ``pts3d_1`` is its canonical pointmap: the most confident
    pair where it comes first."""
    best: dict[int, tuple[float, int]] = {}
    for e, (i, j) in enumerate(preds.pairs):
        if i in images:
            c = float(preds.conf_1[e].float().mean())
            if i not in best or c > best[i][0]:
                best[i] = (c, e)
    missing = [k for k in images if k not in best]
    if missing:
        raise GraphError(f"sparse alignment needs a pair (k, j) for every image k (its own "
                         f"pointmap); images {missing} only come second: symmetrize the pairs")
    return {k: e for k, (_, e) in best.items()}


def _trimmed_similarity(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, rounds: int = 4
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarity ``y ~ s R x + t`` by weighted Umeyama, refitted on the best 60 % residuals."""
    keep = torch.ones(len(x), dtype=torch.bool)
    for _ in range(rounds):
        s, R, t = rigid_registration(x[keep], y[keep], w[keep])
        r = (s * x @ R.T + t - y).norm(dim=-1)
        keep = r <= r.quantile(0.6)
    return s, R, t


def sparse_align(
    preds: PairPredictions,
    matches: Matches | None = None,
    imgs: Sequence[torch.Tensor] | None = None,
    config: AlignConfig | None = None,
    sparse: SparseConfig | None = None,
    **inputs: Unpack[AlignInputs],
) -> Scene:
    """Align many images from pixel matches: poses, focals, depth anchors; dense depth at the end.

    Args:
        preds: pair predictions; every image needs a pair where it comes first (symmetrized
            pairs give that). Descriptors are used for matching when present.
        matches: :data:`Matches` per unordered pair (``None``: computed by :func:`pair_matches`).
        imgs: per image ``(H, W, 3)`` colours in ``[0, 1]`` (grey when ``None``).
        config: :class:`AlignConfig` (``conf_threshold``, ``conf_trf``, ``shared_focal``).
        sparse: :class:`SparseConfig`.
        **inputs: known poses / focals / intrinsics, masks: :class:`AlignInputs` (``device`` is
            ignored: this solver runs on the CPU).

    Returns:
        A :class:`~pointmap.scene.Scene` (largest connected component placed, as
        :func:`~pointmap.align.global_align`). Known poses are reported exactly as given.

    Raises:
        GraphError: no pairs, or an image with no pair where it comes first.
    """
    cfg = config or AlignConfig()
    sp = sparse or SparseConfig()
    inputs = {k: v for k, v in inputs.items() if k not in ("device", "progress")}  # type: ignore[assignment]
    shapes, known = validate_inputs(preds, imgs, inputs)
    if matches is None:
        matches = pair_matches(preds, sp.subsample, None)
    images = connected_image_sets(preds)[0]
    out = CameraSet.unplaced(preds, shapes, images)
    if len(images) < 2:
        raise GraphError("sparse alignment needs two or more connected images; use global_align")
    canon = _canonical(preds, images)
    N = len(shapes)
    gx, gy = sp.grid
    G = gx * gy
    z = {k: preds.pts3d_1[canon[k]][..., 2].double() for k in images}
    conf = {k: preds.conf_1[canon[k]].float() for k in images}
    masks = inputs.get("masks")
    pp = known.pp.double().clone()
    P = torch.zeros(N, _NP + G, dtype=torch.float64)

    # focal init: known, or Weiszfeld on the canonical pointmap (median when shared)
    for k in images:
        f = known.focals[k].double().mean() if known.focal_mask[k] else estimate_focal(
            preds.pts3d_1[canon[k]].float())  # one focal per image: the mean of a known (fx, fy)
        P[k, 6] = torch.as_tensor(f, dtype=torch.float64).log()
    free_f = [k for k in images if not known.focal_mask[k]]
    if cfg.shared_focal and free_f:
        P[free_f, 6] = P[free_f, 6].median()

    # flatten the matches (valid, confident-weighted, capped per pair)
    ii, jj, xyi, xyj = [], [], [], []
    count: dict[tuple[int, int], int] = {}
    iset = set(images)
    for (i, j), (a, b) in matches.items():
        if i == j or i not in iset or j not in iset or len(a) == 0:
            continue
        a, b = torch.as_tensor(a).long(), torch.as_tensor(b).long()
        if len(a) > sp.max_matches:
            sel = torch.linspace(0, len(a) - 1, sp.max_matches).long()
            a, b = a[sel], b[sel]
        ok = torch.ones(len(a), dtype=torch.bool)
        for k, xy in ((i, a), (j, b)):
            h, w = shapes[k]
            ok &= (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        a, b = a[ok], b[ok]
        ok = torch.ones(len(a), dtype=torch.bool)
        for k, xy in ((i, a), (j, b)):
            ok &= z[k][xy[:, 1], xy[:, 0]] > 0
            if masks is not None and masks[k] is not None:
                ok &= masks[k].bool()[xy[:, 1], xy[:, 0]]
        a, b = a[ok], b[ok]
        ii.append(torch.full((len(a),), i)); jj.append(torch.full((len(a),), j))
        xyi.append(a); xyj.append(b)
        count[(i, j)] = count.get((i, j), 0) + len(a)
    if not ii:
        raise GraphError("no usable matches between the images; check the predictions")
    ii_t, jj_t = torch.cat(ii), torch.cat(jj)
    xyi_t, xyj_t = torch.cat(xyi), torch.cat(xyj)

    def lookup(maps: dict[int, torch.Tensor], k_t: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        out_v = torch.empty(len(k_t), dtype=next(iter(maps.values())).dtype)
        for k in k_t.unique().tolist():
            m = k_t == k
            out_v[m] = maps[k][xy[m, 1], xy[m, 0]]
        return out_v

    zi, zj = lookup(z, ii_t, xyi_t), lookup(z, jj_t, xyj_t)
    wi = conf_transform(lookup(conf, ii_t, xyi_t), cfg.conf_trf).double()
    wj = conf_transform(lookup(conf, jj_t, xyj_t), cfg.conf_trf).double()
    w = (wi * wj).clamp(min=0).sqrt()

    # ---- init: spanning tree on match counts, trimmed Umeyama per tree edge
    rot = torch.eye(3, dtype=torch.float64).repeat(N, 1, 1)
    C = torch.zeros(N, 3, dtype=torch.float64)
    logs = torch.zeros(N, dtype=torch.float64)

    def local_pts(k: int, xy: torch.Tensor) -> torch.Tensor:
        f = P[k, 6].exp()
        d = z[k][xy[:, 1], xy[:, 0]]
        return torch.cat([(xy.double() - pp[k]) / f, torch.ones(len(xy), 1, dtype=torch.float64)], 1) * d[:, None]

    und: dict[tuple[int, int], int] = {}
    for (i, j), c in count.items():
        key = (min(i, j), max(i, j))
        und[key] = und.get(key, 0) + c
    known_pose_imgs = [k for k in images if known.pose_mask[k]]
    root = known_pose_imgs[0] if known_pose_imgs else max(
        images, key=lambda k: sum(c for (a, b), c in und.items() if k in (a, b)))
    placed = {root}
    while len(placed) < len(images):
        cand = [(c, a, b) for (a, b), c in und.items() if (a in placed) != (b in placed)]
        if not cand:
            break
        _, a, b = max(cand)
        src, dst = (a, b) if a in placed else (b, a)  # src placed
        m = ((ii_t == src) & (jj_t == dst)) | ((ii_t == dst) & (jj_t == src))
        fwd = ii_t[m] == src
        xy_src = torch.where(fwd[:, None], xyi_t[m], xyj_t[m])
        xy_dst = torch.where(fwd[:, None], xyj_t[m], xyi_t[m])
        s, R, t = _trimmed_similarity(local_pts(dst, xy_dst), local_pts(src, xy_src), w[m])
        S = logs[src].exp()
        rot[dst] = rot[src] @ R
        logs[dst] = logs[src] + s.log()
        C[dst] = C[src] + S * rot[src] @ t
        placed.add(dst)
    if len(known_pose_imgs) >= 1:  # move the tree into the known frame (and scale with >= 2)
        Kp = known.poses.double()
        if len(known_pose_imgs) >= 2:
            est = torch.eye(4, dtype=torch.float64).repeat(len(known_pose_imgs), 1, 1)
            est[:, :3, :3], est[:, :3, 3] = rot[known_pose_imgs], C[known_pose_imgs]
            s, R, t = align_multiple_poses(est, Kp[known_pose_imgs])
        else:
            k = known_pose_imgs[0]
            s, R = torch.ones((), dtype=torch.float64), Kp[k, :3, :3] @ rot[k].T
            t = Kp[k, :3, 3] - R @ C[k]
        rot = R @ rot
        C = s * C @ R.T + t
        logs = logs + s.log()
        for k in known_pose_imgs:
            rot[k], C[k] = Kp[k, :3, :3], Kp[k, :3, 3]
    P[:, 3:6] = C
    P[:, _NP:] = logs[:, None]

    # ---- parameter layout: -1 = fixed
    cols = torch.full((N, _NP + G), -1, dtype=torch.long)
    n = 0
    shared_col = -1
    for k in images:
        if not known.pose_mask[k] and not (not known_pose_imgs and k == root):
            cols[k, :6] = torch.arange(n, n + 6); n += 6
        if not known.focal_mask[k]:
            if cfg.shared_focal:
                if shared_col < 0:
                    shared_col = n; n += 1
                cols[k, 6] = shared_col
            else:
                cols[k, 6] = n; n += 1
        anc = torch.arange(n, n + G)
        if len(known_pose_imgs) < 2 and k == root:  # the scale gauge: root's first anchor
            anc = torch.cat([torch.tensor([-1]), torch.arange(n, n + G - 1)])
            n += G - 1
        else:
            n += G
        cols[k, _NP:] = anc
    def anchors(k_t: torch.Tensor, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.zeros(len(k_t), 4, dtype=torch.long)
        bw = torch.zeros(len(k_t), 4, dtype=torch.float64)
        for k in k_t.unique().tolist():
            m = k_t == k
            h, wd = shapes[k]
            idx[m], bw[m] = _bilinear(xy[m], h, wd, gx, gy)
        return idx, bw

    ai, bwi = anchors(ii_t, xyi_t)
    aj, bwj = anchors(jj_t, xyj_t)
    pb = _Problem(ii_t, jj_t, xyi_t.double(), xyj_t.double(), zi, zj, ai, aj, bwi, bwj, w, pp,
                  rot, cols, n)

    def pack(Pm: torch.Tensor) -> np.ndarray:
        x = np.zeros(n)
        free = cols >= 0
        x[cols[free].numpy()] = Pm[free].numpy()
        return x

    x = pack(P)
    zmed = float(torch.median(torch.cat([zi, zj])) * logs.exp().median())
    # 3-D distances are not scale invariant: shrinking clouds lowers them. The coarse stage
    # freezes the focals (a longer focal pulls a cloud onto its optical axis) and ties each image's
    # anchors to one depth scale; anchors and focals are freed in 2-D, which is scale invariant.
    cc = cols.clone()
    cc[:, 6] = -1
    cc[:, _NP:] = cols[:, _NP:_NP + 1]
    fixed_f = dataclasses.replace(pb, cols=cc)
    x = _solve(fixed_f, P, x, _res3d, sp.coarse_rel * zmed, sp.coarse_iters)
    x = _solve(pb, P, x, _res2d, sp.fine_px, sp.fine_iters)
    P = _local(pb, x, P)

    # ---- outputs: poses, intrinsics, dense depth from each image's own pointmap
    for k in images:
        h, wd = shapes[k]
        Rk = roma.rotvec_to_rotmat(P[k, :3]) @ rot[k]
        out.poses[k] = torch.eye(4)
        out.poses[k, :3, :3], out.poses[k, :3, 3] = Rk.float(), P[k, 3:6].float()
        if known.pose_mask[k]:
            out.poses[k] = known.poses[k]
        out.Ks[k] = intrinsics_matrix(P[k, 6].exp().float(), pp[k].float())
        if known.focal_mask[k]:  # user-frozen intrinsics are reported exactly as given
            out.Ks[k] = intrinsics_matrix(known.focals[k].float(), known.pp[k].float())
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(wd), indexing="ij")
        idx, bw = _bilinear(torch.stack([xs, ys], -1).reshape(-1, 2), h, wd, gx, gy)
        field = (P[k, _NP:][idx] * bw).sum(1).exp().reshape(h, wd)
        out.depths[k] = (z[k] * field).float()
        out.confs[k] = conf[k]
        out.placed[k] = True
    return assemble_scene(out, imgs, masks, cfg.conf_threshold)
