"""Global alignment of pair predictions into one scene (reference ``PointCloudOptimizer``
semantics, computed in two stages for speed).

Model (as the reference): per image a log-depth per pixel, a camera-to-world pose (quaternion +
signed-log translation) and a focal (``20 log f``); per edge a similarity ``sigma (R X + T)`` whose
scales have their geometric mean pinned to ``base_scale``. Loss: confidence-weighted (``log``)
Euclidean distance between each image's points and every edge's prediction of them, normalised by
the total pixel area.

Stages:

1. **coarse**: the exact reference loss restricted to a strided pixel subset (about
   ``coarse_pixels`` per image), MST initialisation, then either robust Levenberg-Marquardt with
   the depths eliminated (``solver='gn'``, default, :mod:`.gauss_newton`; ~10-30 iterations) or
   the reference Adam loop (``solver='adam'``). Poses, focals and pair similarities are
   over-determined by a few thousand pixels per image.
2. **dense**: with cameras and similarities fixed, every full-resolution pixel's depth has a
   closed-form (``l2``) or IRLS (``l1``) optimum; a few streaming passes over the predictions
   replace hundreds of Adam iterations on millions of depth parameters.

Predictions are streamed to the device in chunks of edges and cached there in half precision
when they fit (``AlignConfig.cache_bytes``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from ..errors import GraphError, PointmapError
from ..geometry.camera import estimate_focal, intrinsics_matrix
from ..predictions import PairPredictions
from ..scene import Scene
from .config import AlignConfig
from .data import CoarseData, build_edge_data
from .dense import dense_depth, upsample_coarse
from .gauss_newton import GNProblem, GNState, gauss_newton
from .init import InitResult, KnownCameras, mst_init
from .params import lr_at, params_to_pose, pose_to_params

__all__ = ["AlignResult", "align_components", "align_pairs", "connected_image_sets", "global_align"]

KnownPoses = torch.Tensor | Mapping[int, torch.Tensor] | None


@dataclass
class AlignResult:
    """Output of :func:`align_pairs`.

    Attributes:
        scene: the reconstruction.
        loss: final coarse-stage loss (reference loss on the coarse pixels).
        dense_loss: reference loss at full resolution after the dense stage (NaN without it).
        init_loss: coarse loss right after initialisation.
        pair_poses: ``(E, 4, 4)`` similarities ``[s R | T]`` mapping each edge's prediction
            (camera-``i`` frame) to the world (NaN rows for edges of unplaced images).
        stride: pixel stride of the coarse stage.
        iterations: coarse-stage iterations run (LM trial steps for ``'gn'``).
        timings: seconds per stage.
    """

    scene: Scene
    loss: float
    dense_loss: float
    init_loss: float
    pair_poses: torch.Tensor
    stride: int
    iterations: int = 0
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- inputs


def _per_image(value, n: int, name: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise ``None`` / tensor ``(N, *shape)`` / ``{idx: value}`` to ``(values, mask)``."""
    vals = torch.zeros((n,) + shape)
    mask = torch.zeros(n, dtype=torch.bool)
    if value is None:
        return vals, mask
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    for k, v in items:
        k = int(k)
        if not 0 <= k < n:
            raise PointmapError(f"{name}: image index {k} out of range [0, {n})")
        if v is None:
            continue
        v = torch.as_tensor(v, dtype=torch.float32)
        if v.numel() == 1 and shape == (2,):
            v = v.reshape(1).expand(2)
        if tuple(v.shape) != shape:
            raise PointmapError(f"{name}[{k}] has shape {tuple(v.shape)}, expected {shape}")
        if not torch.isfinite(v).all():
            raise PointmapError(f"{name}[{k}] is not finite")
        vals[k] = v
        mask[k] = True
    return vals, mask


