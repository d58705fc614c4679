"""The scene as a GLB file (binary glTF, written with trimesh), as the reference demo shows it.

Content of the GLB scene graph:

* node ``points`` (a point cloud of the valid pixels with their colours), or with
  ``as_pointcloud=False`` node ``mesh``: each image's pixel grid triangulated (two triangles per 2x2
  quad, kept only where all three vertices are valid, each also with reversed winding so no face is
  culled; face colours from the quad's top-left pixel for the first triangle and its bottom-right
  pixel for the second);
* per placed camera ``k`` a node ``camera_{k:03d}``: a pyramid frustum drawn with thin edges in the
  ``k``-th colour of :data:`~pointmap.export.common.CAM_PALETTE` (cycled), and unless
  ``transparent_cams`` a node ``camera_{k:03d}_image`` carrying the image as a texture on the
  frustum base. ``k`` is the index of the image in the :class:`~pointmap.scene.Scene`.

Counting cameras: count the nodes whose name matches ``camera_\\d{3,}`` (no suffix); the same number
is stored in the glTF scene extras as ``{"pointmap": {"n_cameras": n, "cameras": [names], "units":
..., "metric": ..., "units_note": ...}}`` (the length unit: :func:`~pointmap.export.common.units_fields`;
the viewer frame is rigid, so lengths keep the scene's unit).

Frame: all geometry is expressed in the frame ``inverse(cam2world_0 @ diag(1, -1, -1, 1) @ Rot_y(180
deg))`` like the reference demo, where ``cam2world_0`` is the pose of the first placed image: view 0 is
the reference, seen in an OpenGL-style (y up) viewer frame.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from ..arrays import to_numpy
from ..errors import PointmapError
from ..io_utils import atomic_write_bytes
from ..scene import Scene
from .common import (
    CAM_PALETTE,
    OPENCV_TO_OPENGL,
    image_points,
    map_images,
    masked_points,
    rgb_uint8,
    scene_masks,
    units_fields,
)

__all__ = ["CAMERA_NODE", "auto_cam_size", "build_glb_scene", "export_glb", "viewer_transform"]

#: Name of the frustum node of image ``k``: ``CAMERA_NODE.format(k)``.
CAMERA_NODE = "camera_{:03d}"

_ROT_Y_180 = np.diag([-1.0, 1.0, -1.0, 1.0])


def _placed(scene: Scene) -> list[int]:
    return [k for k in range(len(scene)) if bool(scene.placed[k])]


def viewer_transform(scene: Scene) -> np.ndarray:
    """``(4, 4)`` float64 transform applied to world coordinates in the GLB: the inverse of
    ``cam2world_0 @ diag(1, -1, -1, 1) @ Rot_y(180 deg)`` with ``cam2world_0`` the pose of the first
    placed image (identity rotation part when no image is placed)."""
    placed = _placed(scene)
    if not placed:
        return np.eye(4)
    ref = to_numpy(scene.poses[placed[0]], np.float64)
    return np.linalg.inv(ref @ OPENCV_TO_OPENGL @ _ROT_Y_180)


def auto_cam_size(scene: Scene) -> float:
    """Frustum depth in scene units: 0.1 x the median distance between placed camera centres, at
    most the median distance from a camera to its nearest neighbour (so that thousands of cameras
    do not hide each other); with fewer than two distinct cameras, 0.1 x the median valid depth;
    0.05 as a last resort."""
    placed = _placed(scene)
    centres = to_numpy(scene.poses, np.float64)[placed, :3, 3]
    centres = centres[np.isfinite(centres).all(1)]
    if len(centres) >= 2:
        from scipy.spatial import cKDTree

        d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(len(centres), 1)] \
            if len(centres) <= 2000 else np.linalg.norm(centres - centres.mean(0), axis=1)
        med = float(np.median(d))
        nn = cKDTree(centres).query(centres, k=2)[0][:, 1]
        nn_med = float(np.median(nn[nn > 0])) if (nn > 0).any() else med
        if med > 0 and np.isfinite(med):
            return min(0.1 * med, nn_med)
    masks = scene_masks(scene)
    depths = [to_numpy(scene.depths[k], np.float64)[masks[k]] for k in range(len(scene))]
    depths = np.concatenate(depths) if depths else np.zeros(0)
    if depths.size:
        return 0.1 * float(np.median(depths))
    return 0.05


_ROWS = 16_384
"""Points per matrix product in :func:`_apply`: few enough that the BLAS computes it on the calling
thread (its own threads on millions of points waited on each other beside the export's pool)."""


def _apply(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points ``(N, 3)`` transformed by ``T`` ``(4, 4)``, :data:`_ROWS` at a time (the same values)."""
    R, t = T[:3, :3].T, T[:3, 3]
    if len(pts) <= _ROWS:
        return pts @ R + t
    return np.concatenate([pts[i:i + _ROWS] @ R + t for i in range(0, len(pts), _ROWS)])


def _grid_mesh(
    pts: np.ndarray, cols: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate one pixel grid.

    Args:
        pts: ``(H, W, 3)`` points; cols: ``(H, W, 3)`` uint8 colours; valid: ``(H, W)`` bool.

    Returns:
        vertices ``(V, 3)`` (the pixels used by a face, row-major), faces ``(F, 3)`` int64 (each face
        twice, both windings), face colours ``(F, 3)`` uint8.
    """
    H, W = valid.shape
    idx = np.arange(H * W).reshape(H, W)
    tl, tr = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    bl, br = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([tl, tr, bl], 1), np.stack([tr, bl, br], 1)])
    v = valid.ravel()
    flat_cols = cols.reshape(-1, 3)
    face_cols = np.concatenate([flat_cols[tl], flat_cols[br]])
    keep = v[faces].all(axis=1)
    faces, face_cols = faces[keep], face_cols[keep]
    used = np.zeros(H * W, bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    faces = remap[faces]
    faces = np.concatenate([faces, faces[:, ::-1]])
    face_cols = np.concatenate([face_cols, face_cols])
    return pts.reshape(-1, 3)[used], faces, face_cols


def _frustum_corners(K: np.ndarray, size: tuple[int, int], depth: float) -> np.ndarray:
    """``(4, 3)`` camera-frame corners (tl, tr, br, bl) of the image plane at z = ``depth``."""
    W, H = size
    uv = np.array([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]])
    ray = np.linalg.solve(K, np.concatenate([uv, np.ones((4, 1))], 1).T).T
    return ray / ray[:, 2:3] * depth


