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
(sparse, by scipy, for thousands of images).

The dense depth of every image is then its canonical depth times its anchor field, so the result
is the same :class:`~pointmap.scene.Scene` as :func:`pointmap.align.global_align`. Memory is
``O(images x pixels + matches)`` (plus the normal equations: dense up to 4096 unknowns, about 500
images, sparse beyond): no per-pair full-resolution state is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import roma
import scipy.sparse
import scipy.sparse.linalg
import torch

from ..errors import GraphError, PointmapError
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


# ----------------------------------------------------------------------------- residual model

_NP = 7  # per-image parameters before the anchors: rotation increment (3), centre (3), log focal (1)


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


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a x b`` of two ``(3,)`` vectors."""
    return torch.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _depth_1(L: torch.Tensor, bw: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Depth of one matched pixel: canonical depth ``z`` times its anchor field (``L`` as
    :func:`_world_1` takes it)."""
    return z * (L[7:11] * bw).sum().exp()


def _world_1(L: torch.Tensor, bw: torch.Tensor, z: torch.Tensor, xy: torch.Tensor, pp: torch.Tensor,
             R0: torch.Tensor) -> torch.Tensor:
    """World point ``(3,)`` of one matched pixel ``xy (2,)`` (canonical depth ``z``, principal
    point ``pp (2,)``) from its image's 11 local parameters ``L``: rotation increment ``theta``
    of ``R0`` (the rotation is ``(I + [theta]_x) R0``, exact in value and derivative at
    ``theta = 0``, where residuals are linearised; steps are applied by the exponential map),
    centre, log focal, 4 gathered anchors with bilinear weights ``bw (4,)``."""
    f = L[6].exp()
    ray = torch.cat([(xy - pp) / f, torch.ones_like(f)[None]])
    v = R0 @ (_depth_1(L, bw, z) * ray)
    return v + _cross(L[:3], v) + L[3:6]


def _project_1(L: torch.Tensor, X: torch.Tensor, pp: torch.Tensor, R0: torch.Tensor) -> torch.Tensor:
    """Pixel ``(2,)`` of world point ``X (3,)`` in the camera of local parameters ``L``."""
    v = X - L[3:6]
    c = R0.T @ (v - _cross(L[:3], v))
    return L[6].exp() * c[:2] / c[2].clamp(min=1e-9) + pp


def _res3d(L, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0):
    """3-D residual ``(3,)`` of one match, relative to the points' mean depth (so that no
    cloud gains by shrinking: the residual is invariant to a similarity of the scene): ``L (22,)``
    local parameters of both images (each: rotation increment, centre, log focal, 4 gathered
    anchors), the rest per side as :func:`_world_1` takes them."""
    h = _NP + 4
    d = 0.5 * (_depth_1(L[:h], bwi, zi) + _depth_1(L[h:], bwj, zj))
    return (_world_1(L[:h], bwi, zi, xyi, ppi, Ri0) - _world_1(L[h:], bwj, zj, xyj, ppj, Rj0)) / d


def _res2d(L, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0):
    """2-D residuals ``(4,)`` of one match (pixels): each side's point projected into the other
    image minus the matched pixel there."""
    h = _NP + 4
    Xi = _world_1(L[:h], bwi, zi, xyi, ppi, Ri0)
    Xj = _world_1(L[h:], bwj, zj, xyj, ppj, Rj0)
    return torch.cat([_project_1(L[h:], Xi, ppj, Rj0) - xyj, _project_1(L[:h], Xj, ppi, Ri0) - xyi])


def _skew(v: torch.Tensor) -> torch.Tensor:
    """``(m, 3, 3)`` cross-product matrices ``[v]_x`` of ``v (m, 3)``."""
    z = torch.zeros_like(v[:, 0])
    return torch.stack([torch.stack([z, -v[:, 2], v[:, 1]], -1), torch.stack([v[:, 2], z, -v[:, 0]], -1),
                        torch.stack([-v[:, 1], v[:, 0], z], -1)], 1)


