"""Evaluation metrics: camera poses (:mod:`.poses`, with the multi-view and two-view protocols),
depth (:mod:`.depth`), visual localization (:mod:`.localization`) and 3D reconstruction
(:mod:`.reconstruction`).

All functions take numpy arrays or torch tensors (converted to float64 numpy) and return plain
Python floats / numpy arrays, so results serialise to JSON directly. Poses are camera-to-world
``(N, 4, 4)`` (or ``(N, 3, 4)``) in OpenCV axes; angles are in degrees, distances in the units of
the inputs; a metric with nothing to average over is ``nan``, never an exception.
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
