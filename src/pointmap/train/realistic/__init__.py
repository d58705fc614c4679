"""Realistic synthetic data: real photographs and real textured 3D models from an asset bank,
composed into rooms, object captures, streets and clutter, rasterised with exact depth."""

from .meshes import Material, Mesh, MeshScene, SceneAssembler, box_mesh, pack_mesh_scenes, quad_mesh
from .raster import MeshBatch, RasterOutput, rasterize, render_meshes

__all__ = [
    "Material",
    "Mesh",
    "MeshBatch",
    "MeshScene",
    "RasterOutput",
    "SceneAssembler",
    "box_mesh",
    "pack_mesh_scenes",
    "quad_mesh",
    "rasterize",
    "render_meshes",
]