def _known_cameras(
    n: int, shapes: list[tuple[int, int]], known_poses, known_focals, known_intrinsics
) -> KnownCameras:
    poses, pmask = _per_image(known_poses, n, "known_poses", (4, 4))
    focals, fmask = _per_image(known_focals, n, "known_focals", (2,))
    pp = torch.tensor([[w / 2, h / 2] for h, w in shapes], dtype=torch.float32)
    if known_intrinsics is not None:
        K, kmask = _per_image(known_intrinsics, n, "known_intrinsics", (3, 3))
        focals[kmask] = torch.stack([K[kmask, 0, 0], K[kmask, 1, 1]], -1)
        pp[kmask] = K[kmask, :2, 2]
        fmask = fmask | kmask
    if (focals[fmask] <= 0).any():
        raise PointmapError("known focals must be positive")
    for k in torch.nonzero(pmask).flatten().tolist():
        R = poses[k, :3, :3]
        if not torch.allclose(R @ R.T, torch.eye(3), atol=1e-3) or torch.det(R) < 0:
            raise PointmapError(f"known_poses[{k}] is not a rigid camera-to-world pose")
    return KnownCameras(poses=poses, pose_mask=pmask, focals=focals, focal_mask=fmask, pp=pp)


def connected_image_sets(preds: PairPredictions) -> list[list[int]]:
    """Connected components of the pair graph (images as nodes), largest first; images with no
    pair form singleton sets."""
    n = preds.n_images
    if n == 0:
        return []
    ij = np.array(preds.pairs, dtype=np.int64).reshape(-1, 2)
    M = coo_matrix((np.ones(len(ij)), (ij[:, 0], ij[:, 1])), shape=(n, n))
    _, labels = connected_components(M, directed=True, connection="weak")
    comps: dict[int, list[int]] = {}
    for k, lab in enumerate(labels):
        comps.setdefault(int(lab), []).append(k)
    return sorted(comps.values(), key=lambda c: (-len(c), c[0]))


def _subset(preds: PairPredictions, images: list[int]) -> tuple[PairPredictions, list[int]]:
    """Predictions restricted to pairs inside ``images``, re-indexed ``0..len(images)-1``."""
    remap = {k: r for r, k in enumerate(images)}
    keep = [e for e, (i, j) in enumerate(preds.pairs) if i in remap and j in remap]
    sub = PairPredictions(
        [(remap[preds.pairs[e][0]], remap[preds.pairs[e][1]]) for e in keep],
        [preds.pts3d_1[e] for e in keep], [preds.conf_1[e] for e in keep],
        [preds.pts3d_2_in_1[e] for e in keep], [preds.conf_2[e] for e in keep],
        n_images=len(images), image_shapes=[preds.image_shapes[k] for k in images],
    )
    return sub, keep


# ----------------------------------------------------------------------------- coarse stage


