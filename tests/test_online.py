"""Online tracking (``pointmap online``): keyframe overlap on an analytic case, the TUM trajectory
round trip, the tracker's poses on a synthetic video with exact ground truth, bounded memory as
frames stream, the files written, and bad input as one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pointmap import cli
from pointmap.errors import InputError
from pointmap.io_utils import OutputDir
from pointmap.online import (KeyframeSet, OnlineConfig, Tracker, absolute_trajectory_error, overlap_fraction,
                             read_tum, write_tum)
from pointmap.online.keyframes import Keyframe
from pointmap.online.runner import run_online
from pointmap.testing.synthetic_video import SyntheticVideo


def _rot_errors_deg(P: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Rotation error of every relative pose to the first frame (gauge-free)."""
    rel_p = np.linalg.inv(P[0])[None, :3, :3] @ P[:, :3, :3]
    rel_g = np.linalg.inv(G[0])[None, :3, :3] @ G[:, :3, :3]
    return Rotation.from_matrix(rel_p.transpose(0, 2, 1) @ rel_g).magnitude() * 180 / np.pi


def test_overlap_of_a_sideways_step_over_a_plane_is_the_pixels_still_in_view():
    W, H, f, Z = 64, 48, 50.0, 2.0
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    v, u = np.mgrid[0:H, 0:W]
    world = np.stack([(u - W / 2) * Z / f, (v - H / 2) * Z / f, np.full(u.shape, Z)], -1).reshape(-1, 3)
    for d in (0, 8, 16, 40):  # a step of d pixels to the right leaves W - d columns in view
        pose = np.eye(4)
        pose[0, 3] = d * Z / f
        assert overlap_fraction(world, pose, K, (H, W)) == pytest.approx((W - d) / W)
    behind = np.eye(4)
    behind[:3, :3] = Rotation.from_euler("y", 180, degrees=True).as_matrix()
    assert overlap_fraction(world, behind, K, (H, W)) == 0.0
    assert overlap_fraction(np.zeros((0, 3)), np.eye(4), K, (H, W)) == 0.0


def _kf(frame: int, centre: tuple[float, float, float], desc: list[float] | None = None) -> Keyframe:
    pose = np.eye(4)
    pose[:3, 3] = centre
    z = torch.zeros(2, 2, 3, dtype=torch.float16)
    return Keyframe(frame, pose, np.eye(3), (4, 4), z, z[..., 0], z, None,
                    None if desc is None else torch.tensor(desc))


def test_candidates_are_the_recent_keyframes_then_the_nearest_or_most_similar_older_one():
    ks = KeyframeSet(capacity=5)
    for k, x in enumerate([0.0, 10.0, 20.0, 30.0, 40.0]):
        ks.add(_kf(k, (x, 0, 0), [float(k == 1), float(k != 1)]))
    here = np.eye(4)
    here[0, 3] = 9.0
    assert ks.candidates(here, window=2, loop=1) == [3, 4, 1]  # keyframe 1 is nearest
    assert ks.candidates(here, window=2, loop=1, descriptor=torch.tensor([0.0, 1.0]))[:2] == [3, 4]
    assert ks.candidates(here, window=2, loop=1, descriptor=torch.tensor([1.0, 0.0])) == [3, 4, 1]
    away = here.copy()
    away[:3, :3] = -np.eye(3) @ np.diag([1, -1, 1])  # looking backwards: no older keyframe qualifies
    assert ks.candidates(away, window=2, loop=1) == [3, 4]
    ks.add(_kf(5, (50.0, 0, 0)))
    assert [kf.frame for kf in ks.items] == [1, 2, 3, 4, 5] and ks.retired == 1


def test_tum_round_trip_and_a_bad_line_named(tmp_path):
    rng = np.random.default_rng(0)
    P = np.tile(np.eye(4), (7, 1, 1))
    P[:, :3, :3] = Rotation.random(7, random_state=1).as_matrix()
    P[:, :3, 3] = rng.normal(size=(7, 3))
    t = np.cumsum(rng.uniform(0.01, 0.1, 7))
    write_tum(tmp_path / "traj.txt", t, P)
    t2, P2 = read_tum(tmp_path / "traj.txt")
    np.testing.assert_allclose(t2, t, rtol=1e-8)
    np.testing.assert_allclose(P2, P, atol=1e-8)
    row = (tmp_path / "traj.txt").read_text().splitlines()[1].split()
    q = Rotation.from_matrix(P[0, :3, :3]).as_quat()  # scalar last, as TUM
    np.testing.assert_allclose([float(x) for x in row[4:]], q * np.sign(q[3] * float(row[7])), atol=1e-8)
    (tmp_path / "bad.txt").write_text("# c\n0 1 2 3 0 0 0 1\n1 2 3\n")
    with pytest.raises(InputError, match="line 3"):
        read_tum(tmp_path / "bad.txt")


