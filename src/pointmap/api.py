"""The public face of pointmap: from image files to a :class:`~pointmap.scene.Scene` in one call.

Both functions are thin: :func:`reconstruct` builds a :class:`~pointmap.pipeline.Request` and
runs it (:func:`pointmap.pipeline.run_request`, where every option of the command line is
reachable), :func:`reconstruct_images` is :func:`pointmap.pipeline.core.reconstruct_images`.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from .align import AlignConfig, SparseConfig
from .model import DUSt3R
from .pipeline import Alignment, ExportSpec, Inputs, ModelSpec, PostProcess, Priors, Request, StorePolicy
from .pipeline.core import SPARSE_AUTO_PAIRS, ReconstructionResult, choose_align_method, plan_pairs, reconstruct_images
from .pipeline.runner import run_request
from .pipeline.targets import open_store

__all__ = ["SPARSE_AUTO_PAIRS", "ReconstructionResult", "choose_align_method", "open_store", "plan_pairs",
           "reconstruct", "reconstruct_images"]


def reconstruct(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    model: str | os.PathLike | DUSt3R = "default",
    size: int | None = None,
    graph: str = "auto",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    align: AlignConfig | None = None,
    align_method: str = "dense",
    sparse: SparseConfig | None = None,
    skip_bad: bool = False,
    progress: bool = False,
    cameras: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    fps: float = 1.0,
    conf_threshold: float | None = None,
    clean: bool = False,
    mask_sky: bool = False,
    output: str | os.PathLike | None = None,
    formats: Sequence[str] | None = None,
    overwrite: bool = False,
    store: str = "off",
    store_full: bool = False,
) -> ReconstructionResult:
    """Images (files, folders or videos) to a reconstructed scene, optionally exported.

    Args:
        inputs: image files, folders and/or video files (sampled at ``fps`` frames per second).
        model: a loaded network, a checkpoint path / hub id, or ``"default"`` (the bundled model).
        size: preprocessing size (224 or 512); default: the model's training size.
        graph: scene graph (``auto``, ``complete``, ``swin-K``, ``logwin-K``, ``oneref-K``,
            ``retrieval-K``; :mod:`pointmap.pairs`).
        batch_size, device, dtype: see :func:`pointmap.infer_pairs`.
        align: dense alignment settings (:class:`pointmap.AlignConfig`); its ``conf_threshold``
            is used unless ``conf_threshold`` is given.
        align_method: ``'dense'`` (default), ``'sparse'`` (from pixel matches, for many images)
            or ``'auto'``: sparse when the model has descriptors (MASt3R) or from
            :data:`SPARSE_AUTO_PAIRS` ordered pairs on (:func:`choose_align_method`).
        sparse: sparse alignment settings (:class:`pointmap.align.SparseConfig`).
        skip_bad: skip unreadable images with a warning instead of failing.
        progress: show progress bars.
        cameras: known intrinsics and/or poses of some or all images, matched by file name: a
            pointmap ``cameras.json``, a nerfstudio ``transforms.json`` or a COLMAP model (file or
            folder; see :mod:`pointmap.known_cameras`). ``align.shared_focal`` shares one focal
            among the images without a known one.
        masks: folder of per-image masks (same file name; non-zero = keep); masked-out pixels are
            excluded from alignment and from ``scene.masks`` (so from every export).
        conf_threshold: raw confidence (> 1) a point must exceed (default: ``align``'s, else the
            model's recommendation).
        clean, mask_sky: post-processing of the returned scene (``result.aligned`` is before it).
        output, formats, overwrite: export into the folder ``output`` (default: nothing written).
        store: ``"off"``, ``"on"`` or ``"auto"``: keep a predictions store in ``output`` so that an
            interrupted run resumes; with it, dense alignment runs from the streamed reductions of
            the pairs, which the store keeps (``result.predictions`` is then ``None``).
        store_full: keep every pair's full predictions in the store instead, and run the full
            dense stage (:class:`~pointmap.pipeline.StorePolicy`).
    """
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    request = Request(
        inputs=Inputs([os.fspath(p) for p in paths], fps=fps, skip_bad=skip_bad),
        model=ModelSpec(weights=model if isinstance(model, str) else os.fspath(model) if not isinstance(model, DUSt3R)
                        else "given model", device=None if device is None else str(device),
                        dtype=None if dtype is None else str(dtype).replace("torch.", ""), size=size,
                        batch_size=batch_size),
        graph=graph, store=StorePolicy(mode=store, replace=overwrite, full_pairs=store_full),  # type: ignore[arg-type]
        align=Alignment(method=align_method, dense=align, sparse=sparse),  # type: ignore[arg-type]
        priors=Priors(None if cameras is None else os.fspath(cameras), None if masks is None else os.fspath(masks)),
        post=PostProcess(conf_threshold=conf_threshold, clean=clean, mask_sky=mask_sky),
        export=ExportSpec(output=None if output is None else os.fspath(output), overwrite=overwrite,
                          **({} if formats is None else {"formats": tuple(formats)})),
        progress=progress,
    )
    res = run_request(request, model=model if isinstance(model, DUSt3R) else None)
    assert res is not None  # not distributed
    return res
