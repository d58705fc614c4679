"""Sparse alignment from pixel matches (MASt3R-SfM style), for many images.

Each image has a canonical pointmap: the confidence-weighted mean of every ``pts3d_1`` where it
comes first, brought to one scale (MASt3R-SfM's canonical pointmaps; averaging the pairs'
independent errors). Its unknowns are a pose, a focal (optionally shared) and a few depth
anchors: a ``grid`` of log-depth offsets interpolated bilinearly over the image (one anchor = a
per-image depth scale). A matched pixel ``p`` of image ``k`` lands in the world at

    X_k(p) = R_k (d_k(p) K_k^-1 [p, 1]) + C_k,   d_k(p) = z_k(p) exp(sum_a b_a(p) a_{k,a})

with ``z_k`` the canonical depth. Stages:

1. **init**: focals from the canonical pointmaps (:func:`~pointmap.geometry.camera.estimate_focal`);
   spanning tree over the pair graph weighted by match counts, each edge's relative similarity a
   trimmed Umeyama registration of the matched canonical points;
2. **coarse**: 3-D distances ``X_i(p) - X_j(q)`` of matched points relative to their depth
   (focals frozen, one depth scale per image);
3. **fine**: 2-D reprojection errors of each matched point into the other image (pixels), plus
   the canonical pointmaps' own evidence on the focals: their pixels against ``f (x/z, y/z) + pp``
   (what ``estimate_focal`` fits), in the same units and loss.

Both optimisation stages are robust Levenberg-Marquardt with a Cauchy loss whose scale is
annealed from large to small (residuals far off after the initialisation are not taken for
outliers), run until the cost stops decreasing. Each match's residual depends on its two images'
22 local parameters only: their Jacobian is analytic (batched over matches; a test checks it
against :func:`torch.func.jacfwd` of the plain per-match residuals) and is scattered into
normal equations over the per-image unknowns (``7 + G`` per image), solved densely by Cholesky
(sparse, by scipy, for thousands of images: ``AlignConfig.dense_solve_bytes``, :mod:`.lm`).

The dense depth of every image is then its canonical depth times its anchor field, so the result
is the same :class:`~pointmap.scene.Scene` as :func:`pointmap.align.global_align`. Memory is
``O(images x pixels + matches)`` (plus the normal equations: dense up to 4096 unknowns, about 500
images, sparse beyond): no per-pair full-resolution state is kept.

Known intrinsics are honoured as given, skew and ``fx != fy`` included: the matched pixels of such
a camera are mapped to those of a camera of focal ``fx`` with square pixels and the same principal
point (the same rays), so its 2-D residuals are measured in that camera's pixels (the same
optimum on exact data). Modules: :mod:`.sparse_model` (residuals and Jacobians),
:mod:`.canonical` (canonical pointmaps), :mod:`.sparse_solve` (the least-squares solve); this
one is the driver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import GraphError, PointmapError
from ..geometry.camera import intrinsics_matrix, normalize_pixels
from ..geometry.registration import gauge_to_known_poses
from ..matching import match_pair
from ..predictions import PairPredictions
from ..scene import Scene
from .canonical import canonical_pointmaps, focal_pixels, trimmed_similarity
from .common import (
    AlignInputs, CameraSet, KnownCameras, assemble_scene, connected_image_sets, maximum_spanning_tree,
    tree_order, validate_inputs,
)
from .config import AlignConfig
from .params import conf_transform
from .sparse_model import NP, bilinear, res2d, res3d
from .sparse_solve import Problem, State, solve

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
        coarse_iters, fine_iters: maximum Levenberg-Marquardt linearisations (Jacobian
            evaluations) of the 3-D and the 2-D stages over all their robust scales (0 skips a
            stage); each scale otherwise runs until the cost stops decreasing.
        fine_px: scales of the robust (Cauchy) loss of the 2-D stage, pixels, large to small
            (annealed: residuals far off after the initialisation are not taken for outliers);
            one number is one scale.
        coarse_rel: scales of the robust loss of the 3-D stage, large to small: fractions of
            the depth (its residuals are relative to the matched points' depth).
        subsample: seed grid step of the matcher when matches are computed here.
        max_matches: at most this many matches per pair (evenly subsampled) are used.
    """

    grid: tuple[int, int] = (1, 1)
    coarse_iters: int = 50
    fine_iters: int = 100
    fine_px: tuple[float, ...] = (16.0, 4.0, 1.5)
    coarse_rel: tuple[float, ...] = (0.1, 0.03, 0.01)
    subsample: int = 8
    max_matches: int = 1024

    def __post_init__(self) -> None:
        for name in ("fine_px", "coarse_rel"):  # one scale given as a number: no annealing
            v = getattr(self, name)
            setattr(self, name, (float(v),) if isinstance(v, (int, float)) else tuple(float(x) for x in v))
            if not getattr(self, name) or min(getattr(self, name)) <= 0:
                raise PointmapError(f"SparseConfig.{name}={v!r}: use positive robust scales, large to small")


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


