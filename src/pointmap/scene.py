"""`Scene`: a reconstruction in one world frame, and its mapping back to original image pixels.

Conventions (used by every exporter):

* poses are camera-to-world ``(N, 4, 4)`` in OpenCV axes (x right, y down, z forward);
* intrinsics are pinhole ``(N, 3, 3)`` with pixel centres at integer coordinates;
* ``confidence`` holds the network's raw confidence (``1 + exp(x)``, always ``> 1``);
  ``masks`` are ``confidence > conf_threshold`` (raw value, the one threshold semantics of pointmap),
  and-ed with any user mask / sky mask / clean-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .errors import InputError
from .geometry.camera import depth_to_world
from .images import ImageMeta

__all__ = ["LOW_IMAGE_KEPT_FRACTION", "LOW_KEPT_FRACTION", "Scene"]

LOW_KEPT_FRACTION = 0.1
"""Below this :meth:`Scene.kept_fraction` the command line and the app say that few points pass
the confidence threshold and that a lower one keeps more."""

LOW_IMAGE_KEPT_FRACTION = 0.01
"""An image keeping fewer than this fraction of its pixels as points is named in a warning and
counted in the command line's summary (it contributes next to nothing to the exports)."""


@dataclass
class Scene:
    """A reconstructed scene.

    Attributes:
        imgs: per image ``(H, W, 3)`` float colours in ``[0, 1]``.
        poses: ``(N, 4, 4)`` camera-to-world, OpenCV axes.
        intrinsics: ``(N, 3, 3)`` pinhole intrinsics at the network resolution.
        depths: per image ``(H, W)`` z-depth in scene units.
        confidence: per image ``(H, W)`` raw confidence.
        masks: per image ``(H, W)`` bool, valid points.
        conf_threshold: raw confidence threshold that produced ``masks``.
        placed: ``(N,)`` bool; ``False`` for images alignment could not place (their pose is
            meaningless and their masks are all ``False``).
        metas: per image :class:`ImageMeta` (or ``None``), for mapping back to original pixels.
        names: per image display name.
        units: length unit of depths and translations: ``"metres"`` when the network is metric
            (MASt3R) and the scene was kept at its scale, else ``"scene"`` (an arbitrary scale).
        user_masks: per image ``(H, W)`` bool mask the user gave (or ``None``); ``masks`` keep
            them at every threshold (:meth:`with_threshold`). ``None``: no user masks.
    """

    imgs: list[torch.Tensor]
    poses: torch.Tensor
    intrinsics: torch.Tensor
    depths: list[torch.Tensor]
    confidence: list[torch.Tensor]
    masks: list[torch.Tensor]
    conf_threshold: float = 3.0
    placed: torch.Tensor | None = None
    metas: list[ImageMeta | None] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    units: str = "scene"
    user_masks: list[torch.Tensor | None] | None = None

    def __post_init__(self) -> None:
        n = self.poses.shape[0]
        if self.placed is None:
            self.placed = torch.ones(n, dtype=torch.bool)
        if not self.metas:
            self.metas = [None] * n
        if not self.names:
            self.names = [f"image_{k:04d}" for k in range(n)]
        for name in ("imgs", "depths", "confidence", "masks", "metas", "names"):
            if len(getattr(self, name)) != n:
                raise InputError(f"Scene.{name} has {len(getattr(self, name))} entries for {n} poses")
        if self.user_masks is not None and len(self.user_masks) != n:
            raise InputError(f"Scene.user_masks has {len(self.user_masks)} entries for {n} poses")

    def __len__(self) -> int:
        return self.poses.shape[0]

    @property
    def focals(self) -> torch.Tensor:
        """``(N,)`` focal lengths in pixels (mean of fx, fy)."""
        return 0.5 * (self.intrinsics[:, 0, 0] + self.intrinsics[:, 1, 1])

    @property
    def pts3d(self) -> list[torch.Tensor]:
        """Per image ``(H, W, 3)`` world points."""
        return [
            depth_to_world(d, K, P) for d, K, P in zip(self.depths, self.intrinsics, self.poses)
        ]

    def rescaled(self, factor: float, units: str | None = None) -> "Scene":
        """A copy with depths and camera translations multiplied by ``factor`` (> 0); ``units``
        names the new unit (default: unchanged)."""
        if not factor > 0:
            raise ValueError(f"scale factor must be positive, not {factor}")
        poses = self.poses.clone()
        poses[:, :3, 3] *= factor
        return replace(self, poses=poses, depths=[d * factor for d in self.depths],
                       units=self.units if units is None else units)

    def kept_fraction(self) -> float:
        """Fraction of all pixels (every image) that the masks keep; 0 for an empty scene."""
        total = sum(m.numel() for m in self.masks)
        return sum(int(m.sum()) for m in self.masks) / total if total else 0.0

    def kept_counts(self) -> list[int]:
        """Points each image keeps: its mask's pixel count (0 for an image that is not placed)."""
        return [int(m.sum()) if bool(p) else 0 for m, p in zip(self.masks, self.placed.tolist())]

    def sparse_images(self, fraction: float | None = None) -> list[int]:
        """Indices of images that keep fewer than ``fraction`` (default
        :data:`LOW_IMAGE_KEPT_FRACTION`) of their pixels as points, placed or not."""
        f = LOW_IMAGE_KEPT_FRACTION if fraction is None else fraction
        return [k for k, (n, m) in enumerate(zip(self.kept_counts(), self.masks)) if n < f * m.numel()]

    def with_threshold(self, conf_threshold: float) -> "Scene":
        """A copy whose masks are recomputed as ``confidence > conf_threshold`` (placed images
        only), and-ed with the :attr:`user_masks` (which stay out at every threshold)."""
        users = self.user_masks or [None] * len(self)
        masks = [
            (c > conf_threshold) & bool(p) & (True if u is None else u)
            for c, p, u in zip(self.confidence, self.placed.tolist(), users)
        ]
        return replace(self, masks=masks, conf_threshold=conf_threshold)

    def first(self, n: int) -> "Scene":
        """A copy holding the first ``n`` images only."""
        return replace(
            self, imgs=self.imgs[:n], poses=self.poses[:n], intrinsics=self.intrinsics[:n],
            depths=self.depths[:n], confidence=self.confidence[:n], masks=self.masks[:n],
            placed=self.placed[:n], metas=self.metas[:n], names=self.names[:n],
            user_masks=None if self.user_masks is None else self.user_masks[:n],
        )

    def to_original(self) -> "Scene":
        """The scene at original image resolution.

        Intrinsics are rescaled and shifted for the crop; depth, confidence and masks are resampled
        (nearest) onto the original pixel grid, with pixels outside the crop masked out; colours
        come from the network image (use the original files for full-resolution colour).
        Images without a :class:`ImageMeta` are returned unchanged.
        """
        Ks, depths, confs, masks, imgs, users = [], [], [], [], [], []
        user_masks = self.user_masks or [None] * len(self)
        for k in range(len(self)):
            meta = self.metas[k]
            if meta is None:
                Ks.append(self.intrinsics[k])
                depths.append(self.depths[k]); confs.append(self.confidence[k])
                masks.append(self.masks[k]); imgs.append(self.imgs[k]); users.append(user_masks[k])
                continue
            Ks.append(meta.intrinsics_to_original(self.intrinsics[k]))
            W0, H0 = meta.original_size
            sx, sy = meta.scale_xy
            left, top = meta.crop_box[0], meta.crop_box[1]
            H, W = self.depths[k].shape
            # original pixel centre -> network pixel index (nearest)
            u = torch.floor((torch.arange(W0, dtype=torch.float64) + 0.5) / sx - left).long()
            v = torch.floor((torch.arange(H0, dtype=torch.float64) + 0.5) / sy - top).long()
            inside = ((v >= 0) & (v < H))[:, None] & ((u >= 0) & (u < W))[None, :]
            uu, vv = u.clamp(0, W - 1), v.clamp(0, H - 1)
            pick = lambda t: t[vv][:, uu]  # noqa: E731
            depths.append(torch.where(inside, pick(self.depths[k]), torch.zeros(())))
            confs.append(torch.where(inside, pick(self.confidence[k]), torch.zeros(())))
            masks.append(pick(self.masks[k]) & inside)
            imgs.append(pick(self.imgs[k]))
            users.append(None if user_masks[k] is None else pick(user_masks[k]) & inside)
        return replace(
            self, imgs=imgs, intrinsics=torch.stack(Ks), depths=depths, confidence=confs,
            masks=masks, metas=[None] * len(self), user_masks=users if self.user_masks is not None else None,
        )
