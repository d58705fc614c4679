"""What the alignment solvers share: their keyword inputs (:class:`AlignInputs`, checked by
:func:`validate_inputs`), the connected image sets they align, and the per-image results
(:class:`CameraSet`) they assemble into a :class:`~pointmap.scene.Scene` (:func:`assemble_scene`).
The user's known cameras and depths (:class:`KnownCameras`) are validated here. Used by the dense (:mod:`.optimizer`) and the sparse (:mod:`.sparse`) solvers alike."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import scipy.sparse
import torch
from scipy.sparse.csgraph import minimum_spanning_tree

from ..errors import GraphError, PointmapError
from ..geometry.camera import intrinsics_matrix, normalize_pixels
from ..pairs import connected_components
from ..predictions import PairPredictions
from ..scene import Scene

log = logging.getLogger(__name__)

__all__ = [
    "AlignInputs", "CameraSet", "KnownCameras", "assemble_scene", "connected_image_sets",
    "maximum_spanning_tree", "tree_order", "validate_inputs",
]


def _given(value, n: int, name: str) -> list[tuple[int, torch.Tensor]]:
    """The ``(index, float32 tensor)`` entries of ``None`` / a sequence / ``{idx: value}`` of
    per-image values (``None`` entries skipped; an index out of ``[0, n)`` is refused)."""
    if value is None:
        return []
    out = []
    for k, v in (value.items() if isinstance(value, Mapping) else enumerate(value)):
        k = int(k)
        if not 0 <= k < n:
            raise PointmapError(f"{name}: image index {k} out of range [0, {n})")
        if v is not None:
            out.append((k, torch.as_tensor(v, dtype=torch.float32)))
    return out


def _per_image(value, n: int, name: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise ``None`` / tensor ``(N, *shape)`` / ``{idx: value}`` to ``(values, mask)``."""
    vals = torch.zeros((n,) + shape)
    mask = torch.zeros(n, dtype=torch.bool)
    for k, v in _given(value, n, name):
        if v.numel() == 1 and shape == (2,):
            v = v.reshape(1).expand(2)
        if tuple(v.shape) != shape:
            raise PointmapError(f"{name}[{k}] has shape {tuple(v.shape)}, expected {shape}")
        if not torch.isfinite(v).all():
            raise PointmapError(f"{name}[{k}] is not finite")
        vals[k] = v
        mask[k] = True
    return vals, mask


def _valid_depth(d: torch.Tensor) -> torch.Tensor:
    """The valid pixels of a depth map: finite and positive."""
    return torch.isfinite(d) & (d > 0)


def _known_depths(value, shapes: Sequence[tuple[int, int]], pose_mask: torch.Tensor, focal_mask: torch.Tensor
                  ) -> list[torch.Tensor | None]:
    """Normalise ``None`` / a sequence / ``{idx: (H, W)}`` of known depths to one entry per image
    (``(H, W)`` float32 as given; ``None`` where not given)."""
    out: list[torch.Tensor | None] = [None] * len(shapes)
    for k, d in _given(value, len(shapes), "known_depths"):
        d = d.cpu()
        if tuple(d.shape) != shapes[k]:
            raise PointmapError(f"known_depths[{k}] has shape {tuple(d.shape)}, expected {shapes[k]}")
        if not (pose_mask[k] and focal_mask[k]):
            raise PointmapError(f"known_depths[{k}] needs the image's pose and focal known too "
                                "(known_poses and known_focals or known_intrinsics)")
        if not bool(_valid_depth(d).any()):
            raise PointmapError(f"known_depths[{k}] has no valid (finite, positive) depth")
        out[k] = d
    return out


