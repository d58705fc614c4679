"""Initialisation of global alignment: maximum spanning tree of pair confidences (reference
``init='mst'``), Weiszfeld focals, Umeyama registrations and PnP, on the coarse pixel sample."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..geometry.camera import estimate_focal_from_pixels
from ..geometry.pnp import pnp_ransac_inliers
from ..geometry.registration import gauge_to_known_poses, rigid_registration
from .common import maximum_spanning_tree
from .data import CoarseData

log = logging.getLogger(__name__)

__all__ = ["InitResult", "mst_init"]


@dataclass
class InitResult:
    """Initial values, in the world frame of the seed camera (or of the known poses).

    Attributes:
        poses: ``(N, 4, 4)`` camera-to-world.
        focals: ``(N,)`` pixels.
        depth: ``(N, n)`` z-depth at the coarse pixels.
        pw_s, pw_R, pw_T: ``(E,)``, ``(E, 3, 3)``, ``(E, 3)`` pairwise similarities (prediction
            frame -> world).
        norm_pw_scale: whether the pairwise scales' geometric mean is pinned.
    """

    poses: torch.Tensor
    focals: torch.Tensor
    depth: torch.Tensor
    pw_s: torch.Tensor
    pw_R: torch.Tensor
    pw_T: torch.Tensor
    norm_pw_scale: bool


@dataclass
class _Tree:
    """State of the spanning-tree pass: per image its points in the seed frame (``(n, 3)`` or
    ``None``), its pose ``(4, 4)`` and focal (pixels) when known or estimated."""

    pts3d: list[torch.Tensor | None]
    poses: list[torch.Tensor | None]
    focals: list[float | None]


def _pose(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    P = torch.eye(4, device=R.device)
    P[:3, :3], P[:3, 3] = R, T
    return P


def _tree_pass(data: CoarseData, pp: torch.Tensor, tree: _Tree, score: np.ndarray) -> None:
    """Walk the maximum spanning tree of pair scores from its best edge: each edge registers its
    unplaced image's prediction onto the placed one (Umeyama's rotation, the symmetric scale:
    along a chain of hundreds of registrations Umeyama's low-biased scales compound, and 1000
    images of 512x384 shrank to 1e-5 of their size half way); an image first met as an edge's
    first element gets that edge's registration as pose and its focal (Weiszfeld)."""
    N, dev = data.n_images, data.pts_i.device
    ei, ej = data.ei.cpu().numpy(), data.ej.cpu().numpy()
    pair_index = {(int(a), int(b)): e for e, (a, b) in enumerate(zip(ei, ej))}

    def focal_of(e: int, k: int) -> float:
        m = data.valid[k]
        return float(estimate_focal_from_pixels(data.pts_i[e][m], data.uv[k][m], pp[k]))

    todo = maximum_spanning_tree(N, ei, ej, score)
    if todo:
        _, i, j = todo.pop()
        e = pair_index[(i, j)]
        tree.pts3d[i], tree.pts3d[j] = data.pts_i[e], data.pts_j[e]
        tree.poses[i] = torch.eye(4, device=dev)
        if tree.focals[i] is None:
            tree.focals[i] = focal_of(e, i)
    guard = 0
    while todo:
        sc, i, j = todo.pop()
        e = pair_index[(i, j)]
        if tree.focals[i] is None:
            tree.focals[i] = focal_of(e, i)
        if tree.pts3d[i] is not None:
            s, R, T = rigid_registration(data.pts_i[e], tree.pts3d[i], data.conf_i[e], symmetric_scale=True)
            tree.pts3d[j] = s * data.pts_j[e] @ R.T + T
        elif tree.pts3d[j] is not None:
            s, R, T = rigid_registration(data.pts_j[e], tree.pts3d[j], data.conf_j[e], symmetric_scale=True)
            tree.pts3d[i] = s * data.pts_i[e] @ R.T + T
        else:
            todo.insert(0, (sc, i, j))
            guard += 1
            if guard > 10 * N * N:
                raise RuntimeError("spanning tree traversal did not terminate")
            continue
        if tree.poses[i] is None:
            tree.poses[i] = _pose(R, T)
    for e in np.argsort(-score, kind="stable"):
        i = int(ei[e])
        if tree.focals[i] is None:
            tree.focals[i] = focal_of(int(e), i)


