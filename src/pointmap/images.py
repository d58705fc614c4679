"""Image loading and the reference DUSt3R preprocessing.

Every loaded image remembers its original size and the resize/crop applied, so results computed at
the network resolution can be mapped back to original pixels (see :class:`ImageMeta`).

Pixel convention used throughout pointmap: pixel centres sit at integer coordinates (OpenCV), so the
pixel ``(u, v)`` covers ``[u - 0.5, u + 0.5] x [v - 0.5, v + 0.5]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ImageMeta", "LoadedImage"]


@dataclass(frozen=True)
class ImageMeta:
    """Where a network-resolution image came from.

    Attributes:
        path: source file (``None`` for in-memory images).
        original_size: ``(W, H)`` of the source after EXIF orientation.
        resized_size: ``(W, H)`` after the resize, before the crop.
        crop_box: ``(left, top, right, bottom)`` of the crop, in resized pixels (integers).
    """

    path: str | None
    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)`` of the network input."""
        left, top, right, bottom = self.crop_box
        return (right - left, bottom - top)

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Original pixels per resized pixel, along x and y."""
        return (
            self.original_size[0] / self.resized_size[0],
            self.original_size[1] / self.resized_size[1],
        )

    def to_original_pixels(self, uv: torch.Tensor) -> torch.Tensor:
        """Map network pixel coordinates ``(..., 2)`` (u, v) to original-image pixel coordinates."""
        sx, sy = self.scale_xy
        left, top = self.crop_box[0], self.crop_box[1]
        out = uv.clone().to(torch.float64 if uv.dtype == torch.float64 else torch.float32)
        out[..., 0] = (uv[..., 0] + left + 0.5) * sx - 0.5
        out[..., 1] = (uv[..., 1] + top + 0.5) * sy - 0.5
        return out

    def intrinsics_to_original(self, K: torch.Tensor) -> torch.Tensor:
        """Map intrinsics ``(..., 3, 3)`` of the network image to the original image.

        The crop shifts the principal point; the resize scales focal and principal point about the
        pixel-centre convention (``c' = (c + 0.5) * s - 0.5``).
        """
        sx, sy = self.scale_xy
        left, top = self.crop_box[0], self.crop_box[1]
        out = K.clone()
        out[..., 0, 0] = K[..., 0, 0] * sx
        out[..., 0, 1] = K[..., 0, 1] * sx
        out[..., 1, 1] = K[..., 1, 1] * sy
        out[..., 0, 2] = (K[..., 0, 2] + left + 0.5) * sx - 0.5
        out[..., 1, 2] = (K[..., 1, 2] + top + 0.5) * sy - 0.5
        return out


@dataclass
class LoadedImage:
    """One preprocessed image.

    Attributes:
        img: ``(3, H, W)`` float32 in ``[-1, 1]``.
        true_shape: ``(H, W)``.
        meta: provenance, for mapping back to original pixels.
    """

    img: torch.Tensor
    true_shape: tuple[int, int]
    meta: ImageMeta

    @property
    def rgb(self) -> torch.Tensor:
        """``(H, W, 3)`` float32 colours in ``[0, 1]``."""
        return (self.img.permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1)
