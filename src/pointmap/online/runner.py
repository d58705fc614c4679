"""From a video or a folder of frames to a trajectory and the keyframes' exports, frame by frame
(``pointmap online``): the frames are read as they come, tracked (:class:`~.tracker.Tracker`) and
dropped; a progress bar shows frames per second."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..model.network import Encoded
from ..io_utils import MANIFEST_NAME, OutputDir, atomic_write_text, strict_json
from ..scene import Scene
from ..video import is_video, iter_video_frames
from .tracker import OnlineConfig, PairOutput, Tracker
from .trajectory import write_tum

__all__ = ["EXPORT_FORMATS", "EncodedFrame", "NetworkPredictor", "OnlineResult", "check_source", "iter_frames",
           "keyframe_scene", "online_reconstruct", "run_online"]

EXPORT_FORMATS = ("glb", "ply", "cameras")
"""The exports of the keyframes that ``pointmap online`` writes (reduced-resolution maps)."""

TRAJECTORY_FILE = "trajectory_tum.txt"
FRAMES_FILE = "frames.json"


def check_source(path: str | os.PathLike) -> None:
    """Refuse a source that is not a readable video file or a folder holding images (one line
    naming it); a video's first frame is decoded to know."""
    from ..images import list_image_files

    p = Path(path)
    if not p.exists():
        raise InputError(f"{path} does not exist; give a video file or a folder of frames")
    if p.is_dir():
        if not list_image_files(p):
            raise InputError(f"folder {path} holds no images")
    elif not is_video(p):
        raise InputError(f"{path} is not a video file (.mp4, .mov, .avi, .mkv, .webm, .m4v) or a folder of frames")
    else:
        next(iter_video_frames(p, max_frames=1))


def iter_frames(path: str | os.PathLike, size: int, fps: float | None = None,
                max_frames: int | None = None) -> Iterator[tuple[float, str, Any]]:
    """The frames of a video file or of a folder of images (in name order), one at a time,
    preprocessed at ``size`` (224 or 512).

    Yields:
        ``(timestamp seconds, name, LoadedImage)``; a folder's frames are ``k / fps`` seconds
        apart (``fps`` default 30).

    Raises:
        InputError / ImageLoadError: a missing path, a file that is no video, an empty folder, an
            unreadable video or image.
    """
    from ..images import list_image_files, load_image_arrays, load_images

    check_source(path)
    if is_video(path):
        stem = Path(path).stem
        for k, (t, arr) in enumerate(iter_video_frames(path, fps, max_frames)):
            yield t, f"{stem}_frame{k:05d}", load_image_arrays([arr], size=size)[0]
        return
    for k, f in enumerate(list_image_files(path)[:max_frames]):
        yield k / (fps or 30.0), f.name, load_images([f], size=size)[0]


@dataclass
class EncodedFrame:
    """A frame as :class:`NetworkPredictor` pairs it: its encoder output (tokens ``(1, N, C)`` on
    the device, in the inference dtype) and its unit global descriptor ``(D,)`` (``None``
    without retrieval). A keyframe holds it while it is a keyframe, so each frame is encoded once."""

    encoded: Encoded
    descriptor: torch.Tensor | None = None


