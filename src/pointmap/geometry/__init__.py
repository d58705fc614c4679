"""Pure tensor geometry: cameras, focal estimation, similarity registration, PnP, 3D matching."""

from .camera import (
    default_principal_point,
    depth_to_world,
    estimate_focal,
    estimate_focal_from_pixels,
    intrinsics_matrix,
    normalize_pixels,
    pixel_grid,
    project,
    rescale_intrinsics,
    unproject_depth,
)
from .matching import reciprocal_matches
from .pnp import confident_mask, pnp_ransac, pnp_ransac_inliers, pnp_ransac_points, relative_pose
from .registration import (
    align_multiple_poses,
    apply_similarity,
    gauge_to_known_poses,
    inverse_pose,
    rigid_registration,
    similarity_matrix,
)

__all__ = [
    "align_multiple_poses",
    "apply_similarity",
    "confident_mask",
    "default_principal_point",
    "depth_to_world",
    "estimate_focal",
    "estimate_focal_from_pixels",
    "gauge_to_known_poses",
    "intrinsics_matrix",
    "inverse_pose",
    "normalize_pixels",
    "pixel_grid",
    "pnp_ransac",
    "pnp_ransac_inliers",
    "pnp_ransac_points",
    "project",
    "reciprocal_matches",
    "relative_pose",
    "rescale_intrinsics",
    "rigid_registration",
    "similarity_matrix",
    "unproject_depth",
]
