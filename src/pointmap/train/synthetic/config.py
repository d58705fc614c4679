"""Settings of the synthetic data engine (:class:`SyntheticConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...errors import PointmapError
from .layouts import LAYOUTS

__all__ = ["SyntheticConfig"]


@dataclass
class SyntheticConfig:
    """Settings of the synthetic data engine.

    Attributes:
        resolution: ``(W, H)`` in pixels, or a list of them (aspect-ratio buckets; one per batch).
        seed: base seed; together with ``split`` and the sample index it fixes every sample.
        split: ``"train"`` or ``"val"`` (disjoint scene ids).
        layouts: sampling weight of each layout (keys of ``LAYOUTS``).
        n_views: cameras per scene trajectory; the pair is picked among them.
        fov_range: horizontal field of view range in degrees.
        per_view_fov_prob: probability that each view draws its own FOV (else one per scene).
        baseline_range: trajectory span as a fraction of the distance to the looked-at point
            (log-uniform), e.g. ``(0.05, 0.8)``: narrow to wide baselines.
        min_covisibility: minimum fraction of each view's valid pixels seen (unoccluded) by the other.
        covis_width: width in pixels of the low-resolution render used for the co-visibility check.
        min_valid_fraction: minimum fraction of pixels with geometry (not sky) per view.
        max_attempts: scenes/trajectories tried per sample before taking the best pair found.
        shadows: cast shadow rays.
        photo_prob: probability that a material uses a photo texture (when photos are available).
        photo_paths: extra photographs to crop textures from.
        n_photo_textures: photo crops in the bank (cycling through the photos); raise it with
            many ``photo_paths`` so that each photo contributes.
        plain_prob: probability that a material is nearly uniform (painted walls, cabinets,
            plaster; :func:`~pointmap.train.synthetic.patterns.make_plain_texture`) instead of
            patterned; 0 (the default) leaves every scene as it was without the option.
        n_plain_textures: plain textures in the bank (used only when ``plain_prob > 0``).
        n_textures: procedural textures in the bank; texture_size: their side in texels.
        gain_range, gamma_range, wb_jitter, noise_max: per-view exposure changes (multiplicative
            gain, gamma, white-balance std, max sensor-noise std).
        device: where rendering happens (``"cpu"``, ``"cuda"``, ...).
        chunk_elems: memory bound of the ray caster (ray-primitive tests per chunk); ``None``:
            2 M on the CPU, 64 M on a GPU.
    """

    resolution: tuple[int, int] | list[tuple[int, int]] = (224, 224)
    seed: int = 0
    split: str = "train"
    layouts: dict[str, float] = field(default_factory=lambda: {"room": 0.3, "turntable": 0.25,
                                                               "street": 0.2, "clutter": 0.25})
    n_views: int = 8
    fov_range: tuple[float, float] = (40.0, 90.0)
    per_view_fov_prob: float = 0.3
    baseline_range: tuple[float, float] = (0.05, 0.8)
    min_covisibility: float = 0.3
    covis_width: int = 48
    min_valid_fraction: float = 0.6
    max_attempts: int = 4
    shadows: bool = True
    photo_prob: float = 0.15
    photo_paths: tuple[str, ...] = ()
    n_photo_textures: int = 16
    plain_prob: float = 0.0
    n_plain_textures: int = 16
    n_textures: int = 96
    texture_size: int = 256
    gain_range: tuple[float, float] = (0.7, 1.4)
    gamma_range: tuple[float, float] = (0.8, 1.25)
    wb_jitter: float = 0.04
    noise_max: float = 0.01
    device: str = "cpu"
    chunk_elems: int | None = None

    def __post_init__(self) -> None:
        if self.split not in ("train", "val"):
            raise PointmapError(f"SyntheticConfig.split must be 'train' or 'val', got {self.split!r}")
        if self.n_photo_textures < 0:
            raise PointmapError(f"SyntheticConfig.n_photo_textures must be >= 0, got {self.n_photo_textures}")
        if not 0.0 <= self.plain_prob <= 1.0 or self.n_plain_textures < 0:
            raise PointmapError(f"SyntheticConfig.plain_prob must be in [0, 1] and n_plain_textures >= 0, got "
                                f"{self.plain_prob} and {self.n_plain_textures}")
        unknown = set(self.layouts) - set(LAYOUTS)
        if unknown or not any(w > 0 for w in self.layouts.values()):
            raise PointmapError(f"SyntheticConfig.layouts {self.layouts!r}: weights must be positive for "
                                f"some of {LAYOUTS}")
        for res in self.resolutions:
            if len(res) != 2 or min(res) < 8:
                raise PointmapError(f"SyntheticConfig.resolution {res!r}: expected (W, H) with both >= 8")
        if self.n_views < 2:
            raise PointmapError(f"SyntheticConfig.n_views must be >= 2, got {self.n_views}")
        lo, hi = self.fov_range
        if not 1.0 <= lo <= hi < 179.0:
            raise PointmapError(f"SyntheticConfig.fov_range {self.fov_range!r}: need 1 <= min <= max < 179")
        if not 0 < self.baseline_range[0] <= self.baseline_range[1]:
            raise PointmapError(f"SyntheticConfig.baseline_range {self.baseline_range!r}: need 0 < min <= max")

    def chunk_for(self, device: torch.device) -> int:
        """The ray-caster chunk size to use on ``device``."""
        if self.chunk_elems is not None:
            return int(self.chunk_elems)
        return 64_000_000 if device.type == "cuda" else 2_000_000

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        """The resolution buckets as a list of ``(W, H)``."""
        r = self.resolution
        if isinstance(r, (list,)) or (isinstance(r, tuple) and r and isinstance(r[0], (tuple, list))):
            return [tuple(int(v) for v in x) for x in r]  # type: ignore[misc]
        return [(int(r[0]), int(r[1]))]  # type: ignore[index]

