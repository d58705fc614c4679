"""Configuration of global alignment."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["AlignConfig"]


@dataclass
class AlignConfig:
    """Settings of :func:`pointmap.align.global_align`.

    Confidence threshold semantics (the one used everywhere in pointmap): a pixel is *confident*
    when its **raw** network confidence (``1 + exp(x)``, always ``> 1``) is strictly greater than
    ``conf_threshold``, i.e. ``conf > conf_threshold``. This selects the pixels used by PnP and the
    output :attr:`pointmap.scene.Scene.masks`. The loss itself weights every pixel by
    ``conf_trf(conf)`` (``log(conf)`` by default) and does not threshold.

    Attributes:
        conf_threshold: raw-confidence threshold (see above); reference default 3.
        solver: coarse-stage optimiser. ``'gn'`` (default): robust Levenberg-Marquardt
            (Gauss-Newton with IRLS weights for ``'l1'``) with the per-pixel depths eliminated by a
            Schur complement; converges in ~10-30 iterations. ``'adam'``: the reference optimiser
            (Adam with betas ``(0.9, 0.9)`` on every parameter, ``lr`` / ``schedule``).
        niter: iterations of the coarse stage; ``None`` = the solver's default (30 for ``'gn'``,
            300 for ``'adam'`` as the reference). :attr:`iterations` gives the effective value.
        tol: ``'gn'`` stops when two accepted steps in a row lower the loss by less than this
            (relative).
        lr, lr_min: Adam learning rate and final rate of the schedule (``'adam'`` only).
        schedule: ``'cosine'`` or ``'linear'`` decay, evaluated at ``t / niter``.
        dist: ``'l1'`` (Euclidean distance, default) or ``'l2'`` (squared distance).
        conf_trf: confidence to weight: ``'log'`` (default), ``'sqrt'``, ``'m1'`` (``c - 1``),
            ``'id'``.
        base_scale: geometric mean the pairwise scales are pinned to (gauge fixing).
        niter_pnp: RANSAC iterations of the PnP used at initialisation.
        pnp_reproj_error: PnP inlier threshold (pixels).
        coarse_pixels: target number of pixels per image in the coarse stage; the stride is
            ``round(sqrt(H W / coarse_pixels))`` (at least 1) unless ``coarse_stride`` is set.
        coarse_samples: upper bound on ``edges x coarse pixels per image``: above it the
            coarse stage uses ``coarse_samples / edges`` pixels per image (at least 256), so its
            memory and time stop growing with the pixel count on large graphs (the default
            changes nothing up to 4096 ordered pairs and gives about 1700 pixels per image at
            10,000 pairs, e.g. 1000 images with ``logwin-5``). ``None``: no bound.
        coarse_stride: explicit pixel stride of the coarse stage (1 = full resolution).
        dense: solve per-pixel depth at full resolution after the coarse stage (closed form /
            IRLS with poses, intrinsics and pair similarities fixed). When ``False`` the coarse
            depth is bilinearly upsampled.
        dense_iters: IRLS passes of the dense depth solve (``l2`` needs one).
        chunk_slot_pixels: coarse residuals (images x edge sides x pixels) linearised at once by
            ``'gn'`` (bounds its memory: about 400 bytes each, 0.8 GB by default).
        dense_solve_bytes: the one size policy of both solvers' normal equations (``8 K^2``
            bytes for ``K`` unknowns: ``7 (images + edges)`` for ``'gn'``, ``7 + G`` per image
            for :func:`~pointmap.align.sparse.sparse_align`): factorised densely up to this size,
            as a sparse matrix (SuperLU, CPU) above it, so memory grows with the number of pairs,
            not its square. ``None``: 128 MiB on the CPU (4096 unknowns), 16 GiB on a GPU.
        sparse_solver: how the coarse stage solves normal equations above ``dense_solve_bytes``:
            ``'direct'`` (a scipy matrix factorised on the CPU), ``'cg'`` (a sparse tensor kept on
            the compute device, block-Jacobi preconditioned conjugate gradients,
            :mod:`~pointmap.align.pcg`) or ``'auto'`` (``'cg'`` on a GPU, ``'direct'`` on the CPU).
        chunk_pixels: pixels (edges x pixels per edge) processed at once when streaming the
            full-resolution predictions.
        cache_bytes: full-resolution predictions are cached on the device (in ``storage_dtype``)
            when they fit in this many bytes; otherwise they are streamed at every pass.
        storage_dtype: ``'float16'``, ``'bfloat16'`` or ``'float32'`` for the device cache.
        pnp_seed: seed of OpenCV's RNG, set before every RANSAC PnP of the initialisation
            (reproducible results; another seed may pick other inliers).
        shared_focal: one focal for all images without a known one.
    """

    conf_threshold: float = 3.0
    solver: Literal["gn", "adam"] = "gn"
    niter: int | None = None
    tol: float = 1e-6
    lr: float = 0.01
    lr_min: float = 1e-6
    schedule: Literal["cosine", "linear"] = "cosine"
    dist: Literal["l1", "l2"] = "l1"
    conf_trf: Literal["log", "sqrt", "m1", "id"] = "log"
    base_scale: float = 0.5
    niter_pnp: int = 10
    pnp_reproj_error: float = 5.0
    coarse_pixels: int = 4096
    coarse_samples: int | None = 1 << 24
    coarse_stride: int | None = None
    dense: bool = True
    dense_iters: int = 3
    chunk_slot_pixels: int = 1 << 21
    dense_solve_bytes: int | None = None
    sparse_solver: Literal["auto", "direct", "cg"] = "auto"
    chunk_pixels: int = 1 << 24
    cache_bytes: int = 8 << 30
    storage_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    pnp_seed: int = 0
    shared_focal: bool = False

    def __post_init__(self) -> None:
        from ..errors import PointmapError

        if self.schedule not in ("cosine", "linear"):
            raise PointmapError(f"AlignConfig.schedule={self.schedule!r}: use 'cosine' or 'linear'")
        if self.solver not in ("gn", "adam"):
            raise PointmapError(f"AlignConfig.solver={self.solver!r}: use 'gn' or 'adam'")
        if self.sparse_solver not in ("auto", "direct", "cg"):
            raise PointmapError(f"AlignConfig.sparse_solver={self.sparse_solver!r}: use 'auto', 'direct' or 'cg'")
        if self.dist not in ("l1", "l2"):
            raise PointmapError(f"AlignConfig.dist={self.dist!r}: use 'l1' or 'l2'")
        if self.conf_trf not in ("log", "sqrt", "m1", "id"):
            raise PointmapError(f"AlignConfig.conf_trf={self.conf_trf!r}: use log, sqrt, m1 or id")
        if not math.isfinite(self.conf_threshold):
            raise PointmapError(f"AlignConfig.conf_threshold={self.conf_threshold}: use a finite "
                                "number (a raw confidence, > 1; 0 keeps every point)")
        if self.niter is not None and self.niter < 0:
            raise PointmapError(f"AlignConfig.niter={self.niter} must be >= 0")
        if self.coarse_samples is not None and self.coarse_samples < 1:
            raise PointmapError(f"AlignConfig.coarse_samples={self.coarse_samples} must be >= 1")
        if self.coarse_stride is not None and self.coarse_stride < 1:
            raise PointmapError(f"AlignConfig.coarse_stride={self.coarse_stride} must be >= 1")

    def coarse_pixels_for(self, n_edges: int) -> int:
        """Coarse pixels per image for a graph of ``n_edges`` ordered pairs (``coarse_pixels``,
        lowered by ``coarse_samples``)."""
        if self.coarse_samples is None or n_edges <= 0:
            return self.coarse_pixels
        return min(self.coarse_pixels, max(256, self.coarse_samples // n_edges))

    @property
    def iterations(self) -> int:
        """Effective coarse-stage iterations (``niter`` or the solver's default)."""
        if self.niter is not None:
            return self.niter
        return 30 if self.solver == "gn" else 300