# ----------------------------------------------------------------------------- driver


@dataclass
class _Flat:
    """Usable matches flattened over pairs: images ``ii, jj (M,)``, integer pixels ``xyi, xyj
    (M, 2)``, and the match count of every pair."""

    ii: torch.Tensor
    jj: torch.Tensor
    xyi: torch.Tensor
    xyj: torch.Tensor
    count: dict[tuple[int, int], int]


def _flatten(matches: Matches, images: list[int], shapes: list[tuple[int, int]], z: dict[int, torch.Tensor],
             masks: Sequence[torch.Tensor | None] | None, max_matches: int) -> _Flat:
    """The matches inside the image bounds, on valid depth and inside the masks, at most
    ``max_matches`` per pair (evenly subsampled)."""
    ii, jj, xyi, xyj = [], [], [], []
    count: dict[tuple[int, int], int] = {}
    iset = set(images)
    for (i, j), (a, b) in matches.items():
        if i == j or i not in iset or j not in iset or len(a) == 0:
            continue
        a, b = torch.as_tensor(a).long(), torch.as_tensor(b).long()
        if len(a) > max_matches:
            sel = torch.linspace(0, len(a) - 1, max_matches).long()
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
    return _Flat(torch.cat(ii), torch.cat(jj), torch.cat(xyi), torch.cat(xyj), count)


