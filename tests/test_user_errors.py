"""Errors, warnings and outputs a user sees: PointmapError subclasses in the user's terms, one clean
line per warning, strict JSON, images that keep no points named, tiny images refused by name."""

from __future__ import annotations

import collections
import json
import logging
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pointmap import cli
from pointmap.align import AlignConfig, clean_pointcloud
from pointmap.errors import CheckpointError, DeviceError, PointmapError
from pointmap.export import export_scene
from pointmap.export.depth import CONF_NOTE
from pointmap.images import load_images
from pointmap.inference import resolve_device, resolve_dtype
from pointmap.model.checkpoint import load_model
from pointmap.scene import Scene

from export_scenes import make_scene


def strict_loads(text: str):
    """json.loads that rejects NaN and Infinity, as strict parsers do."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------------ devices
def test_missing_cuda_device_names_the_devices_that_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"device cuda does not exist.*it has: cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"cuda:3 does not exist.*cuda:0, cuda:1, cpu"):
        resolve_device("cuda:3")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match="'gpu0' is not a device name"):
        resolve_device("gpu0")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cli_device_error_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    img = tmp_path / "a.png"
    Image.new("RGB", (64, 48)).save(img)
    assert cli.main(["reconstruct", str(img), "-o", str(tmp_path / "out"), "--device", "cuda:3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cuda:3" in err and "cpu" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


# ---------------------------------------------------------------- ValueErrors are PointmapErrors
@pytest.mark.parametrize("call", [
    lambda: resolve_dtype("float64", torch.device("cpu")),
    lambda: resolve_dtype("float16", torch.device("cpu")),
    lambda: AlignConfig(conf_threshold=float("nan")),
    lambda: AlignConfig(conf_threshold=float("inf")),
    lambda: AlignConfig(niter=-1),
    lambda: __import__("pointmap.pairs", fromlist=["make_pairs"]).make_pairs(4, "swin-x"),
    lambda: __import__("pointmap.video", fromlist=["read_video_frames"]).read_video_frames("v.mp4", fps=0),
    lambda: __import__("pointmap.model.config", fromlist=["ModelConfig"]).ModelConfig(head_type="conv"),
    lambda: Scene(imgs=[torch.zeros(4, 4, 3)], poses=torch.eye(4)[None].repeat(2, 1, 1),
                  intrinsics=torch.eye(3)[None], depths=[torch.ones(4, 4)],
                  confidence=[torch.ones(4, 4)], masks=[torch.ones(4, 4, dtype=torch.bool)]),
])
def test_user_reachable_value_errors_are_pointmap_errors(call):
    with pytest.raises(PointmapError):
        call()


# ------------------------------------------------------------------------------------ checkpoints
TORCH_ADVICE = (
    "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` "
    "argument in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set "
    "to `False` will likely succeed, but it can result in arbitrary code execution. Do it only if you "
    "got the file from a trusted source.\nPlease file an issue with the following so that we can make "
    "`weights_only=True` compatible with your use case: WeightsUnpickler error: Unsupported global: "
    "GLOBAL posix.system was not an allowed global by default. Please use "
    "`torch.serialization.add_safe_globals([system])` to allowlist this global if you trust it."
)


def test_checkpoint_errors_never_advise_turning_safe_loading_off(tmp_path, monkeypatch, capsys):
    path = tmp_path / "model.pth"
    path.write_bytes(b"PK not really")

    def refuse(*a, **k):
        raise pickle.UnpicklingError(TORCH_ADVICE)

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    text = str(exc.value)
    assert "model.pth" in text and "posix.system" in text
    assert "weights_only" not in text and "safe_globals" not in text
    # a torch warning with that advice reaches a command-line user without it, on one line
    restore = cli._setup_logging()
    try:
        cli._warning_as_log(FutureWarning(TORCH_ADVICE), FutureWarning, "torch/serialization.py", 1)
    finally:
        restore()  # later tests read pointmap's records through pytest's capture
    err = capsys.readouterr().err
    assert err.startswith("pointmap: warning: ") and err.count("\n") == 1
    assert "weights_only" not in err and "serialization.py" not in err


def test_bare_state_dict_message_in_command_line_terms(tmp_path, capsys):
    path = tmp_path / "weights.pth"
    torch.save({"model": collections.OrderedDict(w=torch.zeros(2))}, path)
    with pytest.raises(CheckpointError, match=r"config=ModelConfig"):
        load_model(path)  # Python: the argument that fixes it
    assert cli.main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "weights.pth" in err and "ModelConfig" not in err and "config=" not in err
    assert err.count("\n") == 1 and not (tmp_path / "out.safetensors").exists()


# ------------------------------------------------------------------------------------------ warnings
def test_warnings_are_one_clean_logging_line(capsys):
    restore = cli._setup_logging()
    try:
        logging.getLogger("pointmap.images").warning("first line\nsecond line")
        cli._warning_as_log(UserWarning("a library says\nsomething"), UserWarning, "/x/lib.py", 12)
    finally:
        restore()
    err = capsys.readouterr().err.splitlines()
    assert err == ["pointmap: warning: first line second line", "pointmap: warning: a library says something"]


def test_library_warnings_go_through_logging_not_warnings(tmp_path, caplog):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    Image.new("RGB", (64, 48)).save(tmp_path / "good.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Python warning would raise here
        with caplog.at_level("WARNING", logger="pointmap"):
            load_images(tmp_path, size=224, skip_bad=True)
    assert "bad.jpg" in caplog.text


# ---------------------------------------------------------------------------------- tiny images
def test_image_smaller_than_a_patch_is_refused_or_skipped_by_name(tmp_path, caplog):
    Image.new("RGB", (1, 1), (9, 9, 9)).save(tmp_path / "one.png")
    Image.new("RGB", (64, 48)).save(tmp_path / "good.png")
    with pytest.raises(PointmapError, match=r"one\.png \(1x1 pixels\) is too small"):
        load_images(tmp_path, size=224)
    with caplog.at_level("WARNING", logger="pointmap"):
        ims = load_images(tmp_path, size=224, skip_bad=True)
    assert [Path(im.meta.path).name for im in ims] == ["good.png"] and "one.png" in caplog.text


# ------------------------------------------------------------------------------------------- JSON
def test_every_json_output_is_strict_json_with_null_for_non_numbers(tmp_path):
    scene = make_scene(placed=[True, False, True])
    scene.poses[1] = float("nan")  # an unplaced image: its pose means nothing
    scene.intrinsics[1][0, 0] = float("inf")
    out = tmp_path / "out"
    export_scene(scene, out)
    files = sorted(out.rglob("*.json"))
    assert {p.name for p in files} >= {"cameras.json", "transforms.json", "depth.json",
                                       ".pointmap-manifest.json"}
    for p in files:
        strict_loads(p.read_text())  # raises on NaN / Infinity
    cams = strict_loads((out / "cameras.json").read_text())["images"]
    assert cams[1]["cam2world"][0][0] is None and cams[1]["focal"] is None


def test_cameras_json_counts_points_kept_per_image(tmp_path):
    scene = make_scene()
    scene.masks[1][:] = False
    scene.masks[2][:, :5] = False
    export_scene(scene, tmp_path / "o", formats=("cameras",))
    cams = strict_loads((tmp_path / "o" / "cameras.json").read_text())["images"]
    assert [c["points_kept"] for c in cams] == [int(m.sum()) for m in scene.masks]
    assert cams[1]["points_kept"] == 0 and cams[0]["points_total"] == scene.masks[0].numel()
    assert scene.sparse_images() == [1]


def test_depth_confidence_file_and_its_description_agree(tmp_path):
    scene = make_scene(n=3)
    scene.poses[1][:3, 3] += torch.tensor([0.0, 0.0, 1.0], dtype=scene.poses.dtype)  # in front
    cleaned = clean_pointcloud(scene)
    export_scene(cleaned, tmp_path / "o", formats=("depth",))
    side = strict_loads((tmp_path / "o" / "depth" / "depth.json").read_text())
    assert side["confidence"] == CONF_NOTE and "0 marks" in CONF_NOTE
    for k, entry in enumerate(side["images"].values()):
        conf = np.load(tmp_path / "o" / "depth" / entry["conf_npy"])
        assert np.all((conf == 0) | (conf > 1))  # what the note says: raw (> 1) or 0 = removed
        np.testing.assert_array_equal(conf, cleaned.confidence[k].numpy().astype(np.float32))


def test_app_summary_names_images_that_keep_no_points(tmp_path):
    pytest.importorskip("gradio")
    from pointmap.app import _render, _Stored

    scene = make_scene()
    scene.confidence[1][:] = 1.01  # below the threshold below: image 1 keeps nothing
    stored = _Stored(scene=scene, run_dir=tmp_path, image_paths=[None, None, None], labels=["a", "b", "c"])
    _, _, _, summary = _render(stored, conf=1.5, mesh=False, sky=False, clean=False, cam_size=0)
    assert "1 image keeps fewer than 1 % of its points (b)" in summary
    render = next(tmp_path.glob("render_*"))
    assert (render / ".pointmap-manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