#: PnP's pose of an image is kept when it has at least this share of RANSAC inliers and sees at
#: least :data:`FRONT_SHARE` of its confident points in front of it, at a median depth within
#: :data:`DEPTH_FACTOR` of the depth its own prediction gives them
MIN_INLIER_SHARE = 0.3
FRONT_SHARE = 0.9
DEPTH_FACTOR = 3.0


def _own_registration(data: CoarseData, tree: _Tree, score: np.ndarray, k: int
                      ) -> tuple[torch.Tensor, float] | None:
    """Image ``k``'s pose from its best-scoring own prediction (an edge whose first image it is,
    in its own frame) registered onto its tree points, and the median depth of those points seen
    from it (scene units); ``None`` when it is no edge's first image."""
    own = np.nonzero(data.ei.cpu().numpy() == k)[0]
    if not len(own):
        return None
    e = int(own[np.argmax(score[own])])
    s, R, T = rigid_registration(data.pts_i[e], tree.pts3d[k], data.conf_i[e], symmetric_scale=True)
    z = data.pts_i[e][data.valid[k], 2]
    return _pose(R, T), float(s * z.median()) if len(z) else float("nan")


def _pose_fits(P: torch.Tensor, pts: torch.Tensor, depth: float | None) -> bool:
    """Whether the camera-to-world pose ``P (4, 4)`` sees the points ``pts (m, 3)`` in front of it
    (:data:`FRONT_SHARE`) at a median depth within :data:`DEPTH_FACTOR` of ``depth`` (scene
    units; unchecked when ``None`` or not positive)."""
    z = ((pts - P[:3, 3]) @ P[:3, :3])[:, 2]
    if not len(z) or float((z > 0).float().mean()) < FRONT_SHARE:
        return False
    if depth is None or not depth > 0:
        return True
    return 1 / DEPTH_FACTOR <= float(z.median()) / depth <= DEPTH_FACTOR


def _pnp_poses(data: CoarseData, pp: torch.Tensor, tree: _Tree, score: np.ndarray, conf_threshold: float,
               niter_pnp: int, reproj_error: float, pnp_seed: int) -> None:
    """Poses of the placed images the tree pass left without one: RANSAC PnP of their points
    (confident pixels) when its pose passes the checks of :data:`MIN_INLIER_SHARE`, else
    registration of one of their own predictions, else PnP's pose, else identity."""
    dev = data.pts_i.device
    for k in range(data.n_images):
        if tree.pts3d[k] is None or tree.poses[k] is not None:
            continue
        m = (data.im_conf_coarse[k] > conf_threshold) & data.valid[k]
        if int(m.sum()) < 4:
            m = data.valid[k]
        cv2.setRNGSeed(pnp_seed)
        res = pnp_ransac_inliers(
            tree.pts3d[k][m], data.uv[k][m], data.shapes[k], focal=tree.focals[k],
            pp=tuple(pp[k].tolist()), iterations=niter_pnp, reproj_error=reproj_error,
        )
        reg = _own_registration(data, tree, score, k)
        if res is not None and tree.focals[k] is None:
            tree.focals[k] = res[0]
        if res is not None and res[2] >= MIN_INLIER_SHARE * int(m.sum()) and \
                _pose_fits(res[1].to(dev), tree.pts3d[k][m], None if reg is None else reg[1]):
            tree.poses[k] = res[1].to(dev)
        elif reg is not None:
            if res is not None:
                log.info(f"image {k}: PnP's initial pose does not fit its points; registered instead")
            tree.poses[k] = reg[0]
        elif res is not None:
            tree.poses[k] = res[1].to(dev)
        else:
            log.warning(f"image {k}: PnP failed at initialisation; starting from identity")
            tree.poses[k] = torch.eye(4, device=dev)


def _best_edges(data: CoarseData, want: np.ndarray) -> dict[int, int]:
    """Per image ``i``, its highest-scoring edge ``e = (i, j)`` among the edges where ``want (E,)``."""
    ei, score = data.ei.cpu().numpy(), data.score.double().cpu().numpy()
    best: dict[int, int] = {}
    for e in np.argsort(score, kind="stable"):
        if want[e]:
            best[int(ei[e])] = int(e)
    return best


