"""Global alignment of pair predictions into one scene (reference ``PointCloudOptimizer``
semantics, computed in two stages for speed).

Stages, per connected component of the pair graph (:func:`align_pairs`):

1. **prepare**: the predictions are gathered per edge at full resolution and on a strided coarse
   pixel subset (about ``coarse_pixels`` per image, fewer on very large graphs), :mod:`.data`;
2. **init**: maximum-spanning-tree initialisation, :mod:`.init`;
3. **coarse**: the exact reference loss on the coarse pixels, solved by robust
   Levenberg-Marquardt with the depths eliminated (``solver='gn'``, default; ~10-30 iterations) or
   the reference Adam loop (``solver='adam'``), :mod:`.coarse`. Poses, focals and pair
   similarities are over-determined by a few thousand pixels per image;
4. **dense**: with cameras and similarities fixed, every full-resolution pixel's depth has a
   closed-form (``l2``) or IRLS (``l1``) optimum; a few streaming passes over the predictions
   replace hundreds of Adam iterations on millions of depth parameters, :mod:`.dense`.

Images with known depths (``known_depths``, with their pose and focal) keep them through every
stage: their world points are constants the others are aligned against.

Predictions are streamed to the device in chunks of edges and cached there in half precision
when they fit (``AlignConfig.cache_bytes``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..errors import GraphError
from ..geometry.camera import estimate_focal, intrinsics_matrix
from ..predictions import PairPredictions
from ..scene import Scene
from .coarse import coarse_solve
from .common import AlignInputs, CameraSet, KnownCameras, assemble_scene, connected_image_sets, validate_inputs
from .config import AlignConfig
from .data import build_edge_data
from .dense import dense_depth, dense_depth_by_image, upsample_coarse
from .init import mst_init

if TYPE_CHECKING:  # ``Unpack`` of a TypedDict types the keyword arguments (typing 3.11+)
    from typing_extensions import Unpack

log = logging.getLogger(__name__)

__all__ = [
    "AlignInputs", "AlignResult", "align_components", "align_pairs", "connected_image_sets",
    "global_align",
]

@dataclass
class AlignResult:
    """Output of :func:`align_pairs`.

    Attributes:
        scene: the reconstruction.
        loss: final coarse-stage loss (reference loss on the coarse pixels).
        dense_loss: reference loss at full resolution after the dense stage (NaN without it).
        init_loss: coarse loss right after initialisation.
        pair_poses: ``(E, 4, 4)`` similarities ``[s R | T]`` mapping each edge's prediction
            (camera-``i`` frame) to the world (NaN rows for edges of unplaced images).
        stride: pixel stride of the coarse stage.
        iterations: coarse-stage iterations run (LM trial steps for ``'gn'``).
        timings: seconds per stage.
    """

    scene: Scene
    loss: float
    dense_loss: float
    init_loss: float
    pair_poses: torch.Tensor
    stride: int
    iterations: int = 0
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- stages


def _single_image(preds: PairPredictions, k: int, known: KnownCameras, out: CameraSet) -> None:
    """Image ``k`` alone, from its self-pair(s): identity pose (or the known one), Weiszfeld focal
    (or the known one), predicted z (or the known) as depth."""
    sub = preds.subset([k])
    if (0, 0) not in sub.pairs:
        raise GraphError(f"image {k} has no pair with another image nor with itself")
    e = sub.index(0, 0)
    pts = sub.pts3d_1[e].float()
    H, W = pts.shape[:2]
    K = intrinsics_matrix(estimate_focal(pts), torch.tensor([W / 2, H / 2]))
    conf = torch.maximum(sub.conf_1[e].float(), sub.conf_2[e].float())
    depth = known.depths[k] if known.depths[k] is not None else pts[..., 2]
    out.fill(k, torch.eye(3), torch.zeros(3), K, depth.clone(), conf, known)


@dataclass
class _Component:
    """Alignment of one connected component (diagnostics of :class:`AlignResult`)."""

    loss: float
    dense_loss: float
    init_loss: float
    pair_poses: torch.Tensor
    stride: int
    iterations: int


def _align_component(
    preds: PairPredictions, images: list[int], known: KnownCameras, cfg: AlignConfig,
    inputs: AlignInputs, out: CameraSet,
) -> tuple[_Component, dict[str, float]]:
    """Stages prepare, init, coarse and dense on the images ``images`` (two or more); writes
    their cameras, depths and confidences into ``out``."""
    dev = torch.device(inputs.get("device") or "cpu")
    progress = bool(inputs.get("progress", False))
    masks = known.depth_masks(inputs.get("masks"))
    sub = preds.subset(images)
    sub_known = known.select(images)
    fixed = sub_known.depth_mask
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # store-backed predictions on the CPU are read from disk as needed, never cached in memory
    cache = 0 if sub.lazy and dev.type == "cpu" else cfg.cache_bytes
    data = build_edge_data(
        sub, dev, cfg.coarse_stride, cfg.coarse_pixels_for(len(sub)), cfg.conf_trf,
        None if masks is None else [masks[k] for k in images],
        cfg.chunk_pixels, cfg.storage_dtype, cache,
    )
    timings["prepare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    given = sub_known.sampled_depths(data.idx, data.uv, data.valid) if bool(fixed.any()) else (None, None)
    init = mst_init(
        data, cfg.conf_threshold, cfg.niter_pnp, cfg.pnp_reproj_error, cfg.base_scale, cfg.pnp_seed,
        **sub_known.init_priors(), depths=given[0], points=given[1],
    )
    timings["init"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    co = coarse_solve(data, init, sub_known, cfg, progress)
    timings["coarse"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    depths: dict[int, torch.Tensor] = {}

    def put(r: int, depth_r: torch.Tensor) -> None:
        h, w = out.depths[images[r]].shape
        d = sub_known.depths[r]  # a known depth as given
        depths[r] = d.clone() if d is not None else depth_r[: h * w].reshape(h, w).float().cpu()

    with torch.no_grad():
        dense_loss = float("nan")
        if cfg.dense and sub.lazy:  # one image at a time: memory independent of N and pairs
            _, dense_loss = dense_depth_by_image(
                data, sub, co, cfg.conf_trf, cfg.dist, cfg.dense_iters, progress, out=put, fixed=fixed,
            )
        else:
            depth = upsample_coarse(data, co.log_depth).exp()
            if cfg.dense:
                depth, dense_loss = dense_depth(
                    data, co, depth, cfg.conf_trf, cfg.dist, cfg.dense_iters, progress,
                    cache_bytes=cfg.cache_bytes // 4, fixed=fixed,
                )
            for r in range(len(images)):
                put(r, depth[r])
            del depth
    timings["dense"] = time.perf_counter() - t0
    for r, k in enumerate(images):
        h, w = out.depths[k].shape
        K = intrinsics_matrix(torch.stack([co.fx[r], co.fy[r]]).cpu(), co.pp[r].cpu())
        out.fill(k, co.R[r], co.C[r], K, depths.pop(r), data.im_conf[r, : h * w].reshape(h, w), known)
    pair_poses = torch.full((len(preds), 4, 4), float("nan"))
    pw = torch.zeros(len(sub), 4, 4)
    pw[:, :3, :3] = (co.s[:, None, None] * co.Rp).cpu()
    pw[:, :3, 3] = co.Tp.cpu()
    pw[:, 3, 3] = 1
    pair_poses[preds.pairs_within(images)] = pw
    comp = _Component(co.loss, dense_loss, co.init_loss, pair_poses, data.stride, co.iterations)
    return comp, timings


# ----------------------------------------------------------------------------- entry points


def align_pairs(
    preds: PairPredictions,
    imgs: Sequence[torch.Tensor] | None = None,
    config: AlignConfig | None = None,
    **inputs: Unpack[AlignInputs],
) -> AlignResult:
    """:func:`global_align` returning diagnostics (losses, pair similarities, timings) too."""
    cfg = config or AlignConfig()
    shapes, known = validate_inputs(preds, imgs, inputs)
    comps = connected_image_sets(preds)
    main = comps[0]
    if len(comps) > 1:
        left = sorted(k for c in comps[1:] for k in c)
        log.warning(
            f"the pair graph has {len(comps)} connected components; aligning the largest "
            f"({len(main)} images) and marking images {left} as not placed "
            "(use align_components to align every component separately)"
        )
    out = CameraSet.unplaced(preds, shapes, main if len(main) > 1 else ())
    timings: dict[str, float] = {}
    if len(main) == 1:
        _single_image(preds, main[0], known, out)
        nan = float("nan")
        comp = _Component(nan, nan, nan, torch.full((len(preds), 4, 4), nan), 1, 0)
    else:
        comp, timings = _align_component(preds, main, known, cfg, inputs, out)
    scene = assemble_scene(out, imgs, known.depth_masks(inputs.get("masks")), cfg.conf_threshold)
    return AlignResult(
        scene=scene, loss=comp.loss, dense_loss=comp.dense_loss, init_loss=comp.init_loss,
        pair_poses=comp.pair_poses, stride=comp.stride, iterations=comp.iterations, timings=timings,
    )


def global_align(
    preds: PairPredictions,
    imgs: Sequence[torch.Tensor] | None = None,
    config: AlignConfig | None = None,
    **inputs: Unpack[AlignInputs],
) -> Scene:
    """Align pair predictions into one scene: poses, focals and dense depth per image.

    Args:
        preds: pair predictions (ideally symmetrized: both ``(i, j)`` and ``(j, i)``).
        imgs: per image ``(H, W, 3)`` colours in ``[0, 1]`` (grey when ``None``).
        config: :class:`AlignConfig`, every setting (threshold semantics documented there).
        **inputs: known cameras, masks, device and progress: :class:`AlignInputs`.

    Returns:
        A :class:`~pointmap.scene.Scene`. A single image with a self-pair ``(0, 0)`` gives a
        trivial scene (identity pose, Weiszfeld focal, predicted depth). When the pair graph is
        disconnected the largest component is aligned and the other images are returned with
        ``placed = False`` (a warning says which); :func:`align_components` aligns every component.

    Raises:
        GraphError: no pairs, or a single image without a self-pair.
        PointmapError: inconsistent ``imgs`` / ``masks`` / known cameras.
    """
    return align_pairs(preds, imgs, config, **inputs).scene


def align_components(
    preds: PairPredictions,
    imgs: Sequence[torch.Tensor] | None = None,
    config: AlignConfig | None = None,
    **inputs: Unpack[AlignInputs],
) -> list[tuple[list[int], Scene]]:
    """Align every connected component of the pair graph separately.

    Returns:
        ``[(image_indices, scene), ...]``, largest component first; each scene holds only its
        component's images (in the order of ``image_indices``), in its own frame and scale.
        Known cameras given as dicts are re-indexed per component.
    """
    out = []
    for comp in connected_image_sets(preds):
        sub = preds.subset(comp)
        if len(comp) == 1 and (0, 0) not in sub.pairs:
            continue
        kw = dict(inputs)
        for name in ("known_poses", "known_focals", "known_intrinsics", "known_depths", "masks"):
            v = kw.get(name)
            if v is None:
                continue
            if isinstance(v, Mapping):
                kw[name] = {r: v[k] for r, k in enumerate(comp) if k in v}
            else:
                kw[name] = [v[k] for k in comp]
        sub_imgs = None if imgs is None else [imgs[k] for k in comp]
        out.append((comp, global_align(sub, sub_imgs, config, **kw)))  # type: ignore[arg-type]
    return out