def _side_jac(L: torch.Tensor, bw: torch.Tensor, z: torch.Tensor, xy: torch.Tensor, pp: torch.Tensor,
              R0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched :func:`_world_1` at zero rotation increments with its analytic derivatives: world
    points ``X (m, 3)``, ``dX/dL (m, 3, 11)``, depths ``d (m,)`` and ``dd/dL (m, 11)``."""
    f = L[:, 6].exp()
    q = (xy - pp) / f[:, None]
    d = z * (L[:, 7:11] * bw).sum(-1).exp()
    ray = torch.cat([q, torch.ones_like(f)[:, None]], -1)
    v = (R0 @ (d[:, None] * ray)[..., None])[..., 0]
    m = len(L)
    J = torch.zeros(m, 3, 11, dtype=L.dtype)
    J[:, :, :3] = -_skew(v)
    J[:, :, 3:6] = torch.eye(3, dtype=L.dtype)
    J[:, :, 6] = -(R0[:, :, :2] @ (d[:, None] * q)[..., None])[..., 0]
    J[:, :, 7:11] = v[:, :, None] * bw[:, None, :]
    Jd = torch.zeros(m, 11, dtype=L.dtype)
    Jd[:, 7:11] = d[:, None] * bw
    return v + L[:, 3:6], J, d, Jd


def _jac3d(L, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`_res3d` ``(m, 3)`` and its analytic Jacobian ``(m, 3, 22)`` (``L (m, 22)``,
    the constants batched likewise)."""
    Xi, JXi, di, Jdi = _side_jac(L[:, :11], bwi, zi, xyi, ppi, Ri0)
    Xj, JXj, dj, Jdj = _side_jac(L[:, 11:], bwj, zj, xyj, ppj, Rj0)
    D = 0.5 * (di + dj)
    r = (Xi - Xj) / D[:, None]
    J = torch.cat([JXi, -JXj], -1) / D[:, None, None]
    J -= r[:, :, None] * (0.5 * torch.cat([Jdi, Jdj], -1) / D[:, None])[:, None, :]
    return r, J


def _project_jac(X: torch.Tensor, JX: torch.Tensor, L: torch.Tensor, pp: torch.Tensor, R0: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched :func:`_project_1` of points ``X (m, 3)`` (derivatives ``JX (m, 3, 11)`` with
    respect to their own image's parameters) into the cameras ``L (m, 11)``: pixels ``(m, 2)``,
    their derivatives with respect to the points' image ``(m, 2, 11)`` and to the camera's
    ``(m, 2, 11)``."""
    w = X - L[:, 3:6]
    Rt = R0.transpose(1, 2)
    c = (Rt @ w[..., None])[..., 0]
    f = L[:, 6].exp()
    cz = c[:, 2].clamp(min=1e-9)
    P = torch.zeros(len(X), 2, 3, dtype=X.dtype)
    P[:, 0, 0] = P[:, 1, 1] = f / cz
    behind = (c[:, 2] <= 1e-9)[:, None]  # clamped depth: no derivative along it
    P[:, :, 2] = torch.where(behind, 0.0, -f[:, None] * c[:, :2] / cz[:, None] ** 2)
    PR = P @ Rt                                           # du / dX
    Jcam = torch.zeros(len(X), 2, 11, dtype=X.dtype)
    Jcam[:, :, :3] = PR @ _skew(w)
    Jcam[:, :, 3:6] = -PR
    Jcam[:, :, 6] = f[:, None] * c[:, :2] / cz[:, None]
    return f[:, None] * c[:, :2] / cz[:, None] + pp, PR @ JX, Jcam


def _jac2d(L, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`_res2d` ``(m, 4)`` and its analytic Jacobian ``(m, 4, 22)``."""
    Li, Lj = L[:, :11], L[:, 11:]
    Xi, JXi, _, _ = _side_jac(Li, bwi, zi, xyi, ppi, Ri0)
    Xj, JXj, _, _ = _side_jac(Lj, bwj, zj, xyj, ppj, Rj0)
    ui, Jui_pt, Jui_cam = _project_jac(Xi, JXi, Lj, ppj, Rj0)  # image i's point in camera j
    uj, Juj_pt, Juj_cam = _project_jac(Xj, JXj, Li, ppi, Ri0)
    r = torch.cat([ui - xyj, uj - xyi], -1)
    J = torch.cat([torch.cat([Jui_pt, Jui_cam], -1), torch.cat([Juj_cam, Juj_pt], -1)], 1)
    return r, J


_JAC = {_res3d: _jac3d, _res2d: _jac2d}  # residuals (per match, the plain definition) -> batched analytic
_GROUP = {_res3d: 3, _res2d: 2}  # components per robust term: a 3-D distance, a pixel offset


@dataclass
class _Problem:
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
class _State:
    """Per-image estimate: rotations ``R (N, 3, 3)``, centres ``C (N, 3)``, ``log_f (N,)``,
    log-depth anchors ``anchors (N, G)``; float64."""

    R: torch.Tensor
    C: torch.Tensor
    log_f: torch.Tensor
    anchors: torch.Tensor

    def step(self, pb: _Problem, delta: torch.Tensor) -> "_State":
        """The state moved by ``delta (n_cols,)``: rotations by the exponential map."""
        d = torch.cat([delta, delta.new_zeros(1)])[pb.cols]  # (N, 7 + G); fixed -> 0
        R = roma.rotvec_to_rotmat(d[:, :3]) @ self.R
        return _State(R, self.C + d[:, 3:6], self.log_f + d[:, 6], self.anchors + d[:, _NP:])


def _local(pb: _Problem, st: _State, sel: slice) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
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


def _local_cols(pb: _Problem, sel: slice) -> torch.Tensor:
    """Unknown of each local parameter ``(m, 22)``; fixed ones point at ``n_cols`` (dropped)."""
    ci, cj = pb.cols[pb.ii[sel]], pb.cols[pb.jj[sel]]
    cc = torch.cat([ci[:, :_NP], torch.gather(ci[:, _NP:], 1, pb.ai[sel]),
                    cj[:, :_NP], torch.gather(cj[:, _NP:], 1, pb.aj[sel])], 1)
    return torch.where(cc < 0, pb.n_cols, cc)


def _chunks(M: int, size: int = 8192) -> list[slice]:
    return [slice(a, min(a + size, M)) for a in range(0, M, size)]


def _focal_term(pb: _Problem, st: _State, sigma: float) -> tuple[float, torch.Tensor, torch.Tensor]:
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


def _cost(pb: _Problem, st: _State, fn, sigma: float) -> float:
    """Robust (Cauchy) cost ``sum sigma^2 / 2 log(1 + |w r|^2 / sigma^2)`` over the matches'
    3-D distances or pixel offsets ``r``."""
    total = 0.0
    batched = torch.func.vmap(fn)
    for sel in _chunks(len(pb.ii)):
        L, consts = _local(pb, st, sel)
        r = batched(L, *consts) * pb.w[sel, None]
        r2 = r.square().reshape(len(r), -1, _GROUP[fn]).sum(-1)
        total += float((0.5 * sigma**2 * torch.log1p(r2 / sigma**2)).sum())
    if fn is _res2d:
        total += _focal_term(pb, st, sigma)[0]
    return total


#: above this many unknowns the normal equations are assembled and solved sparse (scipy), below
#: dense (Cholesky): ``n^2`` doubles would pass 128 MiB
_DENSE_UNKNOWNS = 4096


def _normal_equations(pb: _Problem, st: _State, fn, sigma: float
                      ) -> tuple[torch.Tensor | scipy.sparse.csr_matrix, torch.Tensor, float]:
    """Gauss-Newton system of the Cauchy cost at ``st`` (reweighted: each match weighted by
    ``1 / (1 + |w r|^2 / sigma^2)`` per 3-D distance or pixel offset): ``H (n, n)`` (a dense
    tensor, or a scipy CSR matrix above :data:`_DENSE_UNKNOWNS` unknowns), gradient ``g (n,)``
    and the cost. The per-match Jacobian ``(D, 22)`` is analytic (:func:`_jac3d`,
    :func:`_jac2d`; a test checks it against :func:`torch.func.jacfwd` of the plain residuals)."""
    n = pb.n_cols
    dense = n <= _DENSE_UNKNOWNS
    H = torch.zeros((n + 1) * (n + 1) if dense else 0, dtype=torch.float64)
    Hs = scipy.sparse.csr_matrix((n + 1, n + 1))
    g = torch.zeros(n + 1, dtype=torch.float64)
    cost = 0.0
    for sel in _chunks(len(pb.ii)):
        L, consts = _local(pb, st, sel)
        w = pb.w[sel, None]
        r, J = _JAC[fn](L, *consts)
        r = r * w                                         # (m, D)
        J = J * w[..., None]                              # (m, D, 22)
        m, D = r.shape
        r2 = r.square().reshape(m, -1, _GROUP[fn]).sum(-1)  # (m, D / group)
        cost += float((0.5 * sigma**2 * torch.log1p(r2 / sigma**2)).sum())
        rho = (1.0 / (1.0 + r2 / sigma**2)).repeat_interleave(_GROUP[fn], 1)  # (m, D) IRLS weights
        Jw = J * rho[..., None].sqrt()
        Hl = Jw.transpose(1, 2) @ Jw                      # (m, 22, 22)
        gl = (J.transpose(1, 2) @ (rho * r)[..., None])[..., 0]  # (m, 22)
        cc = _local_cols(pb, sel)
        g.index_add_(0, cc.reshape(-1), gl.reshape(-1))
        if dense:
            H.index_add_(0, (cc[:, :, None] * (n + 1) + cc[:, None, :]).reshape(-1), Hl.reshape(-1))
        else:  # duplicates are summed by the conversion
            rows = cc[:, :, None].expand_as(Hl).reshape(-1).numpy()
            Hs = Hs + scipy.sparse.coo_matrix((Hl.reshape(-1).numpy(), (rows, cc[:, None, :].expand_as(Hl)
                                               .reshape(-1).numpy())), shape=(n + 1, n + 1)).tocsr()
    if fn is _res2d:
        cf, hf, gf = _focal_term(pb, st, sigma)
        fcol = torch.where(pb.cols[:, 6] < 0, n, pb.cols[:, 6])
        g.index_add_(0, fcol, gf)
        cost += cf
        if dense:
            H.index_add_(0, fcol * (n + 2), hf)
        else:
            Hs = Hs + scipy.sparse.coo_matrix((hf.numpy(), (fcol.numpy(), fcol.numpy())),
                                              shape=(n + 1, n + 1)).tocsr()
    if dense:
        return H.reshape(n + 1, n + 1)[:n, :n], g[:n], cost
    return Hs[:n, :n], g[:n], cost


def _damped_solve(H: torch.Tensor | scipy.sparse.csr_matrix, g: torch.Tensor, lam: float
                  ) -> torch.Tensor | None:
    """Levenberg-Marquardt step ``-(H + lam diag(H))^-1 g`` (``None`` when not solvable)."""
    if isinstance(H, torch.Tensor):
        diag = H.diagonal().clamp(min=1e-12)
        chol, info = torch.linalg.cholesky_ex(H + torch.diag(lam * diag + 1e-12 * float(diag.max())))
        return None if int(info) != 0 else torch.cholesky_solve(-g[:, None], chol)[:, 0]
    diag = np.clip(H.diagonal(), 1e-12, None)
    A = (H + scipy.sparse.diags(lam * diag + 1e-12 * float(diag.max()))).tocsc()
    x = scipy.sparse.linalg.spsolve(A, -g.numpy())
    return torch.from_numpy(x) if np.isfinite(x).all() else None


def _solve(pb: _Problem, st: _State, fn, sigmas: Sequence[float], iters: int, tol: float = 1e-7
           ) -> tuple[_State, int]:
    """Robust Levenberg-Marquardt from ``st``: for each Cauchy scale of ``sigmas`` (large to small,
    so that residuals far off at the start are not taken for outliers) iterate until the relative
    cost decrease is below ``tol``; at most ``iters`` linearisations over all scales. Returns the
    state and the number of linearisations."""
    if iters <= 0 or pb.n_cols == 0 or len(pb.ii) == 0:
        return st, 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: thread start-up costs more than it saves
    used = 0
    try:
        for sigma in sigmas:
            lam = 1e-4
            while used < iters:
                H, g, cost = _normal_equations(pb, st, fn, sigma)
                used += 1
                improved, new = False, cost
                for _ in range(10):  # damping trials on one linearisation
                    delta = _damped_solve(H, g, lam)
                    if delta is None:
                        lam *= 10
                        continue
                    trial = st.step(pb, delta)
                    new = _cost(pb, trial, fn, sigma)
                    if new < cost:
                        st, lam, improved = trial, max(lam / 3, 1e-9), True
                        break
                    lam *= 8
                if not improved or (cost - new) <= tol * cost:
                    break
    finally:
        torch.set_num_threads(threads)
    return st, used


# ----------------------------------------------------------------------------- driver


def _canonical_pointmaps(preds: PairPredictions, images: list[int], pp: torch.Tensor, conf_trf: str
                         ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict[int, float]]:
    """Per image its canonical pointmap ``(H, W, 3)`` (its camera frame, float64), confidence
    ``(H, W)`` and focal (pixels, :func:`~pointmap.geometry.camera.estimate_focal` of the
    canonical pointmap with principal point ``pp[k]``): the confidence-weighted (``conf_trf``)
    mean of every ``pts3d_1`` where it comes first, each brought to the scale of the most
    confident one (median ratio of depths), and the largest confidence. Averaging the pairs'
    independent errors is what makes one pointmap per image as good as all of them
    (MASt3R-SfM's canonical pointmaps)."""
    by_img: dict[int, list[int]] = {}
    for e, (i, j) in enumerate(preds.pairs):
        if i in images and i != j:
            by_img.setdefault(i, []).append(e)
    missing = [k for k in images if k not in by_img]
    if missing:
        raise GraphError(f"sparse alignment needs a pair (k, j) for every image k (its own "
                         f"pointmap); images {missing} only come second: symmetrize the pairs")
    pts, conf, focal = {}, {}, {}
    for k in images:
        ps = [preds.pts3d_1[e].double() for e in by_img[k]]
        cs = [preds.conf_1[e].float() for e in by_img[k]]
        best = max(range(len(ps)), key=lambda a: float(cs[a].mean()))
        zb = ps[best][..., 2]
        num = torch.zeros_like(ps[best])
        den = torch.zeros_like(zb)
        for p, c in zip(ps, cs):
            ok = (p[..., 2] > 0) & (zb > 0)
            s = (zb[ok] / p[..., 2][ok]).median() if bool(ok.any()) else torch.ones((), dtype=p.dtype)
            wgt = conf_transform(c, conf_trf).double().clamp(min=0) * (p[..., 2] > 0)
            num += (wgt * s)[..., None] * p
            den += wgt
        pts[k] = torch.where((den > 0)[..., None], num / den.clamp(min=1e-12)[..., None], ps[best])
        conf[k] = torch.stack(cs).amax(0)
        focal[k] = float(estimate_focal(pts[k], pp[k].double()))
    return pts, conf, focal


def _focal_pixels(pts: dict[int, torch.Tensor], conf: dict[int, torch.Tensor], pp: torch.Tensor, N: int,
                  conf_trf: str, masks: Sequence[torch.Tensor | None] | None, budget: int = 4096
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pixels of the focal term (:func:`_focal_term`): per image about ``budget`` pixels on a
    regular grid, their canonical ``(x/z, y/z)`` ``(N, P, 2)``, offsets from the principal point
    ``(N, P, 2)`` and confidence weights ``(N, P)`` (0 for padding, masked or invalid pixels)."""
    per = {}
    for k, p in pts.items():
        H, W = p.shape[:2]
        step = max(1, int((H * W / budget) ** 0.5))
        ys, xs = torch.meshgrid(torch.arange(0, H, step), torch.arange(0, W, step), indexing="ij")
        ys, xs = ys.reshape(-1), xs.reshape(-1)
        q = p[ys, xs]
        ok = q[:, 2] > 0
        if masks is not None and masks[k] is not None:
            ok &= masks[k].bool()[ys, xs]
        wk = conf_transform(conf[k][ys, xs], conf_trf).double().clamp(min=0) * ok
        c = torch.stack([xs, ys], 1).double() - pp[k]
        per[k] = (q[:, :2] / q[:, 2:3].clamp(min=1e-12) * ok[:, None], c, wk)
    P = max(len(v[2]) for v in per.values())
    fu = torch.zeros(N, P, 2, dtype=torch.float64)
    fc = torch.zeros(N, P, 2, dtype=torch.float64)
    fw = torch.zeros(N, P, dtype=torch.float64)
    for k, (a, c, wk) in per.items():
        fu[k, : len(wk)], fc[k, : len(wk)], fw[k, : len(wk)] = a, c, wk
    return fu, fc, fw


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
    pts, conf, focal0 = _canonical_pointmaps(preds, images, known.pp, cfg.conf_trf)
    z = {k: p[..., 2] for k, p in pts.items()}
    N = len(shapes)
    gx, gy = sp.grid
    G = gx * gy
    masks = inputs.get("masks")
    pp = known.pp.double().clone()
    fu, fc, fw = _focal_pixels(pts, conf, pp, N, cfg.conf_trf, inputs.get("masks"))
    P = torch.zeros(N, _NP + G, dtype=torch.float64)

    # focal init: known, or Weiszfeld on the canonical pointmap (median when shared)
    for k in images:
        # one focal per image: the mean of a known (fx, fy)
        f = known.focals[k].double().mean() if known.focal_mask[k] else focal0[k]
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
        first = next(iter(maps.values()))
        out_v = torch.empty((len(k_t),) + first.shape[2:], dtype=first.dtype)
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
                  fu, fc, fw, cols, n)
    st = _State(rot, P[:, 3:6].clone(), P[:, 6].clone(), P[:, _NP:].clone())
    # 3-D distances are not scale invariant (shrinking clouds lowers them): the residuals are
    # relative to depth, the coarse stage freezes the focals (a longer focal pulls a cloud onto its
    # optical axis) and ties each image's anchors to one depth scale; anchors and focals are freed
    # in 2-D, which is scale invariant.
    cc = cols.clone()
    cc[:, 6] = -1
    cc[:, _NP:] = cols[:, _NP:_NP + 1]
    st, _ = _solve(dataclasses.replace(pb, cols=cc), st, _res3d, sp.coarse_rel, sp.coarse_iters)
    st, _ = _solve(pb, st, _res2d, sp.fine_px, sp.fine_iters)

    # ---- outputs: poses, intrinsics, dense depth from each image's own pointmap
    for k in images:
        h, wd = shapes[k]
        out.poses[k] = torch.eye(4)
        out.poses[k, :3, :3], out.poses[k, :3, 3] = st.R[k].float(), st.C[k].float()
        if known.pose_mask[k]:
            out.poses[k] = known.poses[k]
        out.Ks[k] = intrinsics_matrix(st.log_f[k].exp().float(), pp[k].float())
        if known.focal_mask[k]:  # user-frozen intrinsics are reported exactly as given
            out.Ks[k] = intrinsics_matrix(known.focals[k].float(), known.pp[k].float())
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(wd), indexing="ij")
        idx, bw = _bilinear(torch.stack([xs, ys], -1).reshape(-1, 2), h, wd, gx, gy)
        field = (st.anchors[k][idx] * bw).sum(1).exp().reshape(h, wd)
        out.depths[k] = (z[k] * field).float()
        out.confs[k] = conf[k]
        out.placed[k] = True
    return assemble_scene(out, imgs, masks, cfg.conf_threshold)