def _anchored_start(data: CoarseData, pp: torch.Tensor, focals: list[float | None], poses: torch.Tensor,
                    points: torch.Tensor, known: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, list[float | None]] | None:
    """Poses ``(N, 4, 4)``, points ``(N, n, 3)`` and focals of every image placed directly on the
    images with known depths (``known (N, n)``: their world ``points`` are constants): each other
    image by one Umeyama registration of its best-scoring edge ``(i, j)`` with such an image ``j``
    (the prediction of ``j``'s pixels onto ``j``'s known points gives ``i``'s pose and points,
    with no chain of registrations through a tree). ``None`` when an image has no such edge."""
    fixed = known.any(1).cpu().numpy()
    ei, ej = data.ei.cpu().numpy(), data.ej.cpu().numpy()
    free = np.nonzero(~fixed)[0]
    best = _best_edges(data, ~fixed[ei] & fixed[ej])
    if any(int(k) not in best for k in free):
        return None
    dev = data.pts_i.device
    P = poses.to(dev).float().clone()
    X = torch.where(known[..., None], points, torch.zeros((), device=dev))
    if len(free):
        e = torch.tensor([best[int(k)] for k in free], device=dev)
        m = data.ej[e]
        s, R, T = rigid_registration(data.pts_j[e], X[m], data.conf_j[e] * known[m])
        k = torch.from_numpy(free).to(dev)
        X[k] = s[:, None, None] * data.pts_i[e] @ R.transpose(1, 2) + T[:, None]
        P[k] = torch.eye(4, device=dev)
        P[k, :3, :3], P[k, :3, 3] = R, T
        for r, i in enumerate(free.tolist()):
            if focals[i] is None:
                v = data.valid[i]
                pts = data.pts_i[int(e[r])][v]
                focals[i] = float(estimate_focal_from_pixels(pts, data.uv[i][v], pp[i]))
    # the known images' pixels of unknown depth: their own best edge registered onto their known points
    gaps = [int(k) for k in np.nonzero(fixed)[0] if bool((data.valid[k] & ~known[k]).any())]
    own = _best_edges(data, fixed[ei]) if gaps else {}
    fill = [k for k in gaps if k in own]
    if fill:
        e = torch.tensor([own[k] for k in fill], device=dev)
        k = torch.tensor(fill, device=dev)
        s, R, T = rigid_registration(data.pts_i[e], X[k], data.conf_i[e] * known[k])
        own_pts = s[:, None, None] * data.pts_i[e] @ R.transpose(1, 2) + T[:, None]
        X[k] = torch.where(known[k, :, None], X[k], own_pts)
    given = torch.isfinite(poses).all(-1).all(-1).to(dev)  # a known pose without known depth stays
    P[given] = poses.to(dev).float()[given]
    return P, X, focals


