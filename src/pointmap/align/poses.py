"""Camera poses from pair predictions by PnP, without global alignment: one pair's relative pose,
every view against a reference view, the two poses of a two-image prediction, and a query's pose
against a database view with known 3D (visual localization)."""

from __future__ import annotations

import numpy as np
import torch

from ..arrays import as_float64
from ..geometry import estimate_focal, pnp_ransac_points, reciprocal_matches, relative_pose
from ..predictions import PairPredictions
from .pair_viewer import pair_scene

__all__ = [
    "localize_query",
    "nearest_database_frame",
    "pair_relative_pose",
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


def localize_query(
    pts_query: torch.Tensor,
    conf_query: torch.Tensor,
    pts_db_in_query: torch.Tensor,
    conf_db: torch.Tensor,
    db_world: np.ndarray,
    K_query: np.ndarray,
    conf_threshold: float = 3.0,
    iterations: int = 1000,
    reproj_error: float = 5.0,
    min_matches: int = 20,
) -> tuple[np.ndarray, dict[str, int]]:
    """Camera-to-world pose of a query from the pair (query, database) and database GT geometry.

    Confident pixels of both images (``conf > conf_threshold``; database pixels also need GT) are
    matched by reciprocal 3D nearest neighbours of the pair's pointmaps (both in the query camera's
    frame); each matched database pixel is replaced by its GT world point and PnP-RANSAC solves the
    query pose with its known intrinsics. With fewer than ``min_matches`` confident matches every
    pixel is matched instead (``stats["conf_fallback"] = 1``).

    Args:
        pts_query: ``(H, W, 3)`` query points (``pts3d_1`` of pair (query, db)); conf_query ``(H, W)``.
        pts_db_in_query: ``(H', W', 3)`` database points in the query frame; conf_db ``(H', W')``.
        db_world: ``(H', W', 3)`` GT world points of the database pixels (NaN where unknown), metres.
        K_query: ``(3, 3)`` query intrinsics at the network resolution (``fx ~ fy``: their mean is
            used as the focal).
        iterations, reproj_error: RANSAC iterations and inlier threshold (network pixels).

    Returns:
        ``(cam2world (4, 4) float64, {"n_matches": M, "conf_fallback": 0 | 1})``; the pose is
        NaN when PnP fails.
    """
    H, W = pts_query.shape[:2]
    valid_db = torch.from_numpy(np.isfinite(db_world).all(-1))
    uv_q, uv_db = reciprocal_matches(pts_query, pts_db_in_query, subsample=1,
                                     mask1=conf_query > conf_threshold,
                                     mask2=(conf_db > conf_threshold) & valid_db)
    stats = {"n_matches": len(uv_q), "conf_fallback": 0}
    if len(uv_q) < min_matches:  # too few confident pixels: match all of them instead
        uv_q, uv_db = reciprocal_matches(pts_query, pts_db_in_query, subsample=1, mask2=valid_db)
        stats = {"n_matches": len(uv_q), "conf_fallback": 1}
    if len(uv_q) < 4:
        return _NAN_POSE.copy(), stats
    X = db_world[uv_db[:, 1].numpy(), uv_db[:, 0].numpy()]
    f = 0.5 * (K_query[0, 0] + K_query[1, 1])
    res = pnp_ransac_points(X, uv_q.double(), (H, W), focal=f, pp=(K_query[0, 2], K_query[1, 2]),
                            iterations=iterations, reproj_error=reproj_error)
    return (_NAN_POSE.copy() if res is None else as_float64(res[1])), stats