def _edges_mesh(starts: np.ndarray, ends: np.ndarray, width: float, up: np.ndarray) -> trimesh.Trimesh:
    """Thin flat ribbons ``(E, 3) -> (E, 3)`` of ``width`` (both windings) standing in for lines."""
    d = ends - starts
    side = np.cross(d, up)
    bad = np.linalg.norm(side, axis=1) < 1e-12
    side[bad] = np.cross(d[bad], np.array([1.0, 0.0, 0.0]))
    side /= np.maximum(np.linalg.norm(side, axis=1, keepdims=True), 1e-12)
    off = 0.5 * width * side
    verts = np.concatenate([starts - off, starts + off, ends + off, ends - off])
    E = len(starts)
    a, b, c, e = (np.arange(E) + i * E for i in range(4))
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, e], 1)])
    faces = np.concatenate([faces, faces[:, ::-1]])
    return trimesh.Trimesh(vertices=verts, faces=faces, process=False)


def _camera_meshes(
    K: np.ndarray, cam2world: np.ndarray, size: tuple[int, int], depth: float, T: np.ndarray,
    colour: tuple[int, int, int], image: np.ndarray | None,
) -> tuple[trimesh.Trimesh, trimesh.Trimesh | None]:
    M = T @ cam2world
    corners = _apply(M, _frustum_corners(K, size, depth))
    apex = _apply(M, np.zeros((1, 3)))
    up = M[:3, :3] @ np.array([0.0, 0.0, 1.0])  # optical axis: ribbons lie across it
    starts = np.concatenate([np.repeat(apex, 4, 0), corners])
    ends = np.concatenate([corners, np.roll(corners, -1, axis=0)])
    frustum = _edges_mesh(starts, ends, width=0.03 * depth, up=up)
    frustum.visual.face_colors = np.array([*colour, 255], dtype=np.uint8)
    if image is None:
        return frustum, None
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # tl, tr, br, bl
    quad = trimesh.Trimesh(
        vertices=corners, faces=np.concatenate([faces, faces[:, ::-1]]), process=False,
        visual=trimesh.visual.TextureVisuals(uv=uv, image=_texture(image)),
    )
    return frustum, quad


TEXTURE_TEXELS = 16_000_000
"""Texels of all camera images of a GLB together (about 64 MB of RGBA in a viewer); each image
is shrunk to fit its share."""


class _PngTexture(Image.Image):
    """An image whose PNG file (Pillow's default options, as trimesh's GLB writer saves a
    texture) was encoded beforehand, on the export's threads: saving it as PNG without options
    writes those bytes, so the serial GLB writer does not encode it again."""

    png: bytes = b""

    def save(self, fp, format=None, **params):  # noqa: A002 (Pillow's name)
        if self.png and not params and str(format).upper() == "PNG" and hasattr(fp, "write"):
            fp.write(self.png)
            return
        super().save(fp, format, **params)


def _texture(img: np.ndarray) -> Image.Image:
    """``img`` (H, W, 3) uint8 as a :class:`_PngTexture` (its PNG bytes, those Pillow writes)."""
    im = Image.fromarray(img)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    im.__class__ = _PngTexture
    im.png = buf.getvalue()
    return im


