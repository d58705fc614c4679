"""What the alignment solvers share: their keyword inputs (:class:`AlignInputs`, checked by
:func:`validate_inputs`), the connected image sets they align, and the per-image results
(:class:`CameraSet`) they assemble into a :class:`~pointmap.scene.Scene` (:func:`assemble_scene`).
Used by the dense (:mod:`.optimizer`) and the sparse (:mod:`.sparse`) solvers alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import torch

from ..errors import GraphError, PointmapError
from ..geometry.camera import intrinsics_matrix
from ..pairs import connected_components
from ..predictions import PairPredictions
from ..scene import Scene
from .init import KnownCameras

__all__ = ["AlignInputs", "CameraSet", "assemble_scene", "connected_image_sets", "validate_inputs"]


class AlignInputs(TypedDict, total=False):
    """Keyword arguments of :func:`global_align` / :func:`align_pairs` besides the settings.

    Attributes:
        known_poses: ``(N, 4, 4)`` camera-to-world for all images, or ``{index: (4, 4)}`` for
            some; given poses are frozen. Two or more fix the scene's frame and scale; a single
            one fixes the frame only.
        known_focals: ``(N,)`` or ``{index: f}`` (pixels; a pair ``(fx, fy)`` is accepted), frozen.
        known_intrinsics: ``(N, 3, 3)`` or ``{index: (3, 3)}``: focals and principal point, frozen.
        masks: per image ``(H, W)`` bool or ``None``; ``False`` pixels are excluded from the loss
            and from the output masks.
        device: compute device (``'cuda'`` for speed); results are returned on the CPU.
        progress: show tqdm progress bars.
    """

    known_poses: torch.Tensor | Mapping[int, torch.Tensor] | None
    known_focals: torch.Tensor | Mapping[int, float] | None
    known_intrinsics: torch.Tensor | Mapping[int, torch.Tensor] | None
    masks: Sequence[torch.Tensor | None] | None
    device: torch.device | str | None
    progress: bool


def connected_image_sets(preds: PairPredictions) -> list[list[int]]:
    """Connected components of the pair graph (images as nodes), largest first (ties: smallest
    first index); images with no pair form singleton sets."""
    comps = connected_components(preds.pairs, preds.n_images)
    return sorted(comps, key=lambda c: (-len(c), c[0]))


def validate_inputs(
    preds: PairPredictions, imgs: Sequence[torch.Tensor] | None, inputs: AlignInputs
) -> tuple[list[tuple[int, int]], KnownCameras]:
    """Check the inputs shared by the alignment solvers.

    Args:
        preds: pair predictions.
        imgs: per image ``(H, W, 3)`` colours, or ``None``.
        inputs: the :class:`AlignInputs` keyword arguments given.

    Returns:
        Image shapes ``[(H, W), ...]`` (pixels) and the :class:`~pointmap.align.init.KnownCameras`.

    Raises:
        TypeError: an unknown keyword argument.
        GraphError: no pairs.
        PointmapError: ``imgs`` / ``masks`` / known cameras inconsistent with the predictions.
    """
    unknown = set(inputs) - set(AlignInputs.__annotations__)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; "
                        f"accepted: {sorted(AlignInputs.__annotations__)} (settings go in AlignConfig)")
    N = preds.n_images
    if len(preds) == 0 or N == 0:
        raise GraphError("global alignment needs at least one image pair; got an empty pair list")
    shapes = [(int(s[0]), int(s[1])) for s in preds.image_shapes]
    if imgs is not None and len(imgs) != N:
        raise PointmapError(f"imgs has {len(imgs)} images but the predictions have {N}")
    masks = inputs.get("masks")
    if masks is not None:
        if len(masks) != N:
            raise PointmapError(f"masks has {len(masks)} entries but the predictions have {N} images")
        for k, m in enumerate(masks):
            if m is not None and tuple(m.shape) != shapes[k]:
                raise PointmapError(f"masks[{k}] has shape {tuple(m.shape)}, expected {shapes[k]}")
    known = KnownCameras.from_inputs(
        shapes, inputs.get("known_poses"), inputs.get("known_focals"), inputs.get("known_intrinsics")
    )
    return shapes, known


@dataclass
class CameraSet:
    """Per-image results of a solver being assembled (CPU): camera-to-world ``poses (N, 4, 4)``,
    intrinsics ``Ks (N, 3, 3)`` (pixels), ``depths`` and ``confs``: per image ``(H, W)`` z-depth
    (scene units) and raw confidence, ``placed (N,)`` bool."""

    poses: torch.Tensor
    Ks: torch.Tensor
    depths: list[torch.Tensor]
    confs: list[torch.Tensor]
    placed: torch.Tensor

    @classmethod
    def unplaced(cls, preds: PairPredictions, shapes: list[tuple[int, int]],
                 aligned: Sequence[int] = ()) -> "CameraSet":
        """Identity poses, ``max(H, W)`` focals; each image's own confidences and predicted depth
        (in its own frame), so that unplaced images still carry them. Images in ``aligned`` get
        theirs from alignment: their predictions are not read here."""
        N = len(shapes)
        Ks = torch.stack([
            intrinsics_matrix(torch.tensor(float(max(h, w))), torch.tensor([w / 2, h / 2])) for h, w in shapes
        ])
        skip = set(aligned)
        zero = torch.zeros(())  # aligned images get their maps later: no memory for them here
        depths = [zero.expand(h, w) if k in skip else torch.zeros(h, w) for k, (h, w) in enumerate(shapes)]
        confs = [zero.expand(h, w) if k in skip else torch.zeros(h, w) for k, (h, w) in enumerate(shapes)]
        for e, (i, j) in enumerate(preds.pairs):
            if i not in skip:
                confs[i] = torch.maximum(confs[i], preds.conf_1[e].float())
                if depths[i].abs().sum() == 0:
                    depths[i] = preds.pts3d_1[e][..., 2].float().clone()
            if j not in skip:
                confs[j] = torch.maximum(confs[j], preds.conf_2[e].float())
        return cls(torch.eye(4).repeat(N, 1, 1), Ks, depths, confs, torch.zeros(N, dtype=torch.bool))


def assemble_scene(
    out: CameraSet, imgs: Sequence[torch.Tensor] | None, masks: Sequence[torch.Tensor | None] | None,
    conf_threshold: float,
) -> Scene:
    """The :class:`~pointmap.scene.Scene` of a solver's results ``out``: colours ``imgs`` (per image
    ``(H, W, 3)`` in ``[0, 1]``; grey when ``None``); output masks are the pixels of placed images
    with confidence above ``conf_threshold`` (raw) and within ``masks`` (per image ``(H, W)`` bool
    or ``None``)."""
    out_masks = []
    for k, conf in enumerate(out.confs):
        m = (conf > conf_threshold) & bool(out.placed[k])
        if masks is not None and masks[k] is not None:
            m = m & masks[k].bool().cpu()
        out_masks.append(m)
    if imgs is None:  # grey, as views of one pixel (no memory per image)
        images = [torch.full((1, 1, 3), 0.5).expand(*d.shape, 3) for d in out.depths]
    else:
        images = [torch.as_tensor(im, dtype=torch.float32).cpu() for im in imgs]
    return Scene(
        imgs=images, poses=out.poses, intrinsics=out.Ks, depths=out.depths, confidence=out.confs,
        masks=out_masks, conf_threshold=conf_threshold, placed=out.placed,
    )
