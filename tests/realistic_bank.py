"""A tiny asset bank built from generated photographs and textured OBJ models (test helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointmap.train.realistic.build_bank import ModelSource, PhotoSource, build_bank


def _photo(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
    Image.fromarray(small).resize((160, 120), Image.BICUBIC).save(path)


def _obj(folder: Path, name: str, kind: int, seed: int) -> Path:
    import trimesh

    folder.mkdir(parents=True, exist_ok=True)
    if kind == 0:
        m = trimesh.creation.box((1.0, 2.0, 0.5))
    elif kind == 1:
        m = trimesh.creation.cylinder(0.4, 1.0, sections=12)
    else:
        m = trimesh.creation.icosphere(2, 0.5)
    uv = (m.vertices[:, :2] - m.vertices[:, :2].min(0)) / np.ptp(m.vertices[:, :2], 0).max()
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.uniform(0, 255, (32, 32, 3)).astype(np.uint8))
    m.visual = trimesh.visual.TextureVisuals(uv=uv, image=img)
    path = folder / f"{name}.obj"
    m.export(path)
    return path


@pytest.fixture(scope="session")
def tiny_bank(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    photos = []
    for i in range(3):
        _photo(src / f"p{i}.png", i)
        photos.append(PhotoSource(src / f"p{i}.png", "test-photos", "CC0", f"p{i}"))
    photos.append(PhotoSource(src / "p0.png", "test-photos", "Proprietary", "nonfree"))
    cats = ["Living room", "Kitchen", "Exterior"]
    models = []
    for i in range(9):
        size = [(0.8, 0.5, 0.9), (0.3, 0.3, 0.25), (1.2, 0.6, 0.75)][i % 3]
        models.append(ModelSource(_obj(src / f"m{i}", f"m{i}", i % 3, i), f"test:m{i}.obj", "test-models", "CC-BY-4.0",
                                  "table" if i == 2 else f"thing {i}", cats[i % 3], "tester", size=size, y_up=True))
    out = tmp_path_factory.mktemp("bank") / "bank"
    summary = build_bank(out, photos, models, n_crops=30, crop_size=64, max_faces=200, texture_px=32)
    assert summary["photos"] == 30 and summary["models"] == 9
    return out
