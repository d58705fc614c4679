"""Camera poses from pair predictions by PnP, without global alignment: one pair's relative pose,
every view against a reference view, the two poses of a two-image prediction, and a query's pose
against database views with known 3D (visual localization: ``pointmap localize`` and
``pointmap eval visloc`` both use :func:`place_query`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..arrays import as_float64
from ..geometry import estimate_focal, pnp_ransac_inliers, reciprocal_matches, relative_pose
from ..predictions import PairPredictions
from .pair_viewer import pair_scene

__all__ = [
    "Placement",
    "QueryView",
    "localize_from_correspondences",
    "place_query",
    "nearest_database_frame",
    "pair_relative_pose",
    "query_correspondences",
    "reference_pnp_poses",
    "two_view_estimates",
]

_NAN_POSE = np.full((4, 4), np.nan)


def pair_relative_pose(
    preds: PairPredictions,
    i: int,
    j: int,
    conf_threshold: float = 3.0,
    iterations: int = 100,
    reproj_error: float = 5.0,
) -> tuple[float, torch.Tensor] | None:
    """Pose of camera ``j`` in camera ``i``'s frame from the prediction of pair ``(i, j)``
    (:func:`pointmap.geometry.relative_pose` of its ``pts3d_2_in_1`` and ``conf_2``); the focal of
    ``j`` is first estimated from pair ``(j, i)`` when present, else searched.

    Returns:
        ``(focal_j, T_i_from_j (4, 4))`` (translation in the prediction's scale) or ``None``.
    """
    e = preds.index(i, j)
    focal = None
    if (j, i) in preds.pairs:
        focal = float(estimate_focal(preds.pts3d_1[preds.index(j, i)].float()))
    return relative_pose(preds.pts3d_2_in_1[e], preds.conf_2[e], conf_threshold, focal, iterations, reproj_error)


def reference_pnp_poses(
    preds: PairPredictions, reference: int = 0, conf_threshold: float = 3.0, iterations: int = 100,
) -> tuple[np.ndarray, list[bool]]:
    """Camera-to-world poses ``(N, 4, 4)`` in the reference camera's frame, one PnP per view.

    View ``j``'s pose comes from PnP-RANSAC of its points as predicted in pair ``(reference, j)``
    (:func:`pair_relative_pose`, focal from pair ``(j, reference)``); the reference
    view has the identity. Each pair has its own arbitrary scale, so its translation is rescaled
    to make the reference view's own pointmap (``pts3d_1`` of the pair) have median depth 1 in
    every pair. Views whose pair is missing or whose PnP fails get the identity, flagged ``False``
    in the returned list.
    """
    n = preds.n_images
    poses = np.tile(np.eye(4), (n, 1, 1))
    ok = [True] * n
    for j in range(n):
        if j == reference:
            continue
        res = None
        if (reference, j) in preds.pairs:
            res = pair_relative_pose(preds, reference, j, conf_threshold=conf_threshold, iterations=iterations)
        z = float(preds.pts3d_1[preds.index(reference, j)][..., 2].median()) if res is not None else 0.0
        if res is None or not np.isfinite(z) or z <= 0:
            ok[j] = False
        else:
            poses[j] = as_float64(res[1])
            poses[j, :3, 3] /= z
    return poses, ok


def two_view_estimates(
    preds: PairPredictions, conf_threshold: float = 3.0, iterations: int = 100,
) -> dict[str, np.ndarray]:
    """Relative pose ``T_0to1`` ``(4, 4)`` (camera-0 to camera-1 coordinates) of a symmetrized
    two-image prediction, from :func:`pair_scene` (``"pair_scene"``) and from PnP of pair ``(0, 1)``
    (``"relative_pose"``); a failed PnP gives a NaN matrix."""
    scene = pair_scene(preds, conf_threshold=conf_threshold, pnp_iterations=iterations)
    P = as_float64(scene.poses)
    out = {"pair_scene": np.linalg.inv(P[1]) @ P[0]}
    res = pair_relative_pose(preds, 0, 1, conf_threshold=conf_threshold, iterations=iterations)
    out["relative_pose"] = _NAN_POSE.copy() if res is None else np.linalg.inv(as_float64(res[1]))
    return out


def nearest_database_frame(query_c2w: np.ndarray, db_c2w: np.ndarray, max_angle_deg: float = 45.0) -> int:
    """Oracle retrieval: index of the database camera ``db_c2w (M, 4, 4)`` whose centre is
    nearest to the query's among those viewing within ``max_angle_deg`` of the query's direction
    (nearest centre overall when none does)."""
    d = np.linalg.norm(db_c2w[:, :3, 3] - query_c2w[:3, 3], axis=-1)
    cos = np.clip(db_c2w[:, :3, 2] @ query_c2w[:3, 2], -1.0, 1.0)
    ok = np.degrees(np.arccos(cos)) < max_angle_deg
    return int(np.argmin(np.where(ok, d, np.inf))) if ok.any() else int(np.argmin(d))


def query_correspondences(
    pts_query: torch.Tensor,
    conf_query: torch.Tensor,
    pts_db_in_query: torch.Tensor,
    conf_db: torch.Tensor,
    db_world: np.ndarray,
    conf_threshold: float = 3.0,
    min_matches: int = 20,
) -> tuple[torch.Tensor, np.ndarray, dict[str, int]]:
    """2D-3D correspondences of a query from one pair (query, database view).

    Confident pixels of both images (``conf > conf_threshold``; database pixels also need a known
    world point) are matched by reciprocal 3D nearest neighbours of the pair's pointmaps (both in
    the query camera's frame); each matched database pixel gives its world point. With fewer than
    ``min_matches`` confident matches every pixel is matched instead (``stats["conf_fallback"] = 1``).

    Args:
        pts_query: ``(H, W, 3)`` query points (``pts3d_1`` of pair (query, db)); conf_query ``(H, W)``.
        pts_db_in_query: ``(H', W', 3)`` database points in the query frame; conf_db ``(H', W')``.
        db_world: ``(H', W', 3)`` world points of the database pixels (NaN where unknown).

    Returns:
        ``(uv_query (M, 2) network pixels, world points (M, 3), {"n_matches": M, "conf_fallback": 0 | 1})``.
    """
    valid_db = torch.from_numpy(np.isfinite(db_world).all(-1))
    uv_q, uv_db = reciprocal_matches(pts_query, pts_db_in_query, subsample=1,
                                     mask1=conf_query > conf_threshold,
                                     mask2=(conf_db > conf_threshold) & valid_db)
    stats = {"n_matches": len(uv_q), "conf_fallback": 0}
    if len(uv_q) < min_matches:  # too few confident pixels: match all of them instead
        uv_q, uv_db = reciprocal_matches(pts_query, pts_db_in_query, subsample=1, mask2=valid_db)
        stats = {"n_matches": len(uv_q), "conf_fallback": 1}
    return uv_q, db_world[uv_db[:, 1].numpy(), uv_db[:, 0].numpy()], stats


def localize_from_correspondences(
    uv: torch.Tensor,
    world: np.ndarray,
    image_size: tuple[int, int],
    K_query: np.ndarray,
    iterations: int = 1000,
    reproj_error: float = 5.0,
) -> tuple[np.ndarray, int]:
    """Camera-to-world pose of a query seeing ``world (M, 3)`` at its pixels ``uv (M, 2)``, by
    PnP-RANSAC with intrinsics ``K_query (3, 3)`` (network pixels; ``fx ~ fy``: their mean is the
    focal) in an image of ``image_size = (H, W)``.

    Returns:
        ``(cam2world (4, 4) float64, n_inliers)``; NaN pose and 0 inliers when PnP fails.
    """
    if len(uv) < 4:
        return _NAN_POSE.copy(), 0
    f = 0.5 * (K_query[0, 0] + K_query[1, 1])
    res = pnp_ransac_inliers(world, uv.double(), image_size, focal=f, pp=(K_query[0, 2], K_query[1, 2]),
                             iterations=iterations, reproj_error=reproj_error)
    return (_NAN_POSE.copy(), 0) if res is None else (as_float64(res[1]), res[2])


@dataclass
class QueryView:
    """One pair (query, database view) of a query to place.

    Attributes:
        pts_query: ``(H, W, 3)`` query points (``pts3d_1`` of pair (query, db)); conf_query ``(H, W)``.
        pts_db_in_query: ``(H', W', 3)`` database points in the query frame; conf_db ``(H', W')``.
        db_world: ``(H', W', 3)`` world points of the database pixels (NaN where unknown).
    """

    pts_query: torch.Tensor
    conf_query: torch.Tensor
    pts_db_in_query: torch.Tensor
    conf_db: torch.Tensor
    db_world: np.ndarray


@dataclass
class Placement:
    """A query's pose found by :func:`place_query`.

    Attributes:
        cam2world: ``(4, 4)`` float64 (NaN when PnP failed), in the database's world frame.
        inliers: PnP-RANSAC inliers; n_matches: 2D-3D correspondences over all views.
        confidence: ``inliers / n_matches`` (0 without matches).
        placed: enough inliers (``>= min_inliers``) and a confidence of at least ``min_confidence``.
        conf_fallback: 1 when a view had too few confident matches and matched every pixel.
    """

    cam2world: np.ndarray
    inliers: int
    n_matches: int
    confidence: float
    placed: bool
    conf_fallback: int

    def stats(self) -> dict[str, float | int | bool]:
        """The numbers of the placement, for reports."""
        return {"n_matches": self.n_matches, "conf_fallback": self.conf_fallback, "inliers": self.inliers,
                "confidence": self.confidence, "placed": self.placed}


def place_query(
    views: Sequence[QueryView],
    K_query: np.ndarray,
    conf_threshold: float = 3.0,
    iterations: int = 1000,
    reproj_error: float = 5.0,
    min_matches: int = 20,
    min_inliers: int = 30,
    min_confidence: float = 0.3,
) -> Placement:
    """Pose of a query from its pairs with database views of known world geometry: the 2D-3D
    correspondences of every view (:func:`query_correspondences`) pooled into one PnP-RANSAC
    (:func:`localize_from_correspondences`). The one solver of ``pointmap localize`` and
    ``pointmap eval visloc``.

    Args:
        views: the query's pairs (all with the query at the same network resolution).
        K_query: ``(3, 3)`` query intrinsics at the network resolution.
        iterations, reproj_error: RANSAC iterations and inlier threshold (network pixels).
        min_inliers, min_confidence: what it takes to count as placed.
    """
    uvs, worlds, n_match, fallback = [], [], 0, 0
    for v in views:
        uv, world, st = query_correspondences(v.pts_query, v.conf_query, v.pts_db_in_query, v.conf_db,
                                              v.db_world, conf_threshold, min_matches)
        uvs.append(uv)
        worlds.append(world)
        n_match += st["n_matches"]
        fallback = max(fallback, st["conf_fallback"])
    size = tuple(views[0].pts_query.shape[:2])
    T, inliers = localize_from_correspondences(torch.cat(uvs), np.concatenate(worlds), size, K_query,
                                               iterations, reproj_error)
    confidence = inliers / n_match if n_match else 0.0
    placed = bool(np.isfinite(T).all() and inliers >= min_inliers and confidence >= min_confidence)
    return Placement(T, inliers, n_match, confidence, placed, fallback)
