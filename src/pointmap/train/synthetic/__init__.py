"""Synthetic multi-view data: procedural textured scenes ray-cast on the fly (CPU or GPU) with exact
depth, camera poses and intrinsics, served as DUSt3R training pairs."""

from .cameras import (
    MOTIONS,
    fov_from_intrinsics,
    intrinsics_from_fov,
    look_at,
    sample_trajectory,
)
from .config import SyntheticConfig
from .dataset import (
    ExampleCapture,
    SyntheticPairDataset,
    covisibility,
    render_example_scene,
    render_pair_batch,
    scene_id,
)
from .layouts import LAYOUTS, make_scene
from .raycast import cast_rays, cast_rays_tiled, pack_scenes
from .render import RenderOutput, pixel_rays, render_views
from .scenes import Scene
from .textures import (
    PROCEDURAL_KINDS,
    TextureBank,
    build_texture_bank,
    find_packaged_photos,
)

__all__ = [
    "LAYOUTS",
    "MOTIONS",
    "PROCEDURAL_KINDS",
    "ExampleCapture",
    "RenderOutput",
    "Scene",
    "SyntheticConfig",
    "SyntheticPairDataset",
    "TextureBank",
    "build_texture_bank",
    "cast_rays",
    "cast_rays_tiled",
    "covisibility",
    "find_packaged_photos",
    "fov_from_intrinsics",
    "intrinsics_from_fov",
    "look_at",
    "make_scene",
    "pack_scenes",
    "pixel_rays",
    "render_example_scene",
    "render_pair_batch",
    "render_views",
    "sample_trajectory",
    "scene_id",
]
