"""An aligned scene to what is kept and written: clean-up, sky masking, export (one place)."""

from __future__ import annotations

import os
from pathlib import Path
from dataclasses import replace
from typing import Collection, Mapping, Sequence

import torch

from ..align import clean_pointcloud, mask_sky
from ..export import export_scene
from ..io_utils import OutputDir
from ..scene import Scene
from .request import ExportSpec, PostProcess

__all__ = ["finish"]


def finish(
    scene: Scene,
    post: PostProcess,
    spec: ExportSpec,
    target: OutputDir | str | os.PathLike | None = None,
    *,
    matches: Mapping | None = None,
    image_paths: Sequence[str | os.PathLike | None] | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    unchanged: Collection[int] = (),
) -> tuple[Scene, dict[str, Path]]:
    """Clean ``scene`` up and mask its sky as ``post`` says, then export it as ``spec`` says.

    Args:
        scene: the aligned scene (its masks at the threshold to keep).
        target: the output folder (an :class:`~pointmap.io_utils.OutputDir` checked before the
            work, or a path; default ``spec.output``; ``None``: nothing is written).
        matches: the pairs' pixel matches, for the ``colmap-db`` export.
        image_paths: the images' files for the COLMAP and nerfstudio image folders (default:
            ``scene.metas[k].path``).
        device: where the clean-up's projections run (the run's device; default: the scene's).
        unchanged: images the output folder already holds as they are in ``scene`` (their
            confidences already cleaned up): the clean-up and sky masking leave them as they are
            (they still hide the others' points), and their own files are carried over, not
            written again (``export_scene(unchanged=...)``).

    Returns:
        The post-processed scene and ``{format: path}`` of what was written.
    """
    before = scene
    if post.clean and len(scene) > 1:
        scene = clean_pointcloud(scene, device=device,
                                 images=[k for k in range(len(scene)) if k not in unchanged] if unchanged else None)
    if post.mask_sky:
        scene = mask_sky(scene)
    if unchanged:
        keep = lambda k, now, then: then[k] if k in unchanged else now[k]  # noqa: E731
        scene = replace(scene, confidence=[keep(k, scene.confidence, before.confidence) for k in range(len(scene))],
                        masks=[keep(k, scene.masks, before.masks) for k in range(len(scene))])
    target = spec.output if target is None else target
    if target is None:
        return scene, {}
    paths = export_scene(scene, target, formats=spec.formats, overwrite=spec.overwrite,
                         as_pointcloud=not spec.mesh, cam_size=spec.cam_size,
                         cloud_max_points=spec.max_points, matches=matches, image_paths=image_paths,
                         progress=progress, unchanged=unchanged)
    return scene, paths
