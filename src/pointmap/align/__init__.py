"""Global alignment: pair predictions -> one scene (poses, intrinsics, dense depth)."""

from .common import AlignInputs, connected_image_sets
from .config import AlignConfig
from .optimizer import AlignResult, align_components, align_pairs, global_align
from .pair_viewer import pair_scene
from .clean import clean_pointcloud
from .postprocess import mask_sky
from .sparse import SparseConfig, pair_matches, sparse_align

__all__ = [
    "AlignConfig",
    "AlignInputs",
    "AlignResult",
    "align_components",
    "align_pairs",
    "clean_pointcloud",
    "connected_image_sets",
    "global_align",
    "mask_sky",
    "pair_scene",
    "pair_matches",
    "SparseConfig",
    "sparse_align",
]
