"""Second-order coarse solver: robust Levenberg-Marquardt with the depths eliminated.

(Over 450 lines: the problem layout and the closed-form reduced normal equations are one derivation.)

Unknowns (``N`` images, ``E`` edges, ``n`` coarse pixels per image):

* per image ``k``: rotation ``R_k`` (updated on SO(3) by a left axis-angle increment), centre
  ``C_k``, log-focal ``phi_k`` (``fx = fy = exp(phi)``) -- 7 parameters;
* per coarse pixel: a depth ``d_kp``; the world point is ``X_kp = C_k + d_kp R_k K_k^-1 (u, v, 1)``;
* per edge ``e``: a similarity ``Y = s_e R_e P + t_e`` of its predictions ``P`` (camera-``i``
  frame) with ``s_e = exp(varsigma_e)`` -- 7 parameters.

Residuals: ``r = X_k(p) - Y_e(p)`` for every edge ``e`` containing image ``k`` (both of its sides),
weighted by the confidence weights. The Euclidean-norm (``'l1'``) loss ``sum w ||r||`` is minimised
by iteratively reweighted least squares (weights ``w / ||r||``, a majoriser of the loss); each
iteration takes one Levenberg-Marquardt step on the weighted least squares.

Every depth appears only in the residuals of its own pixel, so it is eliminated by a Schur
complement (a 1x1 block per pixel); the depths of images whose depth is known are constants
(not eliminated, not updated). The reduced normal matrix over cameras and edges
(``7 (N + E)`` unknowns) is assembled image by image -- each image couples its camera with the
edges it belongs to -- and solved in float64: densely (Cholesky on the compute device) while it
fits in ``dense_bytes``, otherwise as a sparse matrix (SuperLU with a fill-reducing ordering, on
the CPU). Only edges sharing an image are coupled, so the sparse matrix holds about
``N (7 (d + 1))^2`` entries (``d`` edge sides per image) where the dense one holds
``(7 (N + E))^2``: 300 images with ``logwin-5`` (3000 ordered pairs) need 4.3 GB dense and about
0.1 GB sparse. After a step the depths are set to
their closed-form optimum for the new cameras and edges (variable projection); a step is kept only
if the loss decreases, otherwise the damping grows. A step moves no log-focal by more than 0.5,
nor a focal out of 0.05-50 times its image's larger side (a camera its pixels do not pin down,
e.g. one initialised far from its neighbours, cannot run its focal to overflow). An accepted step is then tried 2, 4, ... 16
times as long while the loss keeps falling: the IRLS majoriser is stiffer than the Euclidean-norm
loss along the residuals, so on long camera chains its steps fall short along smooth deformations
(on a 1000-image chain, without this, the rotation error shrank by only about 7 % per iteration).

Gauge: without known poses the first image's pose is held fixed; the scale is fixed as in the
reference by pinning the geometric mean of the pair scales to ``base_scale`` (the update of the
log-scales is projected onto zero mean) unless two or more poses are known.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..geometry.camera import normalize_pixels
from .data import CoarseData
from .lm import Damping, NormalEquations, SparseSum, rotate, skew, solves_densely, sparse_method
from .pcg import DeviceSparseSum
from .lm import extrapolate as extrapolate_step

__all__ = ["FOCAL_RANGE", "MAX_LOG_FOCAL_STEP", "GNProblem", "GNState", "gauss_newton"]

#: a step moves no focal out of this range (times the image's larger side, pixels), nor further
#: out if it starts outside
FOCAL_RANGE = (0.05, 50.0)
#: largest change of a log-focal in one step (its factor ``e^0.5 = 1.65``)
MAX_LOG_FOCAL_STEP = 0.5


@dataclass
class GNState:
    """Current estimate (all on the compute device, float32).

    Attributes:
        R: ``(N, 3, 3)`` camera-to-world rotations; ``C``: ``(N, 3)`` camera centres.
        log_f: ``(N, 2)`` ``log fx, log fy`` (pixels).
        depth: ``(N, n)`` z-depth of the coarse pixels (scene units).
        Re: ``(E, 3, 3)``, ``te``: ``(E, 3)``, ``log_s``: ``(E,)``: pair similarities, prediction
            ``P`` -> world ``exp(log_s) Re P + te``.
    """

    R: torch.Tensor
    C: torch.Tensor
    log_f: torch.Tensor
    depth: torch.Tensor
    Re: torch.Tensor
    te: torch.Tensor
    log_s: torch.Tensor


@dataclass
class GNProblem:
    """Data of the coarse problem rearranged per image ("slots" = the edge sides an image is in).

    Shapes: ``N`` images, ``d`` maximum slots per image, ``n`` coarse pixels.

    Attributes:
        uv: ``(N, n, 2)`` pixel coordinates; ``pp``: ``(N, 2)`` principal points; ``skew``:
            ``(N,)`` the cameras' skews ``K[0, 1]`` (pixels; non-zero only for known intrinsics).
        slot_edge: ``(N, d)`` edge of each slot (0 on padding); ``slot_ok``: ``(N, d)`` bool;
            ``slot_first``: ``(N, d)`` bool, the image is the slot edge's first image.
        pts_i, pts_j: ``(E, n, 3)`` every edge's coarse predictions of its two images
            (camera-``i`` frame), shared with the :class:`CoarseData` (not copied per slot:
            :meth:`slot_points` gathers a chunk of images' slots).
        ei, ej: ``(E,)`` every edge's images.
        w_i, w_j: ``(E, n)`` their loss weights; ``w_scale``: the factors making
            ``sum w ||r|| / area`` the reference loss (:meth:`slot_weights`).
        area: loss normaliser.
        cam_index: ``(N, 7)`` position of each camera parameter in the unknown vector (``n_unknowns``
            = frozen / gauge-fixed); ``edge_index``: ``(E, 7)`` likewise for edges.
        n_unknowns: size of the reduced system.
        pin_scale: the pair log-scales are projected onto zero-mean updates.
        depth_fixed: ``(N,)`` bool, images whose depths are known (held at the state's).
        degree: ``(N,)`` (CPU) each image's slot count: a chunk of images is processed with the
            slots of its most connected one (:meth:`width`), not ``d``.
        log_f_range: ``(N, 2)`` the lowest and highest log-focal a step may take each image to
            (:data:`FOCAL_RANGE` times its larger side in pixels; with a shared focal, the range
            every image allows): a camera no pixel pins down cannot run its focal away.
    """

    uv: torch.Tensor
    pp: torch.Tensor
    skew: torch.Tensor
    slot_edge: torch.Tensor
    slot_ok: torch.Tensor
    slot_first: torch.Tensor
    pts_i: torch.Tensor
    pts_j: torch.Tensor
    ei: torch.Tensor
    ej: torch.Tensor
    w_i: torch.Tensor
    w_j: torch.Tensor
    w_scale: tuple[float, float]
    area: float
    cam_index: torch.Tensor
    edge_index: torch.Tensor
    n_unknowns: int
    pin_scale: bool
    depth_fixed: torch.Tensor
    degree: torch.Tensor
    log_f_range: torch.Tensor

    @staticmethod
    def build(
        data: CoarseData,
        pp: torch.Tensor,
        pose_frozen: torch.Tensor,
        focal_frozen: torch.Tensor,
        shared_focal: bool,
        pin_scale: bool,
        skew: torch.Tensor | None = None,
        depth_fixed: torch.Tensor | None = None,
    ) -> GNProblem:
        """Arrange ``data`` per image and number the unknowns.

        Args:
            pp: ``(N, 2)`` principal points.
            pose_frozen, focal_frozen: ``(N,)`` bool, known (frozen) poses / focals.
            shared_focal: one focal for every image whose focal is not known.
            pin_scale: pin the geometric mean of the pair scales (no scale from known poses).
            skew: ``(N,)`` skews of the cameras (pixels; zero when ``None``).
            depth_fixed: ``(N,)`` bool, images whose depths stay at the state's (none when ``None``).
        """
        dev = data.pts_i.device
        N, E = data.n_images, len(data.ei)
        img = torch.cat([data.ei, data.ej])
        order = torch.argsort(img, stable=True)
        deg = torch.bincount(img, minlength=N)
        d = int(deg.max())
        start = torch.cumsum(deg, 0) - deg
        pos = torch.arange(2 * E, device=dev) - start[img[order]]
        table = torch.full((N, d), -1, dtype=torch.long, device=dev)
        table[img[order], pos] = order
        ok = table >= 0
        sid = table.clamp(min=0)
        area_i = data.valid.sum(1).float()[data.ei].sum().clamp(min=1)
        area_j = data.valid.sum(1).float()[data.ej].sum().clamp(min=1)
        area = float((area_i + area_j) / 2)

        # numbering of the unknowns; frozen / gauge-fixed entries get the index n_unknowns
        pose_fixed = pose_frozen.clone().to(dev)
        if not bool(pose_fixed.any()):
            pose_fixed[0] = True  # gauge: the first image's pose stays at its initial value
        cam_index = torch.empty(N, 7, dtype=torch.long, device=dev)
        nxt = 0
        free_pose = torch.nonzero(~pose_fixed).flatten()
        cam_index[:, :6] = -1
        cam_index[free_pose, :6] = nxt + torch.arange(6 * len(free_pose), device=dev).reshape(-1, 6)
        nxt += 6 * len(free_pose)
        free_f = torch.nonzero(~focal_frozen.to(dev)).flatten()
        cam_index[:, 6] = -1
        if len(free_f):
            if shared_focal:
                cam_index[free_f, 6] = nxt
                nxt += 1
            else:
                cam_index[free_f, 6] = nxt + torch.arange(len(free_f), device=dev)
                nxt += len(free_f)
        edge_index = nxt + torch.arange(7 * E, device=dev).reshape(E, 7)
        nxt += 7 * E
        cam_index[cam_index < 0] = nxt
        return GNProblem(
            uv=data.uv, pp=pp.to(dev),
            skew=torch.zeros(N, device=dev) if skew is None else skew.to(dev), slot_edge=sid % E, slot_ok=ok, slot_first=sid < E,
            pts_i=data.pts_i, pts_j=data.pts_j, ei=data.ei, ej=data.ej, w_i=data.w_i, w_j=data.w_j,
            w_scale=(area / float(area_i), area / float(area_j)), area=area, cam_index=cam_index,
            edge_index=edge_index, n_unknowns=nxt, pin_scale=pin_scale,
            depth_fixed=torch.zeros(N, dtype=torch.bool, device=dev) if depth_fixed is None else depth_fixed.to(dev),
            degree=deg.cpu(), log_f_range=_log_f_range(data.shapes, shared_focal, focal_frozen).to(dev),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, d, n)``: images, slots per image, coarse pixels per image."""
        return (*self.slot_edge.shape, self.uv.shape[1])  # type: ignore[return-value]

    def width(self, ks: slice) -> int:
        """Slots of images ``ks`` (those of the most connected one): the chunk's ``d``."""
        return max(1, int(self.degree[ks].max()))

    def slot_points(self, ks: slice) -> torch.Tensor:
        """``(c, d, n, 3)`` the slots' predictions of images ``ks``' pixels (``d``: :meth:`width`)."""
        w = self.width(ks)
        e, first = self.slot_edge[ks, :w], self.slot_first[ks, :w]
        out = self.pts_j[e]
        out[first] = self.pts_i[e[first]]  # the first sides overwritten: no third full-size tensor
        return out

    def slot_weights(self, ks: slice) -> torch.Tensor:
        """``(c, d, n)`` loss weights of images ``ks``' slots (0 on padding; ``d``: :meth:`width`)."""
        d = self.width(ks)
        e, first = self.slot_edge[ks, :d], self.slot_first[ks, :d]
        w = self.w_j[e].mul_(self.w_scale[1])
        w[first] = self.w_i[e[first]] * self.w_scale[0]
        return w.mul_(self.slot_ok[ks, :d][..., None])

    def pixel_weights(self) -> torch.Tensor:
        """``(N, n)`` every pixel's loss weight summed over its slots."""
        N, _, n = self.shape
        W = torch.zeros(N, n, dtype=self.w_i.dtype, device=self.w_i.device)
        W.index_add_(0, self.ei, self.w_i * self.w_scale[0])
        W.index_add_(0, self.ej, self.w_j * self.w_scale[1])
        return W


def _log_f_range(shapes: list[tuple[int, int]], shared: bool, frozen: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` log-focal bounds of :attr:`GNProblem.log_f_range` for images of ``shapes``
    ``(H, W)``; with a ``shared`` focal, the intersection over the images whose focal is free."""
    side = torch.tensor([float(max(h, w)) for h, w in shapes]).log()
    lo, hi = side + math.log(FOCAL_RANGE[0]), side + math.log(FOCAL_RANGE[1])
    free = ~frozen.cpu()
    if shared and bool(free.any()):
        lo, hi = lo.where(~free, lo[free].max()), hi.where(~free, hi[free].min())
    return torch.stack([lo, hi], -1)


def _rays(st: GNState, pb: GNProblem, ks: slice) -> torch.Tensor:
    """``(c, n, 3)`` world directions (unit camera z) of the coarse pixels of images ``ks``."""
    f = st.log_f[ks].exp()
    xy = normalize_pixels(pb.uv[ks], f[:, None, 0], f[:, None, 1], pb.pp[ks, None], pb.skew[ks, None])
    cam = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)
    return cam @ st.R[ks].transpose(1, 2)


def _targets(st: GNState, pb: GNProblem, ks: slice, keep_q: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Slot predictions in the world ``Y (c, d, n, 3)`` and their rotated-scaled part ``Q``
    (``None`` unless ``keep_q``: then ``Y`` is made in ``Q``'s memory)."""
    e = pb.slot_edge[ks, : pb.width(ks)]
    M = st.log_s[e].exp()[..., None, None] * st.Re[e]
    Q = pb.slot_points(ks) @ M.transpose(-1, -2)
    if not keep_q:
        return Q.add_(st.te[e][:, :, None, :]), None
    return Q + st.te[e][:, :, None, :], Q


def _chunks(pb: GNProblem, budget: int) -> list[slice]:
    """Runs of consecutive images whose slot-pixel count (at the width of their most connected
    image) stays below ``budget``; a run also ends before an image whose many more slots would
    make it half as wide again (e.g. old images held fixed, with few pairs, before the new ones
    with many: two runs, the first not padded to the second's width)."""
    N, _, n = pb.shape
    deg = [max(int(x), 1) for x in pb.degree.tolist()]
    out, a = [], 0
    while a < N:
        hi, b = deg[a], a + 1
        while b < N:
            wide = max(hi, deg[b])
            if (b + 1 - a) * wide > 1.5 * ((b - a) * hi + deg[b]) or (b + 1 - a) * wide * n > budget:
                break
            hi, b = wide, b + 1
        out.append(slice(a, b))
        a = b
    return out


def _irls(w: torch.Tensor, res: torch.Tensor, dist: str, eps: float) -> torch.Tensor:
    return w if dist == "l2" else w / res.clamp(min=eps)


@torch.no_grad()
def loss_and_depth(
    st: GNState, pb: GNProblem, dist: str, eps: float, weights: list[torch.Tensor] | None,
    depth_passes: int, budget: int,
) -> tuple[float, torch.Tensor, list[torch.Tensor]]:
    """Closed-form depths for the current cameras and edges, and the loss there.

    ``depth_passes`` weighted least-squares depth solves (the first with ``weights`` when given,
    i.e. the IRLS weights of the linearisation point, the next ones reweighted at the new
    residuals); ``0`` keeps ``st.depth``, as do the images of ``pb.depth_fixed``.

    Returns:
        ``(loss, depth (N, n), irls weights per chunk (c, d, n))``.
    """
    depth = st.depth.clone()
    total = 0.0
    new_w: list[torch.Tensor] = []
    for c, ks in enumerate(_chunks(pb, budget)):
        D = _rays(st, pb, ks)
        V = _targets(st, pb, ks, keep_q=False)[0].sub_(st.C[ks][:, None, None, :])  # relative to the centre
        DV = (V * D[:, None]).sum(-1)  # (c, d, n)
        DD = (D * D).sum(-1)  # (c, n)
        dk = depth[ks]
        wk = pb.slot_weights(ks)
        free = ~pb.depth_fixed[ks, None]
        for t in range(depth_passes):
            if t == 0 and weights is not None:
                wt = weights[c]
            else:
                res = ((dk[..., None] * D)[:, None] - V).norm(dim=-1)
                wt = _irls(wk, res, dist, eps)
            den = wt.sum(1) * DD
            num = (wt * DV).sum(1)
            good = (den > 0) & (num > 0) & free
            dk = torch.where(good, num / den.clamp(min=1e-30), dk)
        res = ((dk[..., None] * D)[:, None] - V).norm(dim=-1)
        total += float((wk * (res if dist == "l1" else res * res)).sum())
        new_w.append(_irls(wk, res, dist, eps))
        depth[ks] = dk
    return total / pb.area, depth, new_w


def _cross_of(M: torch.Tensor) -> torch.Tensor:
    """``(..., 3)``: ``sum_k a_k x b_k`` from ``M = sum_k a_k b_k^T`` ``(..., 3, 3)``."""
    return torch.stack(
        [M[..., 1, 2] - M[..., 2, 1], M[..., 2, 0] - M[..., 0, 2], M[..., 0, 1] - M[..., 1, 0]], -1
    )


def _trace_eye(M: torch.Tensor) -> torch.Tensor:
    """``tr(M) I`` for ``(..., 3, 3)`` matrices."""
    tr = M.diagonal(dim1=-2, dim2=-1).sum(-1)
    return tr[..., None, None] * torch.eye(3, dtype=M.dtype, device=M.device)


def _slot_blocks(w: torch.Tensor, wQ: torch.Tensor, Q: torch.Tensor, Delta: torch.Tensor, Dz: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-edge and edge-edge blocks ``(c, d, 7, 7)`` of ``J^T W J`` of each image's slots, from
    the weights ``w (c, d, n)``, ``wQ = w Q`` and ``Q (c, d, n, 3)``, ``Delta`` and ``Dz (c, n, 3)``
    (see :func:`_linearise`)."""
    cn, d, n = w.shape
    eye = torch.eye(3, device=w.device)
    # weighted moments per slot: [1, Q] x [1, Delta, Dz] and Q Q^T
    F = torch.cat([torch.ones_like(Delta[..., :1]), Delta, Dz], -1)  # (c, n, 7)
    wpsi = torch.cat([w[..., None], wQ], -1)  # (c, d, n, 4)
    mom = (wpsi.transpose(2, 3).reshape(cn, d * 4, n) @ F).reshape(cn, d, 4, 7)
    m0, mD, mZ = mom[:, :, 0, 0], mom[:, :, 0, 1:4], mom[:, :, 0, 4:7]
    mQ, mQD, mQZ = mom[:, :, 1:, 0], mom[:, :, 1:, 1:4], mom[:, :, 1:, 4:7]
    mQQ = wQ.transpose(2, 3) @ Q  # (c, d, 3, 3)
    I3 = eye.expand(cn, d, 3, 3)
    Mce = torch.cat([
        torch.cat([mQD - _trace_eye(mQD), -skew(mD), -_cross_of(mQD.transpose(-1, -2))[..., None]], -1),
        torch.cat([skew(mQ), -m0[..., None, None] * I3, -mQ[..., None]], -1),
        torch.cat([-_cross_of(mQZ.transpose(-1, -2))[..., None, :], mZ[..., None, :],
                   _trace_eye(mQZ)[..., :1, :1]], -1),
    ], -2)  # (c, d, 7, 7)
    trQQ = _trace_eye(mQQ)
    Mee = torch.cat([
        torch.cat([trQQ - mQQ, skew(mQ), torch.zeros_like(mQ[..., None])], -1),
        torch.cat([-skew(mQ), m0[..., None, None] * I3, mQ[..., None]], -1),
        torch.cat([torch.zeros_like(mQ[..., None, :]), mQ[..., None, :], trQQ[..., :1, :1]], -1),
    ], -2)
    return Mce, Mee


def _linearise(
    st: GNState, pb: GNProblem, weights: list[torch.Tensor], budget: int, sparse: str | None = None,
) -> tuple[Any, torch.Tensor]:
    """Reduced (depth-eliminated) normal equations ``H (K, K)``, ``g (K,)`` in float64 over the
    ``K = pb.n_unknowns`` unknowns; ``H`` is a dense tensor on the compute device, or with
    ``sparse`` (only the blocks of each image's camera and edges are stored) a ``scipy.sparse``
    CSR matrix on the CPU (``'direct'``) or a sparse CSR tensor on the device (``'cg'``).

    Jacobians of a residual ``r = X_k(p) - Y_e(p)`` (``Delta = X - C``, ``Z = d R e_z``,
    ``Q = s_e R_e P``), columns (rotation increment, centre / translation, log-focal / log-scale):
    camera ``[-[Delta]x, I, Z - Delta]``, edge ``[[Q]x, -I, -Q]``, log-depth ``Delta``. The products
    ``J^T W J`` are written in closed form from weighted moments of ``Q``, ``Delta`` and ``Z``
    (batched matrix products over pixels), never materialising per-residual Jacobians.
    """
    K = pb.n_unknowns
    dev = st.R.device
    sums = {"direct": lambda: SparseSum(K), "cg": lambda: DeviceSparseSum(K, dev),
            None: lambda: torch.zeros(K, K, dtype=torch.float64, device=dev)}
    H: Any = sums[sparse]()
    g = torch.zeros(K, dtype=torch.float64, device=dev)
    eye = torch.eye(3, device=dev)
    for c, ks in enumerate(_chunks(pb, budget)):
        w = weights[c]  # (c, d, n)
        cn, d, n = w.shape
        D = _rays(st, pb, ks)
        dep = st.depth[ks]
        Delta = dep[..., None] * D  # (c, n, 3) point minus centre
        Dz = Delta - dep[..., None] * st.R[ks][:, None, :, 2]  # minus the focal derivative
        X = st.C[ks][:, None, :] + Delta
        Y, Q = _targets(st, pb, ks)
        wr = w[..., None] * (X[:, None] - Y)  # (c, d, n, 3)
        wQ = w[..., None] * Q
        W = w.sum(1)  # (c, n)

        # camera-camera: sum_p W J_c^T J_c
        Jc = torch.cat([-skew(Delta), eye.expand(cn, n, 3, 3), -Dz[..., None]], -1)
        Mcc = (W[..., None, None] * Jc).reshape(cn, n * 3, 7).transpose(1, 2) @ Jc.reshape(cn, n * 3, 7)
        Mce, Mee = _slot_blocks(w, wQ, Q, Delta, Dz)
        rho = wr.sum(1)  # (c, n, 3)
        gc = (Jc * rho[..., None]).sum((1, 2))  # (c, 7)
        rQ = wr.transpose(2, 3) @ Q  # (c, d, 3, 3) moments sum_p wr Q^T
        ge = torch.cat([
            _cross_of(rQ), -wr.sum(2), -rQ.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True),
        ], -1)  # (c, d, 7)
        # depth elimination (the log-depth column of every residual of pixel p is Delta_p)
        h = W * (Delta * Delta).sum(-1)  # (c, n)
        elim = (h > 1e-20 * h.amax().clamp(min=1e-30)) & ~pb.depth_fixed[ks, None]  # known depths: constants
        hinv = torch.where(elim, 1 / h, torch.zeros_like(h))
        gd = (rho * Delta).sum(-1)
        B = _depth_rows(W, w, wQ, Delta, Dz)
        S = (B * hinv[..., None]).transpose(1, 2) @ B
        gS = (B.transpose(1, 2) @ (gd * hinv)[..., None])[..., 0]
        L = torch.zeros(cn, d + 1, 7, d + 1, 7, device=dev)
        L[:, 0, :, 0] = Mcc
        idx = torch.arange(1, d + 1, device=dev)
        L[:, 0, :, 1:] = Mce.permute(0, 2, 1, 3)
        L[:, 1:, :, 0] = Mce.transpose(-1, -2)
        L[:, idx, :, idx] = Mee.transpose(0, 1)
        L = L.reshape(cn, 7 * (d + 1), 7 * (d + 1)) - S
        gl = torch.cat([gc[:, None], ge], 1).reshape(cn, -1) - gS
        _scatter(H, g, pb, ks, L, gl)
    return (H if sparse is None else H.matrix()), g


def _depth_rows(W: torch.Tensor, w: torch.Tensor, wQ: torch.Tensor, Delta: torch.Tensor, Dz: torch.Tensor
                ) -> torch.Tensor:
    """``(c, n, 7 (d + 1))``: per pixel, the weighted products of its log-depth column with the
    camera's and each slot edge's columns (the rows the Schur complement eliminates), from ``W
    (c, n)``, ``w (c, d, n)``, ``wQ (c, d, n, 3)``, ``Delta``, ``Dz (c, n, 3)`` (see
    :func:`_linearise`); written in place, pixel-major, without intermediate copies."""
    cn, d, n = w.shape
    B = torch.empty(cn, n, d + 1, 7, dtype=w.dtype, device=w.device)
    B[:, :, 0, :3] = 0  # camera: rotation, centre, log-focal
    torch.mul(W[..., None], Delta, out=B[:, :, 0, 3:6])
    B[:, :, 0, 6] = W * -(Delta * Dz).sum(-1)
    a, q = Delta[:, :, None], wQ.transpose(1, 2)  # (c, n, 1, 3), (c, n, d, 3)
    B[:, :, 1:, :3] = torch.linalg.cross(a.expand_as(q), q)  # edges: rotation, translation, log-scale
    torch.mul(w.transpose(1, 2)[..., None], a, out=B[:, :, 1:, 3:6]).neg_()
    torch.sum(q * a, -1, out=B[:, :, 1:, 6]).neg_()
    return B.reshape(cn, n, 7 * (d + 1))


def _scatter(H: torch.Tensor | SparseSum | DeviceSparseSum, g: torch.Tensor, pb: GNProblem, ks: slice,
             L: torch.Tensor, gl: torch.Tensor) -> None:
    """Add images ``ks``' reduced blocks ``L (c, 7 (d + 1), 7 (d + 1))`` and gradients ``gl (c, 7
    (d + 1))`` (camera, then slot edges) into ``H`` and ``g``; frozen entries (index ``K``) are
    dropped."""
    K = pb.n_unknowns
    cn = L.shape[0]
    d = pb.width(ks)
    eidx = torch.where(pb.slot_ok[ks, :d][..., None], pb.edge_index[pb.slot_edge[ks, :d]], K)
    gi = torch.cat([pb.cam_index[ks][:, None], eidx], 1).reshape(cn, -1)  # (c, 7(d+1))
    free = gi < K
    gl = torch.where(free, gl, torch.zeros_like(gl))
    if isinstance(H, (SparseSum, DeviceSparseSum)):
        both = free[:, :, None] & free[:, None, :]
        H.add(gi[:, :, None].expand_as(L)[both], gi[:, None, :].expand_as(L)[both], L[both])
    else:
        L = torch.where(free[:, :, None] & free[:, None, :], L, torch.zeros_like(L))
        gi = torch.where(free, gi, torch.zeros_like(gi))
        H.view(-1).index_add_(0, (gi[:, :, None] * K + gi[:, None, :]).reshape(-1), L.reshape(-1).double())
    g.index_add_(0, torch.where(free, gi, torch.zeros_like(gi)).reshape(-1), gl.reshape(-1).double())


def _apply(st: GNState, pb: GNProblem, delta: torch.Tensor) -> GNState:
    """State moved by the unknown-vector step ``delta (K,)`` (depths unchanged); each log-focal
    moves by at most :data:`MAX_LOG_FOCAL_STEP` and not out of ``pb.log_f_range`` (nor further
    out when it starts outside)."""
    full = torch.cat([delta.float(), delta.new_zeros(1).float()])
    dc = full[pb.cam_index]  # (N, 7)
    de = full[pb.edge_index]  # (E, 7)
    dls = de[:, 6]
    if pb.pin_scale:
        dls = dls - dls.mean()
    lo = torch.minimum(pb.log_f_range[:, :1], st.log_f)
    hi = torch.maximum(pb.log_f_range[:, 1:], st.log_f)
    log_f = torch.minimum(torch.maximum(st.log_f + dc[:, 6:7].clamp(-MAX_LOG_FOCAL_STEP, MAX_LOG_FOCAL_STEP), lo), hi)
    return GNState(
        R=rotate(st.R, dc[:, :3]), C=st.C + dc[:, 3:6],
        log_f=log_f, depth=st.depth,
        Re=rotate(st.Re, de[:, :3]), te=st.te + de[:, 3:6], log_s=st.log_s + dls,
    )


def _finite(st: GNState) -> bool:
    """Every camera and pair similarity finite (an unknown no residual sees would not show in
    the loss)."""
    return all(bool(torch.isfinite(t).all()) for t in (st.R, st.C, st.log_f, st.Re, st.te, st.log_s))


@torch.no_grad()
def gauss_newton(
    st: GNState,
    pb: GNProblem,
    dist: str = "l1",
    max_iters: int = 30,
    tol: float = 1e-6,
    budget: int = 1 << 22,
    progress: bool = False,
    dense_bytes: int | None = None,
    extrapolate: int = 4,
    sparse_solver: str = "auto",
) -> tuple[GNState, float, int]:
    """Minimise the coarse alignment loss from ``st`` by robust Levenberg-Marquardt.

    Args:
        st: initial state (e.g. the MST initialisation).
        pb: the problem (:meth:`GNProblem.build`).
        dist: ``'l1'`` (Euclidean distance, IRLS) or ``'l2'`` (squared distance).
        max_iters: maximum accepted + rejected steps.
        tol: stop when an accepted step lowers the loss by less than ``tol`` (relative) twice.
        budget: slot-pixels (images x slots x pixels) processed at once; bounds the memory.
        progress: tqdm bar.
        dense_bytes: the normal matrix (``8 K^2`` bytes for ``K`` unknowns) is solved densely
            up to this size, as a sparse matrix above it (``None``: :func:`.lm.dense_solve_bytes`).
        extrapolate: after an accepted step, the steps ``2, 4, ..., 2**extrapolate`` times as
            long are tried in turn and kept while the loss keeps falling.
        sparse_solver: how a sparse system is solved: :func:`.lm.sparse_method` of it.

    Returns:
        ``(state, loss, iterations)`` with ``loss`` the reference loss on the coarse pixels.
    """
    seen = pb.pixel_weights() > 0
    scale = float(st.depth[seen].median()) if bool(seen.any()) else 1.0
    del seen
    eps = 1e-4 * scale
    passes = 1 if dist == "l2" else 2
    loss, depth, weights = loss_and_depth(st, pb, dist, eps, None, passes, budget)
    st = GNState(st.R, st.C, st.log_f, depth, st.Re, st.te, st.log_s)
    ls_idx = pb.edge_index[:, 6] if pb.pin_scale else None
    sparse = None
    if not solves_densely(pb.n_unknowns, dense_bytes, st.R.device):
        sparse = sparse_method(sparse_solver, st.R.device)
    blocks = torch.cat([pb.cam_index, pb.edge_index]) if sparse == "cg" else None  # preconditioner blocks
    damping, small, it = Damping(1e-4, 1e-8), 0, 0
    bar = tqdm(total=max_iters, desc="global alignment (LM)", disable=not progress)

    def trial(delta: torch.Tensor, weights: list[torch.Tensor]) -> Callable[[float], tuple[float, Any]]:
        def at(factor: float) -> tuple[float, Any]:
            moved = _apply(st, pb, delta * factor if factor != 1 else delta)
            if not _finite(moved):  # a step (extrapolated ones too) never leaves an unknown non-finite
                return math.inf, (moved, None, None)
            new_loss, new_depth, new_w = loss_and_depth(moved, pb, dist, eps, weights, passes, budget)
            return new_loss, (moved, new_depth, new_w)
        return at

    while it < max_iters and pb.n_unknowns > 0:
        system = NormalEquations(*_linearise(st, pb, weights, budget, sparse=sparse), zero_mean=ls_idx,
                                 blocks=blocks)
        accepted = False
        while it < max_iters and not accepted:
            it += 1
            bar.update(1)
            delta = system.step(damping.mu)
            if delta is None:
                damping.failed()
                continue
            at = trial(delta, weights)
            new_loss, found = at(1.0)
            if not (math.isfinite(new_loss) and new_loss <= loss):
                damping.rejected()
                continue
            accepted = True
            new_loss, (moved, new_depth, new_w) = extrapolate_step(at, new_loss, found, extrapolate)
            moved.depth = new_depth
            rel = (loss - new_loss) / max(loss, 1e-30)
            st, loss, weights = moved, new_loss, new_w
            damping.accepted()
            small = small + 1 if rel < tol else 0
            bar.set_postfix(loss=f"{loss:.6g}")
        del system
        if not accepted or small >= 2 or damping.mu > 1e8:
            break
    bar.close()
    return st, loss, it