def test_tracker_poses_exact_on_noiseless_predictions():
    video = SyntheticVideo(frames_per_loop=120, noise=0.0, distortion=0.0, n_blobs=0)
    tracker = Tracker(video, OnlineConfig(refine_every=0))
    n = 40
    for k in range(n):
        tracker.add_frame(k)
    P, G = tracker.poses(), video.poses(n)
    assert tracker.tracked().all() and len(tracker.keyframes) >= 2
    extent = np.linalg.norm(np.ptp(G[:, :3, 3], axis=0))
    assert absolute_trajectory_error(P, G) < 2e-3 * extent
    assert _rot_errors_deg(P, G).max() < 0.2


def test_tracker_on_noisy_predictions_with_refinement():
    video = SyntheticVideo(frames_per_loop=120)
    tracker = Tracker(video, OnlineConfig(refine_every=3))
    n = 60
    for k in range(n):
        tracker.add_frame(k)
    P, G = tracker.poses(), video.poses(n)
    assert tracker.tracked().all() and tracker.refinements >= 1
    extent = np.linalg.norm(np.ptp(G[:, :3, 3], axis=0))
    assert absolute_trajectory_error(P, G) < 0.03 * extent
    assert np.median(_rot_errors_deg(P, G)) < 2.0


def test_memory_stays_bounded_as_frames_stream():
    """Three turns around the room: after the first, revisited places add no keyframes, and the
    tracker holds no frame but its keyframes (every other frame is reduced to a pose)."""
    video = SyntheticVideo(frames_per_loop=40)
    tracker = Tracker(video, OnlineConfig(refine_every=0, max_keyframes=64, keyframe_overlap=0.75))
    stored = []
    for k in range(120):
        tracker.add_frame(k)
        stored.append(tracker.stored_frames())
    assert tracker.n_frames == 120
    assert stored[-1] <= stored[45] + 2  # the second and third turns add (almost) nothing
    assert stored[-1] < 20 and len(tracker.kf_pairs) <= tracker.config.window * 2 * stored[-1]
    assert all(isinstance(t.rel, np.ndarray) and t.rel.shape == (4, 4) for t in tracker.tracks)
    small = Tracker(video, OnlineConfig(refine_every=0, max_keyframes=4, window=2, loop=1, keyframe_overlap=0.75))
    for k in range(60):
        small.add_frame(k)
    assert small.stored_frames() <= 4 and small.poses().shape == (60, 4, 4)


def test_run_online_writes_trajectory_and_keyframe_exports(tmp_path):
    video = SyntheticVideo(frames_per_loop=120)
    frames = ((k / 30, f"f{k:03d}", k) for k in range(30))
    res = run_online(frames, video, OnlineConfig(refine_every=0), OutputDir(tmp_path / "out"))
    t, P = read_tum(tmp_path / "out" / "trajectory_tum.txt")
    np.testing.assert_allclose(t, np.arange(30) / 30, atol=1e-8)
    np.testing.assert_allclose(P, res.poses, atol=1e-6)
    meta = json.loads((tmp_path / "out" / "frames.json").read_text())["frames"]
    assert [m["keyframe"] for m in meta].count(True) == len(res.keyframes) >= 2
    cams = json.loads((tmp_path / "out" / "cameras.json").read_text())
    assert len(cams["images"] if "images" in cams else cams) == len(res.keyframes)
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"scene.glb", "points.ply", "cameras.json"}


