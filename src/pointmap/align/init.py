"""Initialisation of global alignment: maximum spanning tree of pair confidences (reference
``init='mst'``), Weiszfeld focals, Umeyama registrations and PnP, on the coarse pixel sample."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

from ..errors import PointmapError
from ..geometry.camera import estimate_focal_from_pixels
from ..geometry.pnp import pnp_ransac_points
from ..geometry.registration import align_multiple_poses, rigid_registration
from .data import CoarseData

log = logging.getLogger(__name__)

__all__ = ["InitResult", "KnownCameras", "mst_init"]


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


@dataclass
class KnownCameras:
    """User-provided cameras; ``*_mask (N,)`` says which entries are given (and frozen).

    Attributes:
        poses: ``(N, 4, 4)`` camera-to-world.
        focals: ``(N, 2)`` ``(fx, fy)`` in pixels.
        pp: ``(N, 2)`` principal points in pixels (defaults ``(W/2, H/2)``).
    """

    poses: torch.Tensor
    pose_mask: torch.Tensor
    focals: torch.Tensor
    focal_mask: torch.Tensor
    pp: torch.Tensor

    @property
    def n_known_poses(self) -> int:
        """How many poses are given."""
        return int(self.pose_mask.sum())

    @classmethod
    def from_inputs(
        cls, shapes: Sequence[tuple[int, int]], known_poses=None, known_focals=None,
        known_intrinsics=None,
    ) -> "KnownCameras":
        """Validate the user's known cameras of ``len(shapes)`` images (formats of
        :class:`pointmap.align.AlignInputs`); the default principal point is ``(W/2, H/2)``.

        Raises:
            PointmapError: an index out of range, a wrong shape, a non-finite value, a
                non-positive focal or a pose that is not rigid.
        """
        n = len(shapes)
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
        return cls(poses=poses, pose_mask=pmask, focals=focals, focal_mask=fmask, pp=pp)

    def select(self, images: Sequence[int]) -> "KnownCameras":
        """The entries of ``images``, in that order."""
        idx = list(images)
        return KnownCameras(
            poses=self.poses[idx], pose_mask=self.pose_mask[idx], focals=self.focals[idx],
            focal_mask=self.focal_mask[idx], pp=self.pp[idx],
        )


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


def _spanning_tree(score: np.ndarray, ei: np.ndarray, ej: np.ndarray, n: int) -> list[tuple[float, int, int]]:
    """Maximum-score spanning tree edges ``(score, i, j)``, sorted by increasing score."""
    keep = ei != ej
    M = coo_matrix((-score[keep], (ei[keep], ej[keep])), shape=(n, n)).tocsr()
    T = minimum_spanning_tree(M).tocoo()
    return sorted((-float(d), int(r), int(c)) for d, r, c in zip(T.data, T.row, T.col))


def mst_init(
    data: CoarseData,
    known: KnownCameras,
    conf_threshold: float,
    niter_pnp: int,
    reproj_error: float,
    base_scale: float,
    pnp_seed: int = 0,
) -> InitResult:
    """Reference MST initialisation (``init='mst'``) on the coarse sample.

    Differences from the reference, on purpose: the focal of an image first met as the first
    element of a tree edge is estimated from that edge (the reference reads a stale edge); images
    whose PnP fails get their pose by registration of one of their own predictions (then identity
    with a warning) instead of silently the identity; known poses are honoured for any number of
    images (one known pose: rigid alignment, the scale stays free).

    ``pnp_seed`` seeds OpenCV's RNG before each RANSAC PnP.
    """
    N = data.n_images
    dev = data.pts_i.device
    ei, ej = data.ei.cpu().numpy(), data.ej.cpu().numpy()
    score = data.score.double().cpu().numpy()
    pair_index = {(int(a), int(b)): e for e, (a, b) in enumerate(zip(ei, ej))}
    pp = known.pp.to(dev)
    pts3d: list[torch.Tensor | None] = [None] * N
    poses: list[torch.Tensor | None] = [None] * N
    focals: list[float | None] = [None] * N
    for k in range(N):
        if known.focal_mask[k]:
            focals[k] = float(known.focals[k].mean())

    def focal_of(e: int, k: int) -> float:
        m = data.valid[k]
        return float(estimate_focal_from_pixels(data.pts_i[e][m], data.uv[k][m], pp[k]))

    todo = _spanning_tree(score, ei, ej, N)
    if todo:
        _, i, j = todo.pop()
        e = pair_index[(i, j)]
        pts3d[i], pts3d[j] = data.pts_i[e], data.pts_j[e]
        poses[i] = torch.eye(4, device=dev)
        if focals[i] is None:
            focals[i] = focal_of(e, i)
    guard = 0
    while todo:
        sc, i, j = todo.pop()
        e = pair_index[(i, j)]
        if focals[i] is None:
            focals[i] = focal_of(e, i)
        if pts3d[i] is not None:
            s, R, T = rigid_registration(data.pts_i[e], pts3d[i], data.conf_i[e])
            pts3d[j] = s * data.pts_j[e] @ R.T + T
        elif pts3d[j] is not None:
            s, R, T = rigid_registration(data.pts_j[e], pts3d[j], data.conf_j[e])
            pts3d[i] = s * data.pts_i[e] @ R.T + T
        else:
            todo.insert(0, (sc, i, j))
            guard += 1
            if guard > 10 * N * N:
                raise RuntimeError("spanning tree traversal did not terminate")
            continue
        if poses[i] is None:
            P = torch.eye(4, device=dev)
            P[:3, :3], P[:3, 3] = R, T
            poses[i] = P
    for e in np.argsort(-score, kind="stable"):
        i = int(ei[e])
        if focals[i] is None:
            focals[i] = focal_of(int(e), i)
    im_conf_c = data.im_conf_coarse
    for k in range(N):
        if pts3d[k] is None:
            continue
        if poses[k] is None:
            m = (im_conf_c[k] > conf_threshold) & data.valid[k]
            if int(m.sum()) < 4:
                m = data.valid[k]
            cv2.setRNGSeed(pnp_seed)
            H, W = data.shapes[k]
            res = pnp_ransac_points(
                pts3d[k][m], data.uv[k][m], (H, W), focal=focals[k], pp=tuple(pp[k].tolist()),
                iterations=niter_pnp, reproj_error=reproj_error,
            )
            if res is not None:
                f, P = res
                if focals[k] is None:
                    focals[k] = f
                poses[k] = P.to(dev)
            else:
                own = np.nonzero(ei == k)[0]
                if len(own):
                    e = int(own[np.argmax(score[own])])
                    s, R, T = rigid_registration(data.pts_i[e], pts3d[k], data.conf_i[e])
                    P = torch.eye(4, device=dev)
                    P[:3, :3], P[:3, 3] = R, T
                    poses[k] = P
                else:
                    log.warning(f"image {k}: PnP failed at initialisation; starting from identity")
                    poses[k] = torch.eye(4, device=dev)
    missing = [k for k in range(N) if pts3d[k] is None]
    if missing:
        raise RuntimeError(f"images {missing} are not connected to the pair graph")
    for k in range(N):
        if focals[k] is None:
            focals[k] = float(max(data.shapes[k]))
    P = torch.stack([p.float() for p in poses])  # type: ignore[union-attr]
    X = torch.stack(pts3d)  # type: ignore[arg-type]

    # honour known poses: move the whole initial reconstruction onto them
    nk = known.n_known_poses
    norm_pw_scale = nk < 2
    if nk >= 1:
        kp = known.pose_mask.to(dev)
        dst = known.poses.to(dev).float()[kp]
        if nk >= 2:
            s, R, T = align_multiple_poses(P[kp], dst)
        else:
            s = torch.ones((), device=dev)
            R = dst[0, :3, :3] @ P[kp][0, :3, :3].T
            T = dst[0, :3, 3] - R @ P[kp][0, :3, 3]
        X = s * X @ R.T + T
        P = P.clone()
        P[:, :3, :3] = R @ P[:, :3, :3]
        P[:, :3, 3] = s * P[:, :3, 3] @ R.T + T
        P[kp] = dst

    # every edge: similarity from its first image's prediction onto the assembled points
    pw_s, pw_R, pw_T = rigid_registration(data.pts_i, X[data.ei], data.conf_i)
    if norm_pw_scale:
        s_factor = torch.exp(np.log(base_scale) - pw_s.log().mean())
        X = X * s_factor
        P[:, :3, 3] = P[:, :3, 3] * s_factor
        pw_s, pw_T = pw_s * s_factor, pw_T * s_factor
    cam = (X - P[:, None, :3, 3]) @ P[:, :3, :3]
    depth = cam[..., 2]
    return InitResult(
        poses=P, focals=torch.tensor(focals, dtype=torch.float32, device=dev), depth=depth,
        pw_s=pw_s, pw_R=pw_R, pw_T=pw_T, norm_pw_scale=norm_pw_scale,
    )
