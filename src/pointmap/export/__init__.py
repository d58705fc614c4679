"""Writing reconstructions: one module per format, and :func:`export_scene` for all of them.

Layout written by :func:`export_scene` into ``out_dir``::

    scene.glb               glb         points (or mesh) + camera frustums, viewer frame
    points.ply              ply         binary PLY, world frame, colours + raw confidence
    colmap/sparse/0/*.bin   colmap      COLMAP sparse model (original resolution)
    colmap/text/*.txt       colmap      the same model as text
    colmap/database.db      colmap-db   pixel matches as a COLMAP database: keypoints, matches,
                                        two-view geometries verified by RANSAC (needs pycolmap)
    colmap/init/*.txt       colmap-db   the aligned cameras as an initial COLMAP model (same ids as
                                        the database; POINTS2D = its keypoints; no 3-D points)
    transforms.json         transforms  nerfstudio cameras (original resolution)
    images/                 colmap, colmap-db, transforms: the images these refer to (placed
                                        ones; with colmap-db every image of the database)
    depth/                  depth       16-bit PNG + npy depth, confidence, previews, depth.json
    cameras.json            cameras     intrinsics and poses (network and original resolution)
    .pointmap-manifest.json             the files this export wrote (``--overwrite`` replaces only those)
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import PointmapError
from ..io_utils import OutputDir
from ..scene import Scene
from .cameras import export_cameras
from .colmap import build_colmap_model, export_colmap, zip_model
from .colmap_database import export_colmap_database, require_pycolmap
from .common import copy_image, export_workers, image_file_names, map_images, original_colours, source_image_path
from .depth import export_depth, read_depth_sidecar
from .glb import export_glb
from .nerfstudio import export_nerfstudio
from .ply import export_ply

__all__ = [
    "DEFAULT_CLOUD_POINTS",
    "FORMATS",
    "MATCH_FORMATS",
    "export_cameras",
    "export_colmap",
    "export_colmap_database",
    "export_depth",
    "export_glb",
    "export_nerfstudio",
    "export_ply",
    "export_scene",
    "export_workers",
    "zip_model",
]

DEFAULT_CLOUD_POINTS = 2_000_000
"""The command line's default point budget of the PLY and GLB clouds (``--max-points``): about
10 images at 512x384; a 1000-image scene keeps one pixel in about 100."""

FORMATS = ("glb", "ply", "colmap", "transforms", "depth", "cameras")
"""The formats written from the scene alone (the default of :func:`export_scene`)."""

MATCH_FORMATS = ("colmap-db",)
"""Formats that also need the pixel matches of the pairs (``export_scene(..., matches=...)``);
written only when asked for."""


def export_scene(
    scene: Scene,
    out_dir: str | os.PathLike | OutputDir,
    formats: Sequence[str] = FORMATS,
    overwrite: bool = False,
    image_paths: Sequence[str | os.PathLike | None] | None = None,
    as_pointcloud: bool = True,
    cam_size: float | None = None,
    transparent_cams: bool = False,
    normals: bool = False,
    max_points: int = 100_000,
    cloud_max_points: int | None = None,
    depth_resolution: str = "network",
    copy_images: bool = True,
    matches: Mapping[tuple[int, int], tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]] | None = None,
    progress: bool = False,
    workers: int | None = None,
    unchanged: Collection[int] = (),
) -> dict[str, Path]:
    """Write ``scene`` in the requested ``formats`` into ``out_dir`` (layout in the module docstring).

    Args:
        scene: the reconstruction.
        out_dir: output folder, or an :class:`~pointmap.io_utils.OutputDir` already checked
            against the inputs. Written in a temporary folder beside it and moved into place at
            the end (an error leaves earlier results as they were); a manifest lists the files.
        formats: any of :data:`FORMATS` and :data:`MATCH_FORMATS`.
        overwrite: replace the results of an earlier export in a non-empty ``out_dir`` (only the
            files pointmap wrote; other files are kept); otherwise
            :class:`~pointmap.errors.OutputExistsError` is raised. Ignored for an ``OutputDir``.
        image_paths: original image files per image (default ``scene.metas[k].path``).
        as_pointcloud, cam_size, transparent_cams: GLB options (:func:`export_glb`).
        normals: PLY normals (:func:`export_ply`).
        max_points: most COLMAP 3-D points (:func:`export_colmap`).
        cloud_max_points: most points in the PLY and GLB point clouds (a random sample drawn
            from every image in proportion to its valid points; ``None`` keeps all; the command
            line's ``--max-points``, default :data:`DEFAULT_CLOUD_POINTS`).
        depth_resolution: ``"network"`` or ``"original"`` (:func:`export_depth`).
        copy_images: copy the images into ``images/`` for COLMAP / nerfstudio.
        matches: for ``colmap-db``: per pair of image indices ``(i, j)``, ``(xy_i (M, 2), xy_j (M,
            2))`` matched pixels ``(x, y)`` at network resolution
            (:func:`~pointmap.export.colmap_database.export_colmap_database`).
        progress: a tqdm bar over the steps (the image copies, the depth maps of each image, and
            one step per format) with elapsed time and ETA.
        workers: threads for the per-image work (image copies, depth maps and previews, the
            PLY/GLB points and cameras): default :func:`export_workers` (the CPUs, at most
            :data:`~pointmap.export.common.MAX_WORKERS`); ``1`` runs image after image. The files
            do not depend on it.
        unchanged: images whose own files (image copy, depth maps) ``out_dir`` already holds as
            this export writes them (same image, camera, depth and confidence, e.g. cameras
            kept fixed while images are added): they are carried over from ``out_dir`` (linked,
            else copied, into the results) instead of being written again; the files of the whole
            scene are written as always.

    Raises:
        PointmapError: an unknown format, or a file of an ``unchanged`` image missing from ``out_dir``.

    Returns:
        ``{format: path}``, plus ``"colmap_text"``, ``"colmap_init"`` and ``"images"`` where written.
    """
    known = (*FORMATS, *MATCH_FORMATS)
    unknown = [f for f in formats if f not in known]
    if unknown:
        raise PointmapError(f"unknown export format(s) {unknown}; choose from {list(known)}")
    if "colmap-db" in formats:
        require_pycolmap("the colmap-db export")
        if matches is None:
            raise PointmapError("the colmap-db export needs the pixel matches of the pairs (matches=...)")
    export_workers(workers)  # a bad count is refused before any work
    target = out_dir if isinstance(out_dir, OutputDir) else OutputDir(out_dir, overwrite=overwrite)
    with target.writing() as out:
        names = image_file_names(scene, image_paths)
        paths: dict[str, Path] = {}
        copies = copy_images and any(f in formats for f in ("colmap", "colmap-db", "transforms"))
        per_image = (len(scene) if copies else 0) + (len(scene) if "depth" in formats else 0)
        bar = tqdm(total=per_image + len(formats), desc="export", unit="step", disable=not progress)

        lock = threading.Lock()

        def step(name: str) -> None:
            with lock:
                bar.set_postfix_str(name)
                bar.update(1)

        if copies:
            def copy(k: int) -> None:  # the database lists every image, placed or not
                if k in unchanged:
                    _carry(target.path, out, [f"images/{names[k]}"])
                elif bool(scene.placed[k]) or "colmap-db" in formats:
                    src = source_image_path(scene, k, image_paths)
                    copy_image(src, out / "images" / names[k],
                               fallback=original_colours(scene, k) if src is None else None)

            map_images(copy, len(scene), workers, done=lambda: step("images"))
            paths["images"] = out / "images"
        writers = {
            "glb": lambda: {"glb": export_glb(scene, out / "scene.glb", as_pointcloud, cam_size, transparent_cams,
                                              max_points=cloud_max_points, workers=workers)},
            "ply": lambda: {"ply": export_ply(scene, out / "points.ply", normals=normals,
                                              max_points=cloud_max_points, workers=workers)},
            "colmap": lambda: _write_colmap(scene, out / "colmap", max_points, names, workers),
            "colmap-db": lambda: _write_colmap_db(scene, out / "colmap", matches or {}, names),
            "transforms": lambda: {"transforms": export_nerfstudio(
                scene, out / "transforms.json", image_paths=image_paths, copy_images=False,
                ply_file_path="points.ply" if "ply" in formats else None)},
            "depth": lambda: {"depth": export_depth(  # type: ignore[arg-type]
                scene, out / "depth", resolution=depth_resolution, image_names=names, workers=workers,
                done=lambda: step("depth"), skip=unchanged).parent},
            "cameras": lambda: {"cameras": export_cameras(scene, out / "cameras.json", image_names=names)},
        }
        todo = [f for f in writers if f in formats]

        def write(t: int) -> dict[str, Path]:
            got = writers[todo[t]]()
            step(todo[t])
            return got

        # the formats write different files: they run side by side too (their serial parts, e.g.
        # the GLB's encoding, overlap), each with its own per-image pool
        for got in map_images(write, len(todo), 1 if export_workers(workers) == 1 else len(todo)):
            paths.update(got)
        if "depth" in formats and unchanged:
            entries = list(read_depth_sidecar(out / "depth")["images"].values())  # in image order
            own = [f for k in sorted(unchanged) for key, f in entries[k].items()
                   if key.endswith(("_png", "_npy", "_preview"))]
            _carry(target.path, out, [f"depth/{f}" for f in own])
        bar.close()
    return {k: target.path / p.relative_to(out) for k, p in paths.items()}


def _carry(source: Path, out: Path, files: Sequence[str]) -> None:
    """The ``files`` (paths relative to the folders) of ``source`` into ``out``: hard links (the
    same bytes, nothing written), copies where the file system has none.

    Raises:
        PointmapError: a file missing from ``source``.
    """
    for f in files:
        src, dst = source / f, out / f
        if not src.is_file():
            raise PointmapError(f"{source} has no {f} to keep; write every image's files again")
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def _write_colmap(
    scene: Scene, folder: Path, max_points: int, names: list[str], workers: int | None
) -> dict[str, Path]:
    """The COLMAP model as binary (``sparse/0``) and text (``text``) files."""
    model = build_colmap_model(scene, max_points=max_points, image_names=names, workers=workers)
    export_colmap(scene, folder / "sparse" / "0", "bin", model=model)
    export_colmap(scene, folder / "text", "txt", model=model)
    return {"colmap": folder / "sparse" / "0", "colmap_text": folder / "text"}


def _write_colmap_db(
    scene: Scene, folder: Path, matches: Mapping, names: list[str]
) -> dict[str, Path]:
    """The COLMAP database of the pixel matches and the initial model beside it."""
    db = export_colmap_database(scene, folder, matches, image_names=names)
    return {"colmap-db": db["database"], "colmap_init": db["init"]}