class NetworkPredictor:
    """:class:`~.tracker.PairPredictor` of a network: frames are ``LoadedImage``; each is encoded
    once (:meth:`encode`) and the pairs of the new frame with its keyframes run only the decoders
    and heads, batched (:func:`pointmap.inference.infer_pairs` with ``encoded=``); global
    descriptors (the mean encoder token, as :mod:`pointmap.retrieval` makes them) find
    loop-closure keyframes.

    Args:
        batch_size: pairs per decoder batch (a compiled model pads every batch to it: the
            tracker's ``window + loop`` keeps that to one batch shape).
    """

    def __init__(self, model: Any, device: str | torch.device | None = None, dtype: str | None = None,
                 retrieval: bool = True, batch_size: int = 4) -> None:
        from ..inference import resolve_device

        self.model, self.device, self.dtype, self.retrieval = model, resolve_device(device), dtype, retrieval
        self.batch_size = batch_size

    def encode(self, frame: Any) -> EncodedFrame:
        """The encoder output of ``frame`` and, with retrieval, its descriptor (from the same
        tokens when the frame is at the descriptors' size, else encoded at it)."""
        from ..inference import encode_images
        from ..retrieval import centre_descriptors, descriptor_shape, image_descriptors, raw_descriptors

        enc = encode_images(self.model, [frame], device=self.device, dtype=self.dtype, batch_size=1)[0]
        desc = None
        if self.retrieval and descriptor_shape(self.model, enc.shape) == enc.shape:
            desc = centre_descriptors(raw_descriptors(enc.tokens))[0]
        elif self.retrieval:
            desc = image_descriptors(self.model, [frame], device=self.device, dtype=self.dtype, progress=False)[0]
        return EncodedFrame(enc, desc)

    def predict(self, frame: EncodedFrame, others: Sequence[EncodedFrame]) -> list[PairOutput]:
        """Pairs ``(frame, other)`` (a self-pair when ``others`` is ``[frame]``): decoders and
        heads only."""
        from ..inference import infer_pairs

        encoded = {k: e.encoded for k, e in enumerate([frame, *others])}
        preds = infer_pairs(self.model, [None] * len(encoded), [(0, k + 1) for k in range(len(others))],
                            batch_size=self.batch_size, device=self.device, dtype=self.dtype, progress=False,
                            descriptors=False, encoded=encoded)
        return [(preds.pts3d_1[e], preds.conf_1[e], preds.pts3d_2_in_1[e], preds.conf_2[e])
                for e in range(len(others))]

    def descriptor(self, frame: EncodedFrame) -> torch.Tensor | None:
        """``(D,)`` unit global descriptor (``None`` without retrieval)."""
        return frame.descriptor

    def colours(self, frame: Any) -> torch.Tensor:
        """``(H, W, 3)`` colours in ``[0, 1]`` of the ``LoadedImage`` ``frame``."""
        return frame.rgb


@dataclass
class OnlineResult:
    """What :func:`run_online` made.

    Attributes:
        timestamps: ``(N,)`` seconds; names: per frame; poses: ``(N, 4, 4)`` camera-to-world.
        tracked: ``(N,)`` bool; keyframes: frame indices of the keyframes exported.
        seconds: tracking time; paths: ``{what: path}`` written.
    """

    timestamps: np.ndarray
    names: list[str]
    poses: np.ndarray
    tracked: np.ndarray
    keyframes: list[int]
    seconds: float
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """Frames tracked per second."""
        return len(self.names) / self.seconds if self.seconds > 0 else 0.0


def keyframe_scene(tracker: Tracker, names: Sequence[str]) -> Scene:
    """The live keyframes as a :class:`~pointmap.scene.Scene` at their reduced resolution
    (depth of their world points in their camera, intrinsics scaled by ``1 / stride``)."""
    s, thr = tracker.config.stride, tracker.config.conf_threshold
    items = tracker.keyframes.items
    depths, Ks = [], []
    for kf in items:
        T = torch.from_numpy(np.linalg.inv(kf.pose))
        depths.append((kf.world.double() @ T[2, :3] + T[2, 3]).float())
        K = kf.K.copy()
        K[:2] /= s
        Ks.append(K)
    conf = [kf.conf.float() for kf in items]
    return Scene(imgs=[kf.rgb.float() for kf in items], poses=torch.from_numpy(np.stack([kf.pose for kf in items])).float(),
                 intrinsics=torch.from_numpy(np.stack(Ks)).float(), depths=depths, confidence=conf,
                 masks=[(c > thr) & (d > 0) for c, d in zip(conf, depths)], conf_threshold=thr,
                 names=[names[kf.frame] for kf in items])