def _onto_known_depths(X: torch.Tensor, P: torch.Tensor, depths: torch.Tensor, points: torch.Tensor,
                       known: torch.Tensor, rescale: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The tree's points ``X (N, n, 3)`` with the known ``points`` where ``known (N, n)``; with
    ``rescale`` (one known pose: no scale yet) the tree and the poses ``P (N, 4, 4)`` are first
    scaled about that camera by the median ratio of the known to the tree's ``depths (N, n)``."""
    if rescale:
        z = ((X - P[:, None, :3, 3]) @ P[:, :3, :3])[..., 2]
        ok = known & (z > 0)
        if bool(ok.any()):
            k = int(torch.nonzero(known.any(1)).flatten()[0])
            c = P[k, :3, 3].clone()
            s = (depths[ok] / z[ok]).median()
            X = (X - c) * s + c
            P = P.clone()
            P[:, :3, 3] = (P[:, :3, 3] - c) * s + c
    return torch.where(known[..., None], points, X), P


def mst_init(
    data: CoarseData,
    conf_threshold: float,
    niter_pnp: int,
    reproj_error: float,
    base_scale: float,
    pnp_seed: int = 0,
    *,
    pp: torch.Tensor | None = None,
    focals: torch.Tensor | None = None,
    poses: torch.Tensor | None = None,
    depths: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
) -> InitResult:
    """Reference MST initialisation (``init='mst'``) on the coarse sample.

    Differences from the reference, on purpose: the focal of an image first met as the first
    element of a tree edge is estimated from that edge (the reference reads a stale edge); images
    whose PnP fails get their pose by registration of one of their own predictions (then identity
    with a warning) instead of silently the identity, and so do those whose PnP pose does not fit
    their points (:data:`MIN_INLIER_SHARE`); the spanning tree's registrations take the symmetric
    scale (:func:`_tree_pass`); known poses are honoured for any number of images (one known
    pose: rigid alignment, the scale stays free). With known depths, when every other image has
    an edge to an image whose depth is known, there is no tree: each is placed by one
    registration onto such an image's known points (:func:`_anchored_start`).

    Args:
        conf_threshold, niter_pnp, reproj_error, pnp_seed: the PnP's confident pixels (raw
            confidence), RANSAC iterations, inlier threshold (pixels) and OpenCV RNG seed.
        base_scale: geometric mean the pair scales are pinned to (fewer than two known poses).
        pp: ``(N, 2)`` principal points (pixels; default ``(W/2, H/2)``).
        focals: ``(N,)`` known focals (pixels), NaN where unknown.
        poses: ``(N, 4, 4)`` known camera-to-world poses, NaN where unknown.
        depths, points: ``(N, n)`` known z-depths of the coarse pixels and ``(N, n, 3)`` their
            world points (:meth:`~pointmap.align.common.KnownCameras.sampled_depths`), NaN where
            unknown; given only for images whose pose is known.
    """
    N, dev = data.n_images, data.pts_i.device
    if pp is None:
        pp = torch.tensor([[w / 2, h / 2] for h, w in data.shapes])
    pp = pp.to(dev)
    score = data.score.double().cpu().numpy()
    known_f = [None] * N if focals is None else [None if math.isnan(f) else f for f in focals.tolist()]
    kp = torch.zeros(N, dtype=torch.bool) if poses is None else torch.isfinite(poses).all(-1).all(-1)
    known_d = None if depths is None else torch.isfinite(depths.to(dev))
    has_depths = known_d is not None and bool(known_d.any())
    norm_pw_scale = int(kp.sum()) < 2 and not has_depths
    start = None
    if has_depths:  # the others placed on the known depths' points directly, when each has an edge to one
        start = _anchored_start(data, pp, known_f, poses, points.to(dev), known_d)  # type: ignore[union-attr,arg-type]
    if start is None:
        tree = _Tree([None] * N, [None] * N, known_f)
        _tree_pass(data, pp, tree, score)
        _pnp_poses(data, pp, tree, score, conf_threshold, niter_pnp, reproj_error, pnp_seed)
        missing = [k for k in range(N) if tree.pts3d[k] is None]
        if missing:
            raise RuntimeError(f"images {missing} are not connected to the pair graph")
        P = torch.stack([p.float() for p in tree.poses])  # type: ignore[union-attr]
        X = torch.stack(tree.pts3d)  # type: ignore[arg-type]
        known_f = tree.focals
    else:
        P, X, known_f = start
        kp = torch.zeros(N, dtype=torch.bool)  # known poses are P's already, no gauge to move
    # no estimate, or none usable (degenerate predictions, e.g. points behind the camera): the
    # image's larger side (a 53-degree field of view)
    f_out = [f if f is not None and math.isfinite(f) and f > 0 else float(max(data.shapes[k]))
             for k, f in enumerate(known_f)]
    if bool(kp.any()):  # honour known poses: move the whole initial reconstruction onto them
        kp = kp.to(dev)
        s, R, T = gauge_to_known_poses(P, poses.to(dev).float(), kp)  # type: ignore[union-attr]
        X = s * X @ R.T + T
        P = P.clone()
        P[:, :3, :3] = R @ P[:, :3, :3]
        P[:, :3, 3] = s * P[:, :3, 3] @ R.T + T
        P[kp] = poses.to(dev).float()[kp]  # type: ignore[union-attr]
    if has_depths and start is None:  # known depths: their points replace the tree's (scaled to them first)
        X, P = _onto_known_depths(X, P, depths.to(dev), points.to(dev), known_d, int(kp.sum()) < 2)  # type: ignore[union-attr]

    # every edge: similarity from its first image's prediction onto the assembled points
    pw_s, pw_R, pw_T = rigid_registration(data.pts_i, X[data.ei], data.conf_i)
    if norm_pw_scale:
        s_factor = torch.exp(np.log(base_scale) - pw_s.log().mean())
        X = X * s_factor
        P[:, :3, 3] = P[:, :3, 3] * s_factor
        pw_s, pw_T = pw_s * s_factor, pw_T * s_factor
    cam = (X - P[:, None, :3, 3]) @ P[:, :3, :3]
    depth = cam[..., 2] if not has_depths else torch.where(known_d, depths.to(dev), cam[..., 2])  # type: ignore[union-attr,arg-type]
    return InitResult(
        poses=P, focals=torch.tensor(f_out, dtype=torch.float32, device=dev), depth=depth,
        pw_s=pw_s, pw_R=pw_R, pw_T=pw_T, norm_pw_scale=norm_pw_scale,
    )
