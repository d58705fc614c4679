"""Colour jitter of training images (torchvision-like brightness/contrast/saturation/hue, pure torch)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ColorJitter", "rgb_to_hsv", "hsv_to_rgb"]



def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = rgb.unbind(0)
    maxc, _ = rgb.max(dim=0)
    minc, _ = rgb.min(dim=0)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    d = delta.clamp(min=1e-12)
    h = torch.where(maxc == r, ((g - b) / d) % 6,
                    torch.where(maxc == g, (b - r) / d + 2, (r - g) / d + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h)) % 1.0
    return torch.stack([h, s, maxc])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: ``(3, H, W)`` HSV in [0, 1] -> RGB in [0, 1]."""
    h, s, v = hsv.unbind(0)
    h6 = (h % 1.0) * 6
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    table = torch.stack([
        torch.stack([v, q, p, p, t, v]),
        torch.stack([t, v, v, q, p, p]),
        torch.stack([p, p, t, v, v, q]),
    ])  # (3, 6, H, W)
    return table.gather(1, i[None, None].expand(3, 1, *i.shape)).squeeze(1)


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    return (0.2989 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None]


class ColorJitter:
    """Random brightness/contrast/saturation/hue jitter in a random order (like torchvision's).

    Factors: brightness, contrast, saturation uniform in ``[1 - x, 1 + x]``; hue shift uniform in
    ``[-hue, hue]`` turns. The reference uses ``(0.5, 0.5, 0.5, 0.1)``.
    """

    def __init__(self, brightness: float = 0.5, contrast: float = 0.5, saturation: float = 0.5,
                 hue: float = 0.1) -> None:
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], not {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    @staticmethod
    def adjust(img: torch.Tensor, op: str, factor: float) -> torch.Tensor:
        """Apply one adjustment to ``img`` ``(3, H, W)`` in [0, 1] (result clamped to [0, 1])."""
        if op == "brightness":
            return (img * factor).clamp(0, 1)
        if op == "contrast":
            mean = _gray(img).mean()
            return (factor * img + (1 - factor) * mean).clamp(0, 1)
        if op == "saturation":
            return (factor * img + (1 - factor) * _gray(img)).clamp(0, 1)
        if op == "hue":
            hsv = rgb_to_hsv(img)
            hsv = torch.stack([(hsv[0] + factor) % 1.0, hsv[1], hsv[2]])
            return hsv_to_rgb(hsv).clamp(0, 1)
        raise ValueError(f"unknown colour adjustment {op!r}")

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Jitter ``img`` ``(3, H, W)`` in [0, 1] with draws from ``rng``."""
        order = rng.permutation(4)
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        s = rng.uniform(1 - self.saturation, 1 + self.saturation)
        h = rng.uniform(-self.hue, self.hue)
        ops = [("brightness", b), ("contrast", c), ("saturation", s), ("hue", h)]
        for k in order:
            op, f = ops[k]
            img = self.adjust(img, op, float(f))
        return img

