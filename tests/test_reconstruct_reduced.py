"""``reconstruct``'s default with a predictions store: dense alignment from the streamed reductions,
the store keeping only them; ``--store-full`` keeps the full pairs and the full dense stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pointmap.geometry.registration import align_multiple_poses
from pointmap.model.checkpoint import bundled_model_path
from pointmap.pipeline import ExportSpec, Inputs, ModelSpec, PostProcess, Priors, Request, StorePolicy, run_request
from pointmap.store import DUST3R_FIELDS, STORE_DIRNAME, PredictionStore, recorded_identity
from pointmap.testing.synthetic_pairs import synthetic_cameras, synthetic_image

pytestmark = pytest.mark.skipif(not bundled_model_path().is_file(), reason="bundled model not present")

N = 6


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """``N`` views of the synthetic room at 224x168 as PNG files. (The bundled model does not
    reconstruct this room well, docs/benchmarks.md; the full path's cameras are the reference.)"""
    folder = tmp_path_factory.mktemp("renders")
    gt = synthetic_cameras(N, (224, 168), seed=0)
    for k in range(N):
        rgb = (synthetic_image(gt, k).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        Image.fromarray(rgb).save(folder / f"view_{k}.png")
    masks = tmp_path_factory.mktemp("masks")
    for k in range(N):  # the left quarter of view 0 masked out
        m = np.full((168, 224), 255, np.uint8)
        m[:, : 56 if k == 0 else 0] = 0
        Image.fromarray(m).save(masks / f"view_{k}.png")
    return folder, masks


def _run(folder: Path, masks: Path, out: Path, full: bool):
    req = Request(inputs=Inputs([str(folder)]), model=ModelSpec(size=224, device="cpu"), graph="complete",
                  priors=Priors(masks=str(masks)),
                  store=StorePolicy(mode="on", full_pairs=full), post=PostProcess(clean=False),
                  export=ExportSpec(output=str(out), formats=("cameras",)))
    return run_request(req)


def _rot_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N,)`` angles in degrees between rotations ``a``, ``b`` ``(N, 3, 3)``."""
    tr = (a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(torch.arccos(((tr - 1) / 2).clamp(-1, 1)))


def _to(poses: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``poses`` moved by the similarity that best maps their centres onto ``dst``'s."""
    s, R, T = align_multiple_poses(poses.double(), dst.double())
    out = poses.double().clone()
    out[:, :3, :3] = R @ out[:, :3, :3]
    out[:, :3, 3] = float(s) * out[:, :3, 3] @ R.T + T
    return out


def test_default_store_keeps_reductions_and_matches_the_full_path(renders, tmp_path):
    folder, masks = renders
    red = _run(folder, masks, tmp_path / "red", full=False)
    full = _run(folder, masks, tmp_path / "full", full=True)
    assert red.method == "reduced" and red.predictions is None
    assert full.method == "dense" and full.predictions is not None
    # the default store holds the reductions only, far smaller than the full pairs
    assert "reductions" in recorded_identity(tmp_path / "red" / STORE_DIRNAME)
    assert "reductions" not in recorded_identity(tmp_path / "full" / STORE_DIRNAME)
    size = {k: sum(f.stat().st_size for f in (tmp_path / k / STORE_DIRNAME).iterdir()) for k in ("red", "full")}
    assert size["red"] < 0.5 * size["full"], size
    path = tmp_path / "full" / STORE_DIRNAME
    store = PredictionStore.open(path, recorded_identity(path))
    assert len(store) == N * (N - 1) and set(store.rows([(0, 1)], DUST3R_FIELDS)) == set(DUST3R_FIELDS)
    assert bool(red.scene.placed.all()) and bool(full.scene.placed.all())
    # cameras: the same coarse stage on the same samples (the dense stage moves no camera), so the
    # full path's cameras in the same gauge within 0.25 degree, 0.3 % of the extent and 0.5 % of
    # focal. Not exactly: the reductions read the float32 predictions where the full store keeps
    # float16 (confidence maxima and pair scores differ in the fourth digit), which the bundled
    # model's poorly conditioned solution on this room turns into up to 0.1 degree.
    rot = _rot_deg(red.scene.poses[:, :3, :3].double(), full.scene.poses[:, :3, :3].double())
    assert float(rot.max()) < 0.25, rot
    moved = _to(red.scene.poses, full.scene.poses)
    extent = float((full.scene.poses[:, :3, 3] - full.scene.poses[:, :3, 3].mean(0)).norm(dim=1).max())
    assert float((moved[:, :3, 3] - full.scene.poses[:, :3, 3].double()).norm(dim=1).max()) < 3e-3 * extent
    torch.testing.assert_close(red.scene.intrinsics, full.scene.intrinsics, rtol=5e-3, atol=0)
    cams = json.loads((tmp_path / "red" / "cameras.json").read_text())["images"]
    assert [c["placed"] for c in cams] == [True] * N
    # masks are served by the reductions: the masked pixels are kept by neither path
    for res in (red, full):
        user = res.scene.user_masks[0]  # the network's square crop keeps 38 masked columns
        assert not user[:, :30].any() and user[:, -30:].all() and not res.scene.masks[0][~user].any()


def test_store_full_without_a_store_is_one_line(tmp_path, capsys):
    from pointmap.cli import main

    assert main(["reconstruct", str(tmp_path), "-o", str(tmp_path / "out"), "--store", "off", "--store-full"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--store-full" in err and "--store off" in err, err
    assert not (tmp_path / "out").exists()


def test_a_non_finite_predicted_point_carries_no_weight_in_the_reductions():
    from pointmap.align.reduced import _finite_points

    pts = torch.ones(1, 2, 2, 3)
    pts[0, 0, 1, 2] = float("inf")
    conf = torch.tensor([[[2.0, 3.0], [float("nan"), 5.0]]])
    p, c = _finite_points(pts.reshape(1, -1, 3), conf)
    assert c.tolist() == [[2.0, 0.0, 0.0, 5.0]]
    assert bool(torch.isfinite(p).all()) and p[0, 1].tolist() == [0.0, 0.0, 0.0]


def test_the_store_keeps_the_images_descriptors_and_a_rerun_reads_them(renders, tmp_path, monkeypatch):
    """A store of reductions keeps every image's raw retrieval descriptor (what a later extend
    pairs new images by); a rerun into the folder reads them back instead of encoding again."""
    from pointmap.model import load_model
    from pointmap.pipeline import core
    from pointmap.retrieval import image_descriptors
    from pointmap.store import read_image_descriptors

    folder, masks = renders
    res = _run(folder, masks, tmp_path / "out", full=False)
    path = tmp_path / "out" / STORE_DIRNAME
    ident = recorded_identity(path)
    kept = read_image_descriptors(path, [im["digest"] for im in ident["images"]])
    want = image_descriptors(load_model("default", device="cpu"), res.images, device="cpu", centre=False)
    torch.testing.assert_close(kept, want, rtol=1e-5, atol=1e-6)

    def encode(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(core, "image_descriptors", encode)
    monkeypatch.setattr(core, "describe_and_encode", encode)
    req = Request(inputs=Inputs([str(folder)]), model=ModelSpec(size=224, device="cpu"), graph="complete",
                  priors=Priors(masks=str(masks)), store=StorePolicy(mode="on"), post=PostProcess(clean=False),
                  export=ExportSpec(output=str(tmp_path / "out"), formats=("cameras",), overwrite=True))
    assert run_request(req).timings["descriptors"] >= 0


def test_a_run_that_keeps_descriptors_encodes_each_image_once(renders, tmp_path, monkeypatch):
    """The encoder pass that gives an image its retrieval descriptor is the one inference pairs
    it with (the image at its own shape): each of the N images goes through the encoder once."""
    from pointmap.model.network import DUSt3R

    seen: list[int] = []
    real = DUSt3R.encode

    def encode(self, imgs, *args, **kwargs):
        seen.append(int(imgs.shape[0]))
        return real(self, imgs, *args, **kwargs)

    monkeypatch.setattr(DUSt3R, "encode", encode)
    folder, masks = renders
    res = _run(folder, masks, tmp_path / "out", full=False)
    assert sum(seen) == N and bool(res.scene.placed.all())