@pytest.mark.parametrize("make, named", [
    (lambda d: d / "missing.mp4", "does not exist"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "is not a video file"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no images"),
    (lambda d: (d / "broken.mp4").write_bytes(b"\0" * 64) and d / "broken.mp4", "broken.mp4"),
])
def test_bad_sources_are_one_line_errors_and_nothing_is_written(tmp_path, capsys, make, named):
    src = make(tmp_path)
    assert cli.main(["online", str(src), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_network_predictor_encodes_each_frame_once_and_pairs_like_infer_pairs(monkeypatch):
    from pointmap.images import load_image_arrays
    from pointmap.inference import infer_pairs
    from pointmap.model import DUSt3R, ModelConfig
    from pointmap.online.runner import EncodedFrame, NetworkPredictor
    from pointmap.retrieval import image_descriptors

    torch.manual_seed(0)
    model = DUSt3R(ModelConfig(img_size=(224, 224), enc_embed_dim=32, enc_depth=1, enc_num_heads=2,
                               dec_embed_dim=32, dec_depth=1, dec_num_heads=2, head_type="linear")).eval()
    video = SyntheticVideo(size=(64, 48), frames_per_loop=40)
    frames = load_image_arrays([video.colours(k).numpy() for k in range(6)], size=224)
    pred = NetworkPredictor(model, "cpu", batch_size=2)
    enc = [pred.encode(f) for f in frames[:3]]
    # the reference twin: infer_pairs encoding the raw images itself
    ref = infer_pairs(model, frames[:3], [(0, 1), (0, 2), (0, 0)], device="cpu", progress=False, descriptors=False)
    for k, out in enumerate(pred.predict(enc[0], [enc[1], enc[2], enc[0]])):
        for got, want in zip(out, (ref.pts3d_1[k], ref.conf_1[k], ref.pts3d_2_in_1[k], ref.conf_2[k])):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pred.descriptor(enc[1]), image_descriptors(model, [frames[1]], device="cpu")[0],
                               rtol=1e-4, atol=1e-5)
    encoded = []
    real_encode = model.encode
    monkeypatch.setattr(model, "encode", lambda img: encoded.append(len(img)) or real_encode(img))
    tracker = Tracker(pred, OnlineConfig(window=2, loop=1, conf_threshold=1.0, min_inliers=4))
    for f in frames:
        tracker.add_frame(f)
    assert sum(encoded) == len(frames)  # one encoder run per frame, none for keyframes or descriptors
    assert all(isinstance(kf.image, EncodedFrame) for kf in tracker.keyframes.items)


@pytest.mark.parametrize("extra, named", [
    (["--graph", "swin-3"], "--graph"),
    (["--store", "on"], "--store"),
    (["--iterations", "5"], "--iterations"),
    (["--no-clean"], "--no-clean"),
    (["--export", "glb", "colmap"], "--export colmap"),
    (["{tmp}/other.mp4"], "got 2 inputs"),
])
def test_reconstruct_online_refuses_what_does_not_apply_first_in_one_line(tmp_path, capsys, extra, named):
    src = tmp_path / "missing.mp4"  # the refusals come before the source is looked at
    extra = [e.format(tmp=tmp_path) for e in extra]
    assert cli.main(["reconstruct", str(src), *extra, "--online", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_online_options_without_online_are_refused(tmp_path, capsys):
    assert cli.main(["reconstruct", str(tmp_path / "a.jpg"), "--window", "2", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--window applies only to --online" in err


def test_reconstruct_online_follows_a_folder_of_frames_like_pointmap_online(tmp_path, capsys):
    from PIL import Image

    video = SyntheticVideo(size=(64, 48), frames_per_loop=60)
    (tmp_path / "frames").mkdir()
    for k in range(3):
        Image.fromarray((video.colours(k).numpy() * 255).round().astype(np.uint8)).save(
            tmp_path / "frames" / f"f{k}.png")
    args = [str(tmp_path / "frames"), "--max-frames", "2", "--export", "cameras", "-q"]
    assert cli.main(["reconstruct", *args, "--online", "-o", str(tmp_path / "a")]) == 0
    assert cli.main(["online", *args, "-o", str(tmp_path / "b")]) == 0
    assert "2 frames" in capsys.readouterr().out
    t, P = read_tum(tmp_path / "a" / "trajectory_tum.txt")
    assert len(t) == 2 and np.isfinite(P).all()
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if not p.name.startswith(".")) == \
        ["cameras.json", "frames.json", "trajectory_tum.txt"]
    assert (tmp_path / "a" / "trajectory_tum.txt").read_text() == (tmp_path / "b" / "trajectory_tum.txt").read_text()