@dataclass
class KnownCameras:
    """User-provided cameras; ``*_mask (N,)`` says which entries are given (and frozen).

    Attributes:
        poses: ``(N, 4, 4)`` camera-to-world.
        focals: ``(N, 2)`` ``(fx, fy)`` in pixels.
        pp: ``(N, 2)`` principal points in pixels (defaults ``(W/2, H/2)``).
        skew: ``(N,)`` skews ``K[0, 1]`` of known intrinsics (pixels; 0 otherwise).
        depths: per image its known ``(H, W)`` z-depth (scene units; valid where finite and
            positive), or ``None``; given only with the image's pose and focal, the image's world points are
            then constants of the alignment.
    """

    poses: torch.Tensor
    pose_mask: torch.Tensor
    focals: torch.Tensor
    focal_mask: torch.Tensor
    pp: torch.Tensor
    skew: torch.Tensor
    depths: list[torch.Tensor | None] = field(default_factory=list)

    @property
    def depth_mask(self) -> torch.Tensor:
        """``(N,)`` bool: the images whose depth is given."""
        n = len(self.pose_mask)
        return torch.tensor([k < len(self.depths) and self.depths[k] is not None for k in range(n)],
                            dtype=torch.bool)

    @property
    def n_known_poses(self) -> int:
        """How many poses are given."""
        return int(self.pose_mask.sum())

    @classmethod
    def from_inputs(
        cls, shapes: Sequence[tuple[int, int]], known_poses=None, known_focals=None,
        known_intrinsics=None, known_depths=None,
    ) -> "KnownCameras":
        """Validate the user's known cameras and depths of ``len(shapes)`` images (formats of
        :class:`pointmap.align.AlignInputs`); the default principal point is ``(W/2, H/2)``.

        Raises:
            PointmapError: an index out of range, a wrong shape, a non-finite value, a
                non-positive focal, a pose that is not rigid, a known depth without the image's
                pose and focal or without any valid pixel.
        """
        n = len(shapes)
        poses, pmask = _per_image(known_poses, n, "known_poses", (4, 4))
        focals, fmask = _per_image(known_focals, n, "known_focals", (2,))
        pp = torch.tensor([[w / 2, h / 2] for h, w in shapes], dtype=torch.float32)
        skew = torch.zeros(n)
        if known_intrinsics is not None:
            K, kmask = _per_image(known_intrinsics, n, "known_intrinsics", (3, 3))
            focals[kmask] = torch.stack([K[kmask, 0, 0], K[kmask, 1, 1]], -1)
            pp[kmask] = K[kmask, :2, 2]
            skew[kmask] = K[kmask, 0, 1]
            fmask = fmask | kmask
        if (focals[fmask] <= 0).any():
            raise PointmapError("known focals must be positive")
        for k in torch.nonzero(pmask).flatten().tolist():
            R = poses[k, :3, :3]
            if not torch.allclose(R @ R.T, torch.eye(3), atol=1e-3) or torch.det(R) < 0:
                raise PointmapError(f"known_poses[{k}] is not a rigid camera-to-world pose")
        depths = _known_depths(known_depths, shapes, pmask, fmask)
        return cls(poses=poses, pose_mask=pmask, focals=focals, focal_mask=fmask, pp=pp, skew=skew, depths=depths)

    def select(self, images: Sequence[int]) -> "KnownCameras":
        """The entries of ``images``, in that order."""
        idx = list(images)
        return KnownCameras(
            poses=self.poses[idx], pose_mask=self.pose_mask[idx], focals=self.focals[idx],
            focal_mask=self.focal_mask[idx], pp=self.pp[idx], skew=self.skew[idx],
            depths=[self.depths[k] if k < len(self.depths) else None for k in idx],
        )

    def sampled_depths(self, idx: torch.Tensor, uv: torch.Tensor, valid: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The known depths at sampled pixels: ``idx (N, n)`` raveled indices (row-major), ``uv
        (N, n, 2)`` their coordinates (pixels) and ``valid (N, n)`` (``False``: padding), on their
        device. Returns ``(depth (N, n), points (N, n, 3))``: z-depth and world points (known pose
        and intrinsics), NaN where the image's depth is not given or invalid."""
        N, n = idx.shape
        depth = torch.full((N, n), float("nan"), device=idx.device)
        for k, d in enumerate(self.depths):
            if d is not None:
                dk = d.to(idx.device).reshape(-1)[idx[k]]
                depth[k] = torch.where(valid[k] & _valid_depth(dk), dk, float("nan"))
        f, pp, sk = self.focals.to(idx.device), self.pp.to(idx.device), self.skew.to(idx.device)
        xy = normalize_pixels(uv, f[:, None, 0], f[:, None, 1], pp[:, None], sk[:, None])
        cam = torch.cat([xy, torch.ones_like(xy[..., :1])], -1) * depth[..., None]
        P = self.poses.to(idx.device)
        return depth, cam @ P[:, :3, :3].transpose(1, 2) + P[:, None, :3, 3]

    def depth_masks(self, masks: Sequence[torch.Tensor | None] | None) -> list[torch.Tensor | None] | None:
        """The user's ``masks`` (per image ``(H, W)`` bool or ``None``) with the invalid pixels of
        the known depths excluded (``masks`` itself when no depth is given)."""
        if not any(d is not None for d in self.depths):
            return masks
        out = list(masks) if masks is not None else [None] * len(self.depths)
        for k, d in enumerate(self.depths):
            if d is not None:
                ok = _valid_depth(d)
                out[k] = ok if out[k] is None else out[k].bool().cpu() & ok
        return out

    def intrinsics(self, k: int) -> torch.Tensor:
        """Image ``k``'s known intrinsics ``(3, 3)`` exactly as given (skew included)."""
        K = intrinsics_matrix(self.focals[k], self.pp[k])
        K[0, 1] = self.skew[k]
        return K

    def init_priors(self) -> dict[str, torch.Tensor]:
        """What :func:`~pointmap.align.init.mst_init` takes: ``pp (N, 2)``, ``focals (N,)`` (the
        mean of a known ``(fx, fy)``, NaN where unknown) and ``poses (N, 4, 4)`` (NaN where
        unknown)."""
        nan = torch.tensor(float("nan"))
        return {
            "pp": self.pp,
            "focals": torch.where(self.focal_mask, self.focals.mean(-1), nan),
            "poses": torch.where(self.pose_mask[:, None, None], self.poses, nan),
        }


class AlignInputs(TypedDict, total=False):
    """Keyword arguments of :func:`global_align` / :func:`align_pairs` besides the settings.

    Attributes:
        known_poses: ``(N, 4, 4)`` camera-to-world for all images, or ``{index: (4, 4)}`` for
            some; given poses are frozen. Two or more fix the scene's frame and scale; a single
            one fixes the frame only.
        known_focals: ``(N,)`` or ``{index: f}`` (pixels; a pair ``(fx, fy)`` is accepted), frozen.
        known_intrinsics: ``(N, 3, 3)`` or ``{index: (3, 3)}``: focals and principal point, frozen.
        known_depths: per image ``(H, W)`` z-depth (scene units; NaN or ``<= 0``: invalid) or
            ``None``, or ``{index: (H, W)}``: held fixed, only for images whose pose and focal are
            known too (their world points are then constants: only the pairs' similarities and
            the other images move against them; invalid pixels are left out of the loss). The
            result reports them as given. Dense (``global_align``) solver only.
        masks: per image ``(H, W)`` bool or ``None``; ``False`` pixels are excluded from the loss
            and from the output masks.
        device: compute device (``'cuda'`` for speed); results are returned on the CPU.
        progress: show tqdm progress bars.
    """

    known_poses: torch.Tensor | Mapping[int, torch.Tensor] | None
    known_focals: torch.Tensor | Mapping[int, float] | None
    known_intrinsics: torch.Tensor | Mapping[int, torch.Tensor] | None
    known_depths: Sequence[torch.Tensor | None] | Mapping[int, torch.Tensor] | None
    masks: Sequence[torch.Tensor | None] | None
    device: torch.device | str | None
    progress: bool


def connected_image_sets(preds: PairPredictions) -> list[list[int]]:
    """Connected components of the pair graph (images as nodes), largest first (ties: smallest
    first index); images with no pair form singleton sets."""
    comps = connected_components(preds.pairs, preds.n_images)
    return sorted(comps, key=lambda c: (-len(c), c[0]))


def maximum_spanning_tree(n: int, ei: np.ndarray, ej: np.ndarray, score: np.ndarray
                          ) -> list[tuple[float, int, int]]:
    """Maximum-score spanning forest (scipy) of the graph of ``n`` nodes with edges ``(ei[e],
    ej[e])`` (int arrays, self-loops ignored) of positive ``score[e]``: its edges ``(score, i,
    j)``, by increasing score."""
    keep = ei != ej
    M = scipy.sparse.coo_matrix((-score[keep], (ei[keep], ej[keep])), shape=(n, n)).tocsr()
    T = minimum_spanning_tree(M).tocoo()
    return sorted((-float(d), int(r), int(c)) for d, r, c in zip(T.data, T.row, T.col))


def tree_order(tree: Sequence[tuple[float, int, int]], root: int) -> list[tuple[int, int]]:
    """The edges of a spanning ``tree`` (as :func:`maximum_spanning_tree` gives them) as
    ``(parent, child)``, breadth first from ``root``: every parent comes before its children."""
    nbrs: dict[int, list[int]] = {}
    for _, a, b in sorted(tree, reverse=True):
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    order, seen, queue = [], {root}, [root]
    for node in queue:
        for child in nbrs.get(node, []):
            if child not in seen:
                seen.add(child)
                queue.append(child)
                order.append((node, child))
    return order


def validate_inputs(
    preds: PairPredictions, imgs: Sequence[torch.Tensor] | None, inputs: AlignInputs
) -> tuple[list[tuple[int, int]], KnownCameras]:
    """Check the inputs shared by the alignment solvers.

    Args:
        preds: pair predictions.
        imgs: per image ``(H, W, 3)`` colours, or ``None``.
        inputs: the :class:`AlignInputs` keyword arguments given.

    Returns:
        Image shapes ``[(H, W), ...]`` (pixels) and the :class:`KnownCameras`.

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
        shapes, inputs.get("known_poses"), inputs.get("known_focals"), inputs.get("known_intrinsics"),
        inputs.get("known_depths"),
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

    def fill(self, k: int, R: torch.Tensor, C: torch.Tensor, K: torch.Tensor, depth: torch.Tensor,
             conf: torch.Tensor, known: KnownCameras) -> None:
        """Image ``k`` placed by a solver: rotation ``R (3, 3)`` and centre ``C (3,)`` (camera to
        world), intrinsics ``K (3, 3)`` (pixels), z-depth and raw confidence ``(H, W)``. Known
        poses and intrinsics are reported exactly as the user gave them."""
        self.poses[k] = known.poses[k] if known.pose_mask[k] else torch.eye(4)
        if not known.pose_mask[k]:
            self.poses[k, :3, :3], self.poses[k, :3, 3] = R.float().cpu(), C.float().cpu()
        self.Ks[k] = known.intrinsics(k) if known.focal_mask[k] else K.float().cpu()
        self.depths[k] = depth.float().cpu()
        self.confs[k] = conf.cpu()
        self.placed[k] = True


def assemble_scene(
    out: CameraSet, imgs: Sequence[torch.Tensor] | None, masks: Sequence[torch.Tensor | None] | None,
    conf_threshold: float,
) -> Scene:
    """The :class:`~pointmap.scene.Scene` of a solver's results ``out``: colours ``imgs`` (per image
    ``(H, W, 3)`` in ``[0, 1]``; grey when ``None``); output masks are the pixels of placed images
    with confidence above ``conf_threshold`` (raw) and within ``masks`` (per image ``(H, W)`` bool
    or ``None``). An image whose camera came out non-finite (degenerate predictions) is left
    unplaced, with a warning."""
    bad = out.placed & ~(torch.isfinite(out.poses).all(-1).all(-1) & torch.isfinite(out.Ks).all(-1).all(-1))
    if bool(bad.any()):
        log.warning(f"{int(bad.sum())} image(s) got a non-finite camera from the alignment (degenerate "
                    f"predictions) and are left unplaced: {torch.nonzero(bad).flatten().tolist()[:10]}")
        out.placed = out.placed & ~bad
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