class _CoarseModel(torch.nn.Module):
    """Reference parametrisation on the coarse pixels; frozen entries via ``torch.where``."""

    def __init__(
        self, data: CoarseData, init: InitResult, known: KnownCameras, shared_focal: bool,
        base_scale: float,
    ) -> None:
        super().__init__()
        dev = data.pts_i.device
        self.data = data
        self.norm_pw_scale = init.norm_pw_scale
        self.base_scale = base_scale
        d = init.depth
        good = (d > 0) & torch.isfinite(d)
        med = torch.stack([
            d[k][good[k]].median() if good[k].any() else d.new_tensor(1.0) for k in range(len(d))
        ])
        logd = torch.where(good, d.clamp(min=1e-30).log(), med.log()[:, None])
        self.log_depth = torch.nn.Parameter(logd)
        self.pose_params = torch.nn.Parameter(
            pose_to_params(init.poses[:, :3, :3], init.poses[:, :3, 3])
        )
        kp = known.pose_mask.to(dev)
        self.register_buffer("pose_frozen", kp)
        self.register_buffer(
            "pose_fixed", pose_to_params(known.poses[:, :3, :3].to(dev), known.poses[:, :3, 3].to(dev))
        )
        kf = known.focal_mask.to(dev)
        self.register_buffer("focal_frozen", kf)
        self.register_buffer("focal_fixed", known.focals.to(dev))
        self.register_buffer("pp", known.pp.to(dev))
        self.shared = shared_focal
        free_f = init.focals[~kf] if (~kf).any() else init.focals
        if shared_focal:
            self.focal_param = torch.nn.Parameter(20 * free_f.log().mean().reshape(1))
        else:
            self.focal_param = torch.nn.Parameter(20 * init.focals.log())
        s = init.pw_s
        self.pw_params = torch.nn.Parameter(
            torch.cat([pose_to_params(init.pw_R, init.pw_T / s[:, None]), s.log()[:, None]], -1)
        )
        area = data.valid.sum(1).float()
        self.A_i = area[data.ei].sum().clamp(min=1)
        self.A_j = area[data.ej].sum().clamp(min=1)

    def cameras(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``R (N,3,3)``, ``C (N,3)``, ``fx (N,)``, ``fy (N,)``."""
        p = torch.where(self.pose_frozen[:, None], self.pose_fixed, self.pose_params)
        R, C = params_to_pose(p)
        f = torch.exp(self.focal_param / 20)
        f = f.expand(len(p)) if self.shared else f
        fx = torch.where(self.focal_frozen, self.focal_fixed[:, 0], f)
        fy = torch.where(self.focal_frozen, self.focal_fixed[:, 1], f)
        return R, C, fx, fy

    def pair_similarities(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(s (E,), R (E,3,3), T (E,3))``: prediction ``P`` -> world ``s R P + T``."""
        R, Tp = params_to_pose(self.pw_params[:, :7])
        ls = self.pw_params[:, 7]
        if self.norm_pw_scale:
            ls = ls - ls.mean() + math.log(self.base_scale)
        s = ls.exp()
        return s, R, s[:, None] * Tp

    def rays(self, R: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
        """``(N, n, 3)`` world directions (unit camera-z) of the coarse pixels."""
        uv = self.data.uv
        cam = torch.stack(
            [(uv[..., 0] - self.pp[:, None, 0]) / fx[:, None],
             (uv[..., 1] - self.pp[:, None, 1]) / fy[:, None], torch.ones_like(uv[..., 0])], dim=-1,
        )
        return cam @ R.transpose(1, 2)

    def targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every edge's predictions in the world: ``(E, n, 3)`` for its first and second image."""
        s, Rp, Tp = self.pair_similarities()
        M = (s[:, None, None] * Rp).transpose(1, 2)
        d = self.data
        return torch.baddbmm(Tp[:, None, :], d.pts_i, M), torch.baddbmm(Tp[:, None, :], d.pts_j, M)

    def residuals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E, n)`` distances between each image's points and their edge predictions."""
        d = self.data
        R, C, fx, fy = self.cameras()
        X = C[:, None, :] + self.log_depth.exp()[..., None] * self.rays(R, fx, fy)
        Yi, Yj = self.targets()
        return (X[d.ei] - Yi).norm(dim=-1), (X[d.ej] - Yj).norm(dim=-1)

    def forward(self, dist: str) -> torch.Tensor:
        d = self.data
        li, lj = self.residuals()
        if dist == "l2":
            li, lj = li * li, lj * lj
        return (d.w_i * li).sum() / self.A_i + (d.w_j * lj).sum() / self.A_j


def _optimise_adam(model: _CoarseModel, cfg: AlignConfig, niter: int, progress: bool) -> float:
    """Reference coarse stage: Adam (betas ``(0.9, 0.9)``) on every parameter with the reference
    learning-rate schedule. Returns the final loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if niter > 0:
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.9))
        with tqdm(range(niter), desc="global alignment (Adam)", disable=not progress) as bar:
            for t in bar:
                for g in opt.param_groups:
                    g["lr"] = lr_at(t, niter, cfg.lr, cfg.lr_min, cfg.schedule)
                opt.zero_grad(set_to_none=True)
                loss = model(cfg.dist)
                loss.backward()
                opt.step()
                if progress and t % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss):.5g}")
    with torch.no_grad():
        return float(model(cfg.dist))


@dataclass
class _Coarse:
    """Result of the coarse stage (on the compute device).

    ``R (N,3,3)``, ``C (N,3)``, ``fx, fy (N,)``, ``pp (N,2)`` cameras; ``s (E,)``, ``Rp (E,3,3)``,
    ``Tp (E,3)`` pair similarities (prediction ``P`` -> world ``s Rp P + Tp``); ``log_depth
    (N, n)`` at the coarse pixels; coarse losses before / after.
    """

    R: torch.Tensor
    C: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    pp: torch.Tensor
    s: torch.Tensor
    Rp: torch.Tensor
    Tp: torch.Tensor
    log_depth: torch.Tensor
    init_loss: float
    loss: float
    iterations: int


def _coarse_solve(
    data: CoarseData, init: InitResult, known: KnownCameras, shared_focal: bool, cfg: AlignConfig,
    progress: bool,
) -> _Coarse:
    """Coarse stage with ``cfg.solver`` from the initialisation ``init``."""
    model = _CoarseModel(data, init, known, shared_focal, cfg.base_scale)
    with torch.no_grad():
        init_loss = float(model(cfg.dist))
    if cfg.solver == "adam":
        loss = _optimise_adam(model, cfg, cfg.iterations, progress)
        with torch.no_grad():
            R, C, fx, fy = model.cameras()
            s, Rp, Tp = model.pair_similarities()
        return _Coarse(
            R, C, fx, fy, model.pp, s, Rp, Tp, model.log_depth.detach(), init_loss, loss, cfg.iterations
        )
    with torch.no_grad():
        R, C, fx, fy = model.cameras()
        s, Rp, Tp = model.pair_similarities()
        st = GNState(
            R=R, C=C, log_f=torch.stack([fx, fy], -1).log(), depth=model.log_depth.exp(),
            Re=Rp, te=Tp, log_s=s.log(),
        )
    pb = GNProblem.build(
        data, model.pp, model.pose_frozen, model.focal_frozen, shared_focal, model.norm_pw_scale
    )
    st, loss, iters = gauss_newton(
        st, pb, cfg.dist, cfg.iterations, cfg.tol, cfg.chunk_slot_pixels, progress
    )
    f = st.log_f.exp()
    return _Coarse(
        st.R, st.C, f[:, 0], f[:, 1], model.pp, st.log_s.exp(), st.Re, st.te,
        st.depth.clamp(min=1e-30).log(), init_loss, loss, iters,
    )


# ----------------------------------------------------------------------------- main entry


def _trivial_single(preds: PairPredictions, cfg: AlignConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image from its self-pair(s): identity pose, Weiszfeld focal, predicted z as depth."""
    e = preds.pairs.index((0, 0))
    pts = preds.pts3d_1[e].float()
    H, W = pts.shape[:2]
    conf = torch.maximum(preds.conf_1[e].float(), preds.conf_2[e].float())
    f = estimate_focal(pts)
    K = intrinsics_matrix(f, torch.tensor([W / 2, H / 2]))
    return torch.eye(4), K, pts[..., 2].clone(), conf


def align_pairs(
    preds: PairPredictions,
    imgs: Sequence[torch.Tensor] | None = None,
    *,
    config: AlignConfig | None = None,
    known_poses: KnownPoses = None,
    known_focals: torch.Tensor | Mapping[int, float] | None = None,
    known_intrinsics: torch.Tensor | Mapping[int, torch.Tensor] | None = None,
    shared_focal: bool = False,
    masks: Sequence[torch.Tensor | None] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> AlignResult:
    """:func:`global_align` returning diagnostics (losses, pair similarities, timings) too."""
    cfg = config or AlignConfig()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    N = preds.n_images
    if len(preds) == 0 or N == 0:
        raise GraphError("global alignment needs at least one image pair; got an empty pair list")
    shapes = [tuple(int(x) for x in s) for s in preds.image_shapes]
    if imgs is not None and len(imgs) != N:
        raise PointmapError(f"imgs has {len(imgs)} images but the predictions have {N}")
    if masks is not None:
        if len(masks) != N:
            raise PointmapError(f"masks has {len(masks)} entries but the predictions have {N} images")
        for k, m in enumerate(masks):
            if m is not None and tuple(m.shape) != shapes[k]:
                raise PointmapError(f"masks[{k}] has shape {tuple(m.shape)}, expected {shapes[k]}")
    known = _known_cameras(N, shapes, known_poses, known_focals, known_intrinsics)
    timings: dict[str, float] = {}

    # ---- graph components: align the largest, report the rest as unplaced
    comps = connected_image_sets(preds)
    main = comps[0]
    if len(comps) > 1:
        left = sorted(k for c in comps[1:] for k in c)
        warnings.warn(
            f"the pair graph has {len(comps)} connected components; aligning the largest "
            f"({len(main)} images) and marking images {left} as not placed "
            "(use align_components to align every component separately)",
            stacklevel=2,
        )
    poses = torch.eye(4).repeat(N, 1, 1)
    Ks = torch.stack([intrinsics_matrix(torch.tensor(float(max(h, w))), torch.tensor([w / 2, h / 2])) for h, w in shapes])
    depths = [torch.zeros(h, w) for h, w in shapes]
    confs = [torch.zeros(h, w) for h, w in shapes]
    placed = torch.zeros(N, dtype=torch.bool)
    pair_poses = torch.full((len(preds), 4, 4), float("nan"))
    loss = dense_loss = init_loss = float("nan")
    stride = 1
    iterations = 0

    # unplaced images still get their own confidences and predicted depth (in their own frame)
    for e, (i, j) in enumerate(preds.pairs):
        confs[i] = torch.maximum(confs[i], preds.conf_1[e].float())
        confs[j] = torch.maximum(confs[j], preds.conf_2[e].float())
        if depths[i].abs().sum() == 0:
            depths[i] = preds.pts3d_1[e][..., 2].float().clone()

    if len(main) == 1:
        k = main[0]
        sub, _ = _subset(preds, main)
        if (0, 0) not in sub.pairs:
            raise GraphError(f"image {k} has no pair with another image nor with itself")
        P, K, depth, conf = _trivial_single(sub, cfg)
        poses[k], Ks[k], depths[k], confs[k] = P, K, depth, conf
        if known.pose_mask[k]:
            poses[k] = known.poses[k]
        if known.focal_mask[k]:
            Ks[k] = intrinsics_matrix(known.focals[k], known.pp[k])
        placed[k] = True
    else:
        sub, keep = _subset(preds, main)
        sub_known = KnownCameras(
            poses=known.poses[main], pose_mask=known.pose_mask[main], focals=known.focals[main],
            focal_mask=known.focal_mask[main], pp=known.pp[main],
        )
        sub_masks = None if masks is None else [masks[k] for k in main]
        t0 = time.perf_counter()
        data = build_edge_data(
            sub, dev, cfg.coarse_stride, cfg.coarse_pixels, cfg.conf_trf, sub_masks,
            cfg.chunk_pixels, cfg.storage_dtype, cfg.cache_bytes,
        )
        stride = data.stride
        timings["prepare"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        init = mst_init(
            data, sub_known, cfg.conf_threshold, cfg.niter_pnp, cfg.pnp_reproj_error, cfg.base_scale
        )
        timings["init"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        co = _coarse_solve(data, init, sub_known, shared_focal, cfg, progress)
        loss, init_loss, iterations = co.loss, co.init_loss, co.iterations
        R, C, fx, fy, s, Rp, Tp = co.R, co.C, co.fx, co.fy, co.s, co.Rp, co.Tp
        timings["coarse"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            depth0 = upsample_coarse(data, co.log_depth).exp()
            if cfg.dense:
                depth_full, dense_loss = dense_depth(
                    data, R, C, fx, fy, co.pp, s, Rp, Tp, depth0, cfg.conf_trf, cfg.dist,
                    cfg.dense_iters, progress, cache_bytes=cfg.cache_bytes // 4,
                )
            else:
                depth_full = depth0
        timings["dense"] = time.perf_counter() - t0
        im_conf = data.im_conf.cpu()
        for r, k in enumerate(main):
            h, w = shapes[k]
            P = torch.eye(4)
            P[:3, :3], P[:3, 3] = R[r].cpu(), C[r].cpu()
            poses[k] = P
            K = intrinsics_matrix(torch.stack([fx[r], fy[r]]).cpu(), co.pp[r].cpu())
            Ks[k] = K
            depths[k] = depth_full[r, : h * w].reshape(h, w).float().cpu()
            confs[k] = im_conf[r, : h * w].reshape(h, w)
            placed[k] = True
        pw = torch.zeros(len(keep), 4, 4)
        pw[:, :3, :3] = (s[:, None, None] * Rp).cpu()
        pw[:, :3, 3] = Tp.cpu()
        pw[:, 3, 3] = 1
        pair_poses[keep] = pw
        # user-frozen cameras are reported exactly as given
        for k in main:
            if known.pose_mask[k]:
                poses[k] = known.poses[k]

    out_masks = []
    for k in range(N):
        m = (confs[k] > cfg.conf_threshold) & bool(placed[k])
        if masks is not None and masks[k] is not None:
            m = m & masks[k].bool().cpu()
        out_masks.append(m)
    if imgs is None:
        images = [torch.full((h, w, 3), 0.5) for h, w in shapes]
    else:
        images = [torch.as_tensor(im, dtype=torch.float32).cpu() for im in imgs]
    scene = Scene(
        imgs=images, poses=poses, intrinsics=Ks, depths=depths, confidence=confs, masks=out_masks,
        conf_threshold=cfg.conf_threshold, placed=placed,
    )
    return AlignResult(
        scene=scene, loss=loss, dense_loss=dense_loss, init_loss=init_loss, pair_poses=pair_poses,
        stride=stride, iterations=iterations, timings=timings,
    )


def global_align(
    preds: PairPredictions,
    imgs: Sequence[torch.Tensor] | None = None,
    *,
    config: AlignConfig | None = None,
    known_poses: KnownPoses = None,
    known_focals: torch.Tensor | Mapping[int, float] | None = None,
    known_intrinsics: torch.Tensor | Mapping[int, torch.Tensor] | None = None,
    shared_focal: bool = False,
    masks: Sequence[torch.Tensor | None] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Scene:
    """Align pair predictions into one scene: poses, focals and dense depth per image.

    Args:
        preds: pair predictions (ideally symmetrized: both ``(i, j)`` and ``(j, i)``).
        imgs: per image ``(H, W, 3)`` colours in ``[0, 1]`` (grey when ``None``).
        config: :class:`AlignConfig` (threshold semantics documented there).
        known_poses: ``(N, 4, 4)`` camera-to-world for all images, or ``{index: (4, 4)}`` for
            some; given poses are frozen. Two or more fix the scene's frame and scale; a single
            one fixes the frame only.
        known_focals: ``(N,)`` or ``{index: f}`` (pixels; a pair ``(fx, fy)`` is accepted), frozen.
        known_intrinsics: ``(N, 3, 3)`` or ``{index: (3, 3)}``: focals and principal point, frozen.
        shared_focal: one focal for all images without a known one.
        masks: per image ``(H, W)`` bool or ``None``; ``False`` pixels are excluded from the loss
            and from the output masks.
        device: compute device (``'cuda'`` for speed); results are returned on the CPU.
        progress: show tqdm progress bars.

    Returns:
        A :class:`~pointmap.scene.Scene`. A single image with a self-pair ``(0, 0)`` gives a
        trivial scene (identity pose, Weiszfeld focal, predicted depth). When the pair graph is
        disconnected the largest component is aligned and the other images are returned with
        ``placed = False`` (a warning says which); :func:`align_components` aligns every component.

    Raises:
        GraphError: no pairs, or a single image without a self-pair.
        PointmapError: inconsistent ``imgs`` / ``masks`` / known cameras.
    """
    return align_pairs(
        preds, imgs, config=config, known_poses=known_poses, known_focals=known_focals,
        known_intrinsics=known_intrinsics, shared_focal=shared_focal, masks=masks, device=device,
        progress=progress,
    ).scene


def align_components(
    preds: PairPredictions,
    imgs: Sequence[torch.Tensor] | None = None,
    **kwargs,
) -> list[tuple[list[int], Scene]]:
    """Align every connected component of the pair graph separately.

    Returns:
        ``[(image_indices, scene), ...]``, largest component first; each scene holds only its
        component's images (in the order of ``image_indices``), in its own frame and scale.
        Known cameras given as dicts are re-indexed per component.
    """
    out = []
    for comp in connected_image_sets(preds):
        sub, _ = _subset(preds, comp)
        kw = dict(kwargs)
        for name in ("known_poses", "known_focals", "known_intrinsics", "masks"):
            v = kw.get(name)
            if v is None:
                continue
            if isinstance(v, Mapping):
                kw[name] = {r: v[k] for r, k in enumerate(comp) if k in v}
            else:
                kw[name] = [v[k] for k in comp]
        sub_imgs = None if imgs is None else [imgs[k] for k in comp]
        if len(comp) == 1 and (0, 0) not in sub.pairs:
            continue
        out.append((comp, global_align(sub, sub_imgs, **kw)))
    return out
