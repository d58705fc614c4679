"""`ImageMeta`: where a network-resolution image came from, and the mapping of pixels, intrinsics
and per-pixel maps between the original image and the network image.

Pixel convention used throughout pointmap: pixel centres sit at integer coordinates (OpenCV), so the
pixel ``(u, v)`` covers ``[u - 0.5, u + 0.5] x [v - 0.5, v + 0.5]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from .errors import InputError

__all__ = ["ImageMeta", "KMatrix"]

KMatrix = TypeVar("KMatrix", torch.Tensor, np.ndarray)
"""Intrinsics as a tensor or an array: the mapping methods return the kind they are given."""


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

    def _pixel_map(self) -> tuple[float, float, float, float]:
        """``(sx, sy, ox, oy)`` with original pixel ``= (sx u + ox, sy v + oy)`` of network pixel
        ``(u, v)`` (crop, then resize about pixel centres: ``c' = (c + left + 0.5) s - 0.5``)."""
        sx, sy = self.scale_xy
        left, top = self.crop_box[0], self.crop_box[1]
        return sx, sy, (left + 0.5) * sx - 0.5, (top + 0.5) * sy - 0.5

    def intrinsics_to_original(self, K: KMatrix) -> KMatrix:
        """Map intrinsics ``(..., 3, 3)`` of the network image to the original image (tensor or
        array in, the same kind out).

        The crop shifts the principal point; the resize scales focal, skew and principal point
        about the pixel-centre convention (``c' = (c + left + 0.5) * s - 0.5``).
        """
        sx, sy, ox, oy = self._pixel_map()
        return _affine_intrinsics(K, sx, sy, ox, oy)

    def intrinsics_to_network(self, K: KMatrix) -> KMatrix:
        """Map intrinsics ``(..., 3, 3)`` of the original image to the network image: the inverse
        of :meth:`intrinsics_to_original` (tensor or array in, the same kind out)."""
        sx, sy, ox, oy = self._pixel_map()
        return _affine_intrinsics(K, 1 / sx, 1 / sy, -ox / sx, -oy / sy)

    def map_to_network(self, image: torch.Tensor) -> torch.Tensor:
        """Sample a per-pixel map ``(H0, W0, ...)`` of the original image at the network pixels
        (nearest original pixel to each network pixel centre, via :meth:`to_original_pixels`);
        returns ``(H, W, ...)``. Used for masks and other maps given at original resolution."""
        W0, H0 = self.original_size
        if tuple(image.shape[:2]) != (H0, W0):
            raise InputError(f"map has shape {tuple(image.shape[:2])}, expected (H, W) = {(H0, W0)}")
        W, H = self.size
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                              indexing="ij")
        uv = self.to_original_pixels(torch.stack([u, v], -1))
        x = uv[..., 0].round().long().clamp(0, W0 - 1)
        y = uv[..., 1].round().long().clamp(0, H0 - 1)
        return image[y, x]


def _affine_intrinsics(K: KMatrix, sx: float, sy: float, ox: float, oy: float) -> KMatrix:
    """Intrinsics ``(..., 3, 3)`` after the pixel map ``(u, v) -> (sx u + ox, sy v + oy)``."""
    out = K.clone() if isinstance(K, torch.Tensor) else np.array(K, dtype=np.float64)
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 0, 1] = K[..., 0, 1] * sx
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 0, 2] = K[..., 0, 2] * sx + ox
    out[..., 1, 2] = K[..., 1, 2] * sy + oy
    return out