def run_online(frames: Iterable[tuple[float, str, Any]], predictor: Any, config: OnlineConfig | None = None,
               output: OutputDir | None = None, formats: Sequence[str] = EXPORT_FORMATS,
               progress: bool = False) -> OnlineResult:
    """Track ``frames`` (``(timestamp, name, frame)`` as :func:`iter_frames` yields) with
    ``predictor``, refine the keyframes once more at the end and, with ``output``, write the
    trajectory (``trajectory_tum.txt``, ``frames.json``) and the keyframes' exports."""
    from tqdm.auto import tqdm

    tracker = Tracker(predictor, config)
    times: list[float] = []
    names: list[str] = []
    bar = tqdm(desc="online", unit="frame", disable=not progress)
    t0 = time.perf_counter()
    for t, name, frame in frames:
        times.append(t)
        names.append(name)
        tracker.add_frame(frame)
        bar.update(1)
        bar.set_postfix(keyframes=len(tracker.keyframes), refresh=False)
    bar.close()
    if not names:
        raise InputError("no frames to track")
    if tracker.config.refine_every:
        tracker.refine()
    res = OnlineResult(np.array(times), names, tracker.poses(), tracker.tracked(),
                       [kf.frame for kf in tracker.keyframes.items], time.perf_counter() - t0)
    if output is not None:
        res.paths = _write(output, tracker, res, formats)
    return res


def _write(output: OutputDir, tracker: Tracker, res: OnlineResult, formats: Sequence[str]) -> dict[str, Path]:
    """The trajectory and the keyframes' exports, in one commit of ``output``."""
    from ..export import export_scene

    scene = keyframe_scene(tracker, res.names)
    with output.writing() as tmp:
        write_tum(tmp / TRAJECTORY_FILE, res.timestamps, res.poses)
        frames = [{"name": n, "timestamp": float(t), "tracked": bool(ok), "keyframe": k in set(res.keyframes)}
                  for k, (n, t, ok) in enumerate(zip(res.names, res.timestamps, res.tracked))]
        atomic_write_text(tmp / FRAMES_FILE, strict_json({"frames": frames}))
        staged = tmp / "scene"
        export_scene(scene, staged, formats=tuple(formats))
        for p in staged.iterdir():  # the exports join the trajectory in the one commit
            if p.name == MANIFEST_NAME:
                p.unlink()
            else:
                p.rename(tmp / p.name)
        staged.rmdir()
    paths = {"trajectory_tum": output.path / TRAJECTORY_FILE, "frames": output.path / FRAMES_FILE}
    return paths | {f: output.path for f in formats}


def online_reconstruct(source: str | os.PathLike, output: str | os.PathLike | None, *, weights: str = "default",
                       size: int | None = None, device: str | None = None, dtype: str | None = None,
                       fast: bool = False, fps: float | None = None, max_frames: int | None = None, overwrite: bool = False,
                       config: OnlineConfig | None = None, conf_threshold: float | None = None,
                       formats: Sequence[str] = EXPORT_FORMATS, progress: bool = False) -> OnlineResult:
    """Follow the video or folder of frames ``source`` with a network: the refusals (source,
    output folder, settings) come before the model is loaded. ``conf_threshold`` (raw
    confidence) replaces the config's; ``None``: the model's recommendation. ``fast``: compiled
    network with bfloat16 trunk and heads (CUDA only)."""
    import dataclasses

    from ..inference import resolve_device
    from ..model import load_model

    check_source(source)
    (config or OnlineConfig()).check()
    dev = resolve_device(device)
    if fast and dev.type != "cuda":
        raise InputError("--fast needs a CUDA device (it compiles the network for the GPU)")
    out = None if output is None else OutputDir(output, overwrite=overwrite, inputs=[source], option="--overwrite")
    model = load_model(weights, device=dev)
    if fast:
        model.optimize_for_inference(trunk_dtype=torch.bfloat16, head_dtype=torch.bfloat16)
    thr = model.recommended_conf_threshold if conf_threshold is None else conf_threshold
    config = dataclasses.replace(config or OnlineConfig(), conf_threshold=thr)
    frames = iter_frames(source, size or model.config.native_size, fps, max_frames)
    predictor = NetworkPredictor(model, dev, dtype, retrieval=config.loop > 0, batch_size=config.window + config.loop)
    return run_online(frames, predictor, config, out, formats, progress)