def _thumbnail(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` (H, W, 3) uint8 shrunk so that its longer side is at most ``side`` pixels."""
    H, W = img.shape[:2]
    if max(H, W) <= side:
        return img
    s = side / max(H, W)
    size = (max(1, round(W * s)), max(1, round(H * s)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))


def build_glb_scene(
    scene: Scene,
    as_pointcloud: bool = True,
    cam_size: float | None = None,
    transparent_cams: bool = False,
    mask: Sequence[torch.Tensor | np.ndarray] | None = None,
    max_points: int | None = None,
    workers: int | None = None,
) -> trimesh.Scene:
    """The :class:`trimesh.Scene` that :func:`export_glb` writes (see the module docstring); the
    per-image work runs on ``workers`` threads (:func:`~pointmap.export.common.map_images`)."""
    if cam_size is None:
        cam_size = auto_cam_size(scene)
    if not (cam_size > 0 and np.isfinite(cam_size)):
        raise PointmapError(f"cam_size must be a positive number, got {cam_size}")
    T = viewer_transform(scene)
    out = trimesh.Scene()
    if as_pointcloud:
        pts, cols, _ = masked_points(scene, mask, max_points=max_points, workers=workers)
        if len(pts):
            rgba = np.concatenate([cols, np.full((len(cols), 1), 255)], 1).astype(np.uint8)
            out.add_geometry(trimesh.PointCloud(_apply(T, pts), colors=rgba),
                             node_name="points", geom_name="points")
    else:
        masks = scene_masks(scene, mask, workers)
        grids = map_images(lambda k: _grid_mesh(image_points(scene, k), rgb_uint8(scene.imgs[k]), masks[k]),
                           len(scene), workers)
        verts, faces, fcols, offset = [], [], [], 0
        for v, f, fc in grids:
            verts.append(v); faces.append(f + offset); fcols.append(fc)
            offset += len(v)
        if faces and sum(len(f) for f in faces):
            fcols = np.concatenate(fcols)
            mesh = trimesh.Trimesh(
                vertices=_apply(T, np.concatenate(verts)), faces=np.concatenate(faces),
                face_colors=np.concatenate([fcols, np.full((len(fcols), 1), 255)], 1).astype(np.uint8),
                process=False,
            )
            out.add_geometry(mesh, node_name="mesh", geom_name="mesh")
    names = []
    placed = _placed(scene)
    # image textures on the frustums share a budget of texels, so that a GLB with thousands of
    # cameras stays small enough for a viewer
    side = max(16, int(TEXTURE_TEXELS ** 0.5 / max(len(placed), 1) ** 0.5))

    def camera(i: int) -> tuple[trimesh.Trimesh, trimesh.Trimesh | None]:
        k = placed[i]
        H, W = scene.depths[k].shape
        return _camera_meshes(
            to_numpy(scene.intrinsics[k], np.float64), to_numpy(scene.poses[k], np.float64),
            (W, H), float(cam_size), T, CAM_PALETTE[k % len(CAM_PALETTE)],
            None if transparent_cams else _thumbnail(rgb_uint8(scene.imgs[k]), side),
        )

    for k, (frustum, quad) in zip(placed, map_images(camera, len(placed), workers)):
        name = CAMERA_NODE.format(k)
        names.append(name)
        out.add_geometry(frustum, node_name=name, geom_name=name)
        if quad is not None:
            out.add_geometry(quad, node_name=f"{name}_image", geom_name=f"{name}_image")
    out.metadata["pointmap"] = {"n_cameras": len(names), "cameras": names, **units_fields(scene)}
    return out


def export_glb(
    scene: Scene,
    path: str | os.PathLike,
    as_pointcloud: bool = True,
    cam_size: float | None = None,
    transparent_cams: bool = False,
    mask: Sequence[torch.Tensor | np.ndarray] | None = None,
    max_points: int | None = None,
    workers: int | None = None,
) -> Path:
    """Write the scene (points or mesh, plus camera frustums) to a GLB file, atomically.

    Args:
        scene: the reconstruction.
        path: output ``.glb`` file.
        as_pointcloud: coloured points (``True``) or a mesh from each image's pixel grid.
        cam_size: frustum depth in scene units; ``None`` picks :func:`auto_cam_size`.
        transparent_cams: draw frustum edges only, without the image at the base.
        mask: per image ``(H, W)`` bool to use instead of ``scene.masks``.
        max_points: point cloud of at most this many points, sampled at random (seeded) from
            every image in proportion to its valid points; ``None`` keeps all.
        workers: threads for the per-image work (:func:`~pointmap.export.common.map_images`; the
            file does not depend on it).

    Returns:
        ``path``.
    """
    path = Path(path)
    data = build_glb_scene(scene, as_pointcloud, cam_size, transparent_cams, mask,
                           max_points, workers).export(file_type="glb")
    atomic_write_bytes(path, data)
    return path
