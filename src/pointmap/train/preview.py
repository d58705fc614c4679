"""A look at the synthetic data engines: ``N`` views of one scene written as images, depth maps and
cameras (``pointmap synth-preview``).

Output folder::

    images/000.png ...     # the rendered views (8-bit RGB)
    depth/000.npy ...      # (H, W) float32 z-depth in metres, 0 = no surface (sky)
    cameras.json           # {"convention", "engine", "layout",
                           #  "images": [{"name", "file", "index", "width", "height", "K", "cam2world",
                           #              "world2cam", "focal"}],      # reconstruct's schema
                           #  "cameras": {file: {"K", "cam2world"}}}    # the same, keyed by file name
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import PointmapError
from ..io_utils import OutputDir, atomic_write_text

__all__ = ["ENGINES", "PreviewCapture", "render_preview", "write_preview"]

#: The synthetic data engines.
ENGINES: tuple[str, ...] = ("procedural", "realistic")

_CONVENTION = {
    "camera_axes": "OpenCV: x right, y down, z forward",
    "pixel_centres": "integer coordinates; the top-left pixel centre is (0, 0)",
    "units": "metres for translations and depth; pixels for intrinsics",
}


@dataclass
class PreviewCapture:
    """``images`` (uint8 ``(n, H, W, 3)``), ``depths`` ``(n, H, W)`` metres, ``poses`` ``(n, 4, 4)``
    cam-to-world (OpenCV), ``intrinsics`` ``(n, 3, 3)`` pixels and the scene's ``layout``."""

    images: np.ndarray
    depths: np.ndarray
    poses: np.ndarray
    intrinsics: np.ndarray
    layout: str


def _realistic(n: int, seed: int, size: tuple[int, int], layout: str | None, bank: str | None) -> PreviewCapture:
    import torch

    from .realistic.capture import RealisticConfig, open_bank, plan_capture, render_plans
    from .realistic.composer import REALISTIC_LAYOUTS
    from .synthetic.dataset import covisibility

    bank = bank or os.environ.get("POINTMAP_ASSET_BANK")
    if not bank:
        raise PointmapError("the realistic engine needs an asset bank: pass --bank FOLDER or set "
                            "POINTMAP_ASSET_BANK (build one with `python scripts/build_asset_bank.py -o FOLDER`)")
    layouts = {layout: 1.0} if layout else {k: 1.0 for k in REALISTIC_LAYOUTS}
    cfg = RealisticConfig(bank=bank, resolution=size, seed=seed, n_views=n, layouts=layouts,
                          baseline_range=(0.2, 0.5), blur_max=0.4, jpeg_prob=0.3, noise_max=0.005)
    ab = open_bank(cfg)
    w, h = size
    lw, lh = 48, max(4, round(48 * h / w))
    rng = np.random.default_rng(seed)
    lay = layout or str(rng.choice(REALISTIC_LAYOUTS))
    motion = {"turntable": "orbit", "street": "walk"}.get(lay, "nearby")
    best = None
    for attempt in range(6):
        plan = plan_capture(cfg, ab, seed, attempt, motion=motion, layout=lay)
        plan.fovs[:] = plan.fovs[0]
        low, poses, K = render_plans(cfg, ab, [plan], lw, lh, "cpu", color=False)
        cov = [float(covisibility(low.depth[i], poses[i], K[i], low.pts3d[i + 1], low.valid[i + 1]))
               for i in range(n - 1)] or [1.0]
        score = min(min(cov), float(low.valid.float().mean((1, 2)).min()))
        if float(low.depth[low.valid].quantile(0.05)) < 0.5:  # a camera pressed against a surface
            score -= 1.0
        if best is None or score > best[0]:
            best = (score, plan)
        if score >= 0.4:
            break
    assert best is not None
    plan = best[1]
    with torch.no_grad():
        out, poses, K = render_plans(cfg, ab, [plan], w, h, "cpu")
    assert out.rgb is not None
    imgs = (out.rgb.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return PreviewCapture(imgs, out.depth.numpy(), poses.numpy(), K.numpy(), plan.scene.layout)


def render_preview(engine: str, n: int, seed: int = 0, size: tuple[int, int] = (512, 384),
                   layout: str | None = None, bank: str | None = None,
                   texture_size: int = 256) -> PreviewCapture:
    """``n`` overlapping views of one scene of ``engine`` (see :data:`ENGINES`); ``bank``: the
    realistic engine's asset bank (default ``$POINTMAP_ASSET_BANK``); ``texture_size``: the
    procedural engine's texture side."""
    if engine == "procedural":
        from .synthetic import render_example_scene

        cap = render_example_scene(seed, n_views=n, size=size, layout=layout, texture_size=texture_size,
                                   n_textures=96 if texture_size >= 128 else 16)
        return PreviewCapture(np.stack([np.asarray(im) for im in cap.images]), cap.depths, cap.poses,
                              cap.intrinsics, cap.layout)
    if engine == "realistic":
        return _realistic(n, seed, size, layout, bank)
    raise PointmapError(f"unknown synthetic engine {engine!r}; choose from {ENGINES}")


def write_preview(cap: PreviewCapture, out: str | os.PathLike | OutputDir, engine: str,
                  overwrite: bool = False) -> Path:
    """Write ``cap`` to the folder ``out`` (see the module docstring; a path, or an
    :class:`~pointmap.io_utils.OutputDir` already checked); returns the folder. A non-empty folder
    is refused unless ``overwrite`` (which replaces only files pointmap wrote there)."""
    od = out if isinstance(out, OutputDir) else OutputDir(out, overwrite=overwrite)
    with od.writing() as root:
        (root / "images").mkdir()
        (root / "depth").mkdir()
        images, cams = [], {}
        for k, img in enumerate(cap.images):
            name = f"{k:03d}"
            file = f"{name}.png"
            Image.fromarray(img).save(root / "images" / file)
            d = np.where(np.isfinite(cap.depths[k]), cap.depths[k], 0).astype(np.float32)
            np.save(root / "depth" / f"{name}.npy", d)
            K = cap.intrinsics[k].astype(np.float64)
            c2w = cap.poses[k].astype(np.float64)
            H, W = img.shape[:2]
            images.append({"name": name, "file": file, "index": k, "width": int(W), "height": int(H),
                           "K": K.tolist(), "cam2world": c2w.tolist(), "world2cam": np.linalg.inv(c2w).tolist(),
                           "focal": 0.5 * (K[0, 0] + K[1, 1])})
            cams[file] = {"K": K.tolist(), "cam2world": c2w.tolist()}
        atomic_write_text(root / "cameras.json", json.dumps({"convention": _CONVENTION, "engine": engine,
                                                             "layout": cap.layout, "images": images,
                                                             "cameras": cams}, indent=2))
    return od.path
