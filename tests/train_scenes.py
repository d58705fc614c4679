"""A tiny training setup for the trainer tests: a textured slanted plane seen by cameras
translating along x (a scene folder with exact depth), and a tiny CPU run configuration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image

from pointmap.train.config import TrainConfig
from pointmap.train.views import world_points

TINY = dict(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=2,
            dec_num_heads=2, head_type="linear", img_size=[64, 64])


def write_plane_scene(root: Path, n=5, W=80, H=60):
    """A textured, slanted plane seen by ``n`` cameras translating along x."""
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 255, size=(8, 8, 3)).astype(np.float64)
    frames = []
    for i in range(n):
        K = np.array([[70.0, 0, W / 2], [0, 70, H / 2], [0, 0, 1]])
        T = np.eye(4)
        T[:3, 3] = [0.15 * i, 0.0, 0.0]
        v, u = np.mgrid[0:H, 0:W].astype(np.float64)
        rays = np.stack([(u - K[0, 2]) / 70, (v - K[1, 2]) / 70, np.ones_like(u)], -1)
        depth = 3.0 / (1.0 + 0.3 * rays[..., 1])  # plane z + 0.3 y = 3 in every camera
        pts = world_points(depth, K, T)
        ix = np.floor(pts[..., 0] * 4).astype(int) % 8
        iy = np.floor(pts[..., 1] * 4).astype(int) % 8
        PIL.Image.fromarray(tex[iy, ix].astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
        np.save(root / "depth" / f"{i:03d}.npy", depth.astype(np.float32))
        frames.append({"image": f"images/{i:03d}.png", "K": K.tolist(), "cam2world": T.tolist()})
    (root / "cameras.json").write_text(json.dumps({"frames": frames}))


# the section of each setting the tests vary (the others are top-level TrainConfig fields)
_SECTION = {"model": ("model", "arch"), "train_data": ("data", "train"), "test_data": ("data", "test"),
            "resolution": ("data", "resolution"), "batch_size": ("data", "batch_size"),
            "lr": ("optimizer", "lr"), "accum_iter": ("optimizer", "accum_iter"),
            "min_lr": ("schedule", "min_lr"), "total_steps": ("schedule", "total_steps"),
            "warmup_steps": ("schedule", "warmup_steps"), "stop_at_step": ("schedule", "stop_at_step"),
            "max_minutes": ("schedule", "max_minutes")}


def tiny_train_config(scene: Path, out: Path, **kw) -> TrainConfig:
    """A tiny CPU run on ``scene``; ``kw`` sets settings by name (placed in their section)."""
    flat = dict(model=dict(TINY), train_data=[{"kind": "scene_folder", "root": str(scene), "num_pairs": 4,
                                               "color_jitter": False, "max_gap": 1}],
                resolution=[[64, 48]], batch_size=1, accum_iter=1, lr=1e-3, min_lr=1e-5,
                total_steps=8, warmup_steps=2, output_dir=str(out), log_every=1, progress=False,
                tensorboard=False, eval_freq=0, device="cpu")
    flat.update(kw)
    nested: dict = {}
    for k, v in flat.items():
        if k in _SECTION:
            section, name = _SECTION[k]
            nested.setdefault(section, {})[name] = v
        else:
            nested[k] = v
    return TrainConfig.from_dict(nested)