def _lookup(maps: dict[int, torch.Tensor], k_t: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """``maps[k][y, x]`` of every match side (image ``k_t (M,)``, integer pixel ``xy (M, 2)``)."""
    first = next(iter(maps.values()))
    out = torch.empty((len(k_t),) + first.shape[2:], dtype=first.dtype)
    for k in k_t.unique().tolist():
        m = k_t == k
        out[m] = maps[k][xy[m, 1], xy[m, 0]]
    return out


def _anchors(k_t: torch.Tensor, xy: torch.Tensor, shapes: list[tuple[int, int]], grid: tuple[int, int]
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor indices and bilinear weights ``(M, 4)`` of every match side."""
    idx = torch.zeros(len(k_t), 4, dtype=torch.long)
    bw = torch.zeros(len(k_t), 4, dtype=torch.float64)
    for k in k_t.unique().tolist():
        m = k_t == k
        idx[m], bw[m] = bilinear(xy[m], *shapes[k], *grid)
    return idx, bw


def _square_pixels(k_t: torch.Tensor, xy: torch.Tensor, known: KnownCameras) -> torch.Tensor:
    """Float64 pixels ``(M, 2)`` of the match sides in a camera of focal ``fx``, square pixels and
    the same principal point: the pixels themselves, except for known cameras with skew or
    ``fx != fy`` (the same rays: ``fx K^-1 [xy, 1] + pp``)."""
    out = xy.double()
    odd = known.focal_mask & ((known.skew != 0) | (known.focals[:, 0] != known.focals[:, 1]))
    for k in torch.nonzero(odd).flatten().tolist():
        m = k_t == k
        f, pp = known.focals[k].double(), known.pp[k].double()
        out[m] = f[0] * normalize_pixels(out[m], f[0], f[1], pp, float(known.skew[k])) + pp
    return out


def _initial_poses(flat: _Flat, xy_sq: tuple[torch.Tensor, torch.Tensor], w: torch.Tensor,
                   z: dict[int, torch.Tensor], log_f: torch.Tensor, pp: torch.Tensor, images: list[int],
                   known: KnownCameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Rotations ``(N, 3, 3)``, centres ``(N, 3)`` and log depth scales ``(N,)`` from the maximum
    spanning tree of match counts (a trimmed Umeyama of each tree edge's matched points), moved
    onto the known poses; and the tree's root (the first known pose, else the best-matched image)."""
    N = len(log_f)
    rot = torch.eye(3, dtype=torch.float64).repeat(N, 1, 1)
    C = torch.zeros(N, 3, dtype=torch.float64)
    logs = torch.zeros(N, dtype=torch.float64)
    und: dict[tuple[int, int], int] = {}
    for (i, j), c in flat.count.items():
        key = (min(i, j), max(i, j))
        und[key] = und.get(key, 0) + c
    known_pose_imgs = [k for k in images if known.pose_mask[k]]
    root = known_pose_imgs[0] if known_pose_imgs else max(
        images, key=lambda k: sum(c for (a, b), c in und.items() if k in (a, b)))
    edges = [(a, b, c) for (a, b), c in und.items() if c > 0]
    ea, eb, ec = (np.array(v) for v in zip(*edges)) if edges else (np.zeros(0, int),) * 3
    ii, jj = flat.ii, flat.jj

    def local_pts(k: int, xy_int: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        f = log_f[k].exp()
        ray = torch.cat([normalize_pixels(xy, f, f, pp[k]), torch.ones(len(xy), 1, dtype=torch.float64)], 1)
        return ray * z[k][xy_int[:, 1], xy_int[:, 0]][:, None]

    for src, dst in tree_order(maximum_spanning_tree(N, ea, eb, ec.astype(float)), root):
        m = ((ii == src) & (jj == dst)) | ((ii == dst) & (jj == src))
        fwd = (ii[m] == src)[:, None]
        sides = [(torch.where(fwd, a[m], b[m]), torch.where(fwd, b[m], a[m]))
                 for a, b in ((flat.xyi, flat.xyj), xy_sq)]  # (src, dst) integer, then square pixels
        s, R, t = trimmed_similarity(local_pts(dst, sides[0][1], sides[1][1]),
                                     local_pts(src, sides[0][0], sides[1][0]), w[m])
        rot[dst] = rot[src] @ R
        logs[dst] = logs[src] + s.log()
        C[dst] = C[src] + logs[src].exp() * rot[src] @ t
    if known_pose_imgs:  # move the tree into the known frame (and scale with >= 2)
        est = torch.eye(4, dtype=torch.float64).repeat(N, 1, 1)
        est[:, :3, :3], est[:, :3, 3] = rot, C
        mask = torch.zeros(N, dtype=torch.bool)
        mask[known_pose_imgs] = True
        s, R, t = gauge_to_known_poses(est, known.poses.double(), mask)
        rot, C, logs = R @ rot, s * C @ R.T + t, logs + s.log()
        for k in known_pose_imgs:
            rot[k], C[k] = known.poses[k, :3, :3].double(), known.poses[k, :3, 3].double()
    return rot, C, logs, root


def _layout(images: list[int], known: KnownCameras, root: int, shared_focal: bool, G: int
            ) -> tuple[torch.Tensor, int]:
    """Unknown of every per-image parameter ``(N, 7 + G)`` (-1: fixed) and their count. Gauge:
    known poses, else the root's pose; the scale by the root's first anchor unless two or more
    poses are known."""
    N = len(known.pose_mask)
    n_known = int(sum(bool(known.pose_mask[k]) for k in images))
    cols = torch.full((N, NP + G), -1, dtype=torch.long)
    n, shared_col = 0, -1
    for k in images:
        if not known.pose_mask[k] and not (n_known == 0 and k == root):
            cols[k, :6] = torch.arange(n, n + 6); n += 6
        if not known.focal_mask[k]:
            if shared_focal:
                if shared_col < 0:
                    shared_col = n; n += 1
                cols[k, 6] = shared_col
            else:
                cols[k, 6] = n; n += 1
        if n_known < 2 and k == root:  # the scale gauge: root's first anchor
            cols[k, NP:] = torch.cat([torch.tensor([-1]), torch.arange(n, n + G - 1)])
            n += G - 1
        else:
            cols[k, NP:] = torch.arange(n, n + G); n += G
    return cols, n


def _initial_focals(images: list[int], known: KnownCameras, focal0: dict[int, float], shared: bool
                    ) -> torch.Tensor:
    """Log focals ``(N,)``: known (``fx``), or the canonical pointmap's (their median when
    shared)."""
    log_f = torch.zeros(len(known.focal_mask), dtype=torch.float64)
    for k in images:
        f = known.focals[k, 0].double() if known.focal_mask[k] else focal0[k]
        log_f[k] = torch.as_tensor(f, dtype=torch.float64).log()
    free_f = [k for k in images if not known.focal_mask[k]]
    if shared and free_f:
        log_f[free_f] = log_f[free_f].median()
    return log_f


def _fill(out: CameraSet, st: State, images: list[int], z: dict[int, torch.Tensor],
          conf: dict[int, torch.Tensor], pp: torch.Tensor, grid: tuple[int, int], known: KnownCameras) -> None:
    """Cameras and dense depths (canonical depth times the anchor field) of the aligned images."""
    for k in images:
        h, wd = z[k].shape
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(wd), indexing="ij")
        idx, bw = bilinear(torch.stack([xs, ys], -1).reshape(-1, 2), h, wd, *grid)
        field = (st.anchors[k][idx] * bw).sum(1).exp().reshape(h, wd)
        K = intrinsics_matrix(st.log_f[k].exp().float(), pp[k].float())
        out.fill(k, st.R[k], st.C[k], K, z[k] * field, conf[k], known)


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
        config: :class:`AlignConfig` (``conf_threshold``, ``conf_trf``, ``shared_focal``,
            ``dense_solve_bytes``).
        sparse: :class:`SparseConfig`.
        **inputs: known poses / focals / intrinsics, masks: :class:`AlignInputs` (``device`` is
            ignored: this solver runs on the CPU).

    Returns:
        A :class:`~pointmap.scene.Scene` (largest connected component placed, as
        :func:`~pointmap.align.global_align`). Known poses and intrinsics are reported exactly as
        given.

    Raises:
        GraphError: no pairs, or an image with no pair where it comes first.
    """
    cfg = config or AlignConfig()
    sp = sparse or SparseConfig()
    inputs = {k: v for k, v in inputs.items() if k not in ("device", "progress")}  # type: ignore[assignment]
    shapes, known = validate_inputs(preds, imgs, inputs)
    if bool(known.depth_mask.any()):
        raise PointmapError("known_depths are held by the dense alignment only (global_align); "
                            "the sparse alignment cannot take them")
    if matches is None:
        matches = pair_matches(preds, sp.subsample, None)
    images = connected_image_sets(preds)[0]
    out = CameraSet.unplaced(preds, shapes, images)
    if len(images) < 2:
        raise GraphError("sparse alignment needs two or more connected images; use global_align")
    pts, conf, focal0 = canonical_pointmaps(preds, images, known.pp, cfg.conf_trf)
    z = {k: p[..., 2] for k, p in pts.items()}
    masks = inputs.get("masks")
    pp = known.pp.double().clone()
    flat = _flatten(matches, images, shapes, z, masks, sp.max_matches)
    w = (conf_transform(_lookup(conf, flat.ii, flat.xyi), cfg.conf_trf).double()
         * conf_transform(_lookup(conf, flat.jj, flat.xyj), cfg.conf_trf).double()).clamp(min=0).sqrt()
    xy_sq = (_square_pixels(flat.ii, flat.xyi, known), _square_pixels(flat.jj, flat.xyj, known))
    log_f = _initial_focals(images, known, focal0, cfg.shared_focal)
    rot, C, logs, root = _initial_poses(flat, xy_sq, w, z, log_f, pp, images, known)
    G = sp.grid[0] * sp.grid[1]
    cols, n = _layout(images, known, root, cfg.shared_focal, G)
    ai, bwi = _anchors(flat.ii, flat.xyi, shapes, sp.grid)
    aj, bwj = _anchors(flat.jj, flat.xyj, shapes, sp.grid)
    fu, fc, fw = focal_pixels(pts, conf, pp, len(shapes), cfg.conf_trf, masks)
    pb = Problem(flat.ii, flat.jj, *xy_sq, _lookup(z, flat.ii, flat.xyi), _lookup(z, flat.jj, flat.xyj),
                 ai, aj, bwi, bwj, w, pp, fu, fc, fw, cols, n)
    st = State(rot, C, log_f, logs[:, None].repeat(1, G))
    # 3-D distances are not scale invariant (shrinking clouds lowers them): the residuals are
    # relative to depth, the coarse stage freezes the focals (a longer focal pulls a cloud onto its
    # optical axis) and ties each image's anchors to one depth scale; anchors and focals are freed
    # in 2-D, which is scale invariant.
    cc = cols.clone()
    cc[:, 6] = -1
    cc[:, NP:] = cols[:, NP:NP + 1]
    st, _ = solve(dataclasses.replace(pb, cols=cc), st, res3d, sp.coarse_rel, sp.coarse_iters,
                  dense_bytes=cfg.dense_solve_bytes)
    st, _ = solve(pb, st, res2d, sp.fine_px, sp.fine_iters, dense_bytes=cfg.dense_solve_bytes)
    _fill(out, st, images, z, conf, pp, sp.grid, known)
    return assemble_scene(out, imgs, masks, cfg.conf_threshold)
