"""Evaluation metrics: camera poses (:mod:`.poses`), depth (:mod:`.depth`), visual localization
(:mod:`.localization`) and 3D reconstruction (:mod:`.reconstruction`).

All functions take numpy arrays or torch tensors (converted to float64 numpy) and return plain
Python floats / numpy arrays, so results serialise to JSON directly.

Conventions:

* poses are camera-to-world ``(N, 4, 4)`` (or ``(N, 3, 4)``) in OpenCV axes;
* angles are in **degrees**, distances in the units of the inputs (metres for metric GT);
* a metric that has nothing to average over (no pairs, no valid pixels, no points) is ``nan``,
  never an exception: the item is reported as missing rather than silently counted as 0.

Multi-view pose protocol (CO3Dv2 / RealEstate10K, as used by PoseDiffusion and DUSt3R): for every
unordered pair ``i < j`` of cameras, the relative pose ``T_ij = world2cam_j @ cam2world_i`` is
computed for the estimate and for the GT. The *relative rotation error* is the geodesic angle of
``R_ij_est^T R_ij_gt``; the *relative translation error* is the angle between the directions of
``t_ij_est`` and ``t_ij_gt``. Both are invariant to any similarity transform of either world, so
no alignment is needed. The protocol treats a translation direction and its opposite as the same
(``sign_invariant=True``, errors in ``[0, 90]``), like the reference PoseDiffusion code. ``RRA@tau``
/ ``RTA@tau`` are the fractions of pairs with error ``< tau``; ``mAA(30)`` is the mean over the
integer thresholds ``tau = 1..30`` of the fraction of pairs with ``max(rot_err, trans_err) < tau``
(``<= 30`` for the last one; it equals the histogram-cumsum formula of PoseDiffusion).
"""

from .depth import DepthMetrics, abs_rel_map, depth_metrics, median_scale
from .localization import (
    LOCALIZATION_THRESHOLDS,
    SEVEN_SCENES_THRESHOLD,
    localization_errors,
    localization_metrics,
)
from .poses import (
    accuracy_at,
    direction_error_deg,
    mean_average_accuracy,
    multiview_pose_metrics,
    pose_auc,
    relative_pose_errors,
    rotation_error_deg,
    two_view_pose_error,
    two_view_pose_errors,
)
from .reconstruction import (
    Similarity,
    constant_depth,
    identity_poses,
    reconstruction_metrics,
    similarity_align_points,
    similarity_align_poses,
)

__all__ = [
    "Similarity",
    "rotation_error_deg",
    "direction_error_deg",
    "relative_pose_errors",
    "accuracy_at",
    "mean_average_accuracy",
    "multiview_pose_metrics",
    "two_view_pose_error",
    "two_view_pose_errors",
    "pose_auc",
    "median_scale",
    "abs_rel_map",
    "depth_metrics",
    "DepthMetrics",
    "localization_errors",
    "localization_metrics",
    "LOCALIZATION_THRESHOLDS",
    "SEVEN_SCENES_THRESHOLD",
    "similarity_align_points",
    "similarity_align_poses",
    "reconstruction_metrics",
    "identity_poses",
    "constant_depth",
]
