"""Follow a stream of frames: each new frame is paired with recent keyframes (and one found for
loop closure), placed by PnP-RANSAC against their world points, and made a keyframe when it sees
too little of them; the keyframes are refined together now and then by global alignment.

Memory is bounded whatever the stream's length: a frame that is not a keyframe is reduced to its
pose relative to a keyframe once tracked, and keyframes keep reduced (every ``stride``-th pixel,
float16) pointmaps, at most ``max_keyframes`` of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from ..align import AlignConfig, global_align
from ..align.poses import localize_from_correspondences
from ..errors import InputError
from ..geometry.camera import estimate_focal_from_pixels, pixel_grid
from ..geometry.registration import align_multiple_poses
from ..predictions import PairPredictions
from .keyframes import Keyframe, KeyframeSet, overlap_fraction

__all__ = ["OnlineConfig", "PairOutput", "PairPredictor", "Tracker"]

PairOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""One pair (new frame, other): ``pts3d_1 (H, W, 3)`` the new frame in its own camera frame,
``conf_1 (H, W)``, ``pts3d_2_in_1 (H, W, 3)`` the other frame in the new frame's camera, ``conf_2``."""


class PairPredictor(Protocol):
    """What the tracker needs of the network (the synthetic tests give exact ones). The tracker
    calls :meth:`encode` once per frame; what it returns is what :meth:`predict` and
    :meth:`descriptor` take, and what a keyframe keeps (dropped with the keyframe)."""

    def encode(self, frame: Any) -> Any:
        """What pairing ``frame`` needs of it (a network: its encoder output)."""

    def predict(self, frame: Any, others: Sequence[Any]) -> list[PairOutput]:
        """The pair ``(frame, other)`` for each of ``others`` (``[frame]`` itself: its self-pair),
        all as :meth:`encode` returned them."""

    def descriptor(self, frame: Any) -> torch.Tensor | None:
        """``(D,)`` unit global descriptor of an encoded ``frame`` for retrieval, or ``None``."""

    def colours(self, frame: Any) -> torch.Tensor | None:
        """``(H, W, 3)`` colours in ``[0, 1]`` at the prediction resolution, or ``None``."""


@dataclass
class OnlineConfig:
    """Settings of online tracking.

    Attributes:
        window: recent keyframes each new frame is paired with.
        loop: further keyframes paired with it for loop closure (by global descriptor, or by the
            nearest camera when the predictor has no descriptors).
        keyframe_overlap: a frame becomes a keyframe when the keyframes it was paired with show
            less than this fraction of their confident points inside it.
        conf_threshold: raw confidence (``1 + exp(x)``, > 1) of the points used.
        stride: keyframe pointmaps keep every ``stride``-th pixel (float16).
        max_keyframes: keyframes kept for pairing; the oldest beyond it are retired.
        refine_every: global alignment of the keyframes after this many new keyframes, and once at
            the end (0: never; off by default: on the synthetic video of ``benchmarks/bench_online.py``
            it did not lower the trajectory error).
        pnp_iterations, reproj_error: PnP-RANSAC iterations and inlier threshold (pixels).
        min_inliers: fewer PnP inliers leave a frame untracked (it keeps the last pose).
        max_points: most 2D-3D correspondences in one PnP (an even subsample above it).
    """

    window: int = 3
    loop: int = 1
    keyframe_overlap: float = 0.85
    conf_threshold: float = 3.0
    stride: int = 2
    max_keyframes: int = 256
    refine_every: int = 0
    pnp_iterations: int = 200
    reproj_error: float = 3.0
    min_inliers: int = 30
    max_points: int = 4000

    def check(self) -> None:
        """Refuse settings that cannot work (one line naming the setting)."""
        if self.window < 1 or self.stride < 1 or self.max_keyframes < self.window + max(self.loop, 0):
            raise InputError("online settings: window and stride must be at least 1 and max_keyframes "
                             "at least window + loop")
        if not 0 < self.keyframe_overlap < 1:
            raise InputError(f"keyframe overlap {self.keyframe_overlap:g} must lie strictly between 0 and 1")


@dataclass
class _Track:
    """A frame reduced to its pose: relative to keyframe ``ref`` (a frame index)."""

    ref: int
    rel: np.ndarray
    tracked: bool


class Tracker:
    """Online tracking of a frame stream (see the module docstring).

    Args:
        predictor: pair predictions of a new frame with keyframes (:class:`PairPredictor`).
        config: :class:`OnlineConfig`.
    """

    def __init__(self, predictor: PairPredictor, config: OnlineConfig | None = None) -> None:
        self.predictor = predictor
        self.config = config or OnlineConfig()
        self.config.check()
        self.keyframes = KeyframeSet(self.config.max_keyframes)
        self.kf_poses: dict[int, np.ndarray] = {}  # every keyframe ever, retired ones included
        self.kf_pairs: dict[tuple[int, int], PairOutput] = {}  # reduced, for refinement
        self.tracks: list[_Track] = []
        self.last_pose = np.eye(4)
        self.since_refine = 0
        self.refinements = 0

    @property
    def n_frames(self) -> int:
        """Frames seen so far."""
        return len(self.tracks)

    def stored_frames(self) -> int:
        """Frames whose maps are held (the keyframes still paired with new frames)."""
        return len(self.keyframes)

    def poses(self) -> np.ndarray:
        """``(N, 4, 4)`` float64 camera-to-world of every frame seen, in the first frame's camera
        frame (scale: that of the first frame's self-pair prediction)."""
        return np.stack([self.kf_poses[t.ref] @ t.rel for t in self.tracks]) if self.tracks \
            else np.zeros((0, 4, 4))

    def tracked(self) -> np.ndarray:
        """``(N,)`` bool: whether each frame was placed (else it kept the previous pose)."""
        return np.array([t.tracked for t in self.tracks], dtype=bool)

    def add_frame(self, frame: Any) -> bool:
        """Track ``frame``; returns whether it became a keyframe."""
        enc = self.predictor.encode(frame)
        if not self.keyframes:
            q, cq, _, _ = self.predictor.predict(enc, [enc])[0]
            self._new_keyframe(frame, enc, np.eye(4), self._intrinsics(q), q, cq, {})
            return True
        cfg = self.config
        cands = [self.keyframes.items[k] for k in self.keyframes.candidates(
            self.last_pose, cfg.window, cfg.loop, self.predictor.descriptor(enc) if cfg.loop > 0 else None)]
        outs = self.predictor.predict(enc, [kf.image for kf in cands])
        q, cq = outs[0][0].float(), outs[0][1].float()
        K = self._intrinsics(q)
        pose, scales = self._place(q, K, cands, outs)
        if pose is None:  # not placed: keep the last pose, relative to the latest keyframe
            ref = cands[-1] if len(self.keyframes) <= cfg.window else self.keyframes.items[-1]
            self.tracks.append(_Track(ref.frame, np.linalg.inv(ref.pose) @ self.last_pose, False))
            return False
        self.last_pose = pose
        overlaps = [overlap_fraction(kf.confident_points(cfg.conf_threshold), pose, K, q.shape[:2]) for kf in cands]
        if max(overlaps) == 0:  # no confident points (a weak model): every point counts
            overlaps = [overlap_fraction(kf.confident_points(0.0), pose, K, q.shape[:2]) for kf in cands]
        if max(overlaps) < cfg.keyframe_overlap:
            # the frame's own points: the mean of its pairs' predictions, each at its scale
            own = [o[0].float() * sc for o, sc in zip(outs, scales) if np.isfinite(sc)]
            self._new_keyframe(frame, enc, pose, K, torch.stack(own).mean(0), cq,
                               {kf.frame: o for kf, o in zip(cands, outs)})
            return True
        ref = cands[int(np.argmax(overlaps))]
        self.tracks.append(_Track(ref.frame, np.linalg.inv(ref.pose) @ pose, True))
        return False

    @staticmethod
    def _intrinsics(pts: torch.Tensor, most_pixels: int = 8192) -> np.ndarray:
        """``(3, 3)`` intrinsics of the camera-frame pointmap ``pts (H, W, 3)``: principal point
        ``(W/2, H/2)``, focal by :func:`~pointmap.geometry.camera.estimate_focal_from_pixels` on
        an even grid of at most about ``most_pixels`` pixels (every pixel of small frames; a
        512x384 frame has every 5th: the full grid was most of the tracker's own time)."""
        H, W = pts.shape[:2]
        step = max(1, math.ceil(math.sqrt(H * W / most_pixels)))
        uv = pixel_grid(H, W)[::step, ::step].reshape(-1, 2)
        pp = torch.tensor([W / 2, H / 2])
        f = float(estimate_focal_from_pixels(pts[::step, ::step].float().reshape(-1, 3), uv, pp))
        return np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])

    def _place(self, q: torch.Tensor, K: np.ndarray, cands: list[Keyframe],
               outs: list[PairOutput]) -> tuple[np.ndarray | None, list[float]]:
        """Pose of the new frame by PnP-RANSAC, and per pair the scale taking its prediction to
        world units (NaN where unknown). Each keyframe pixel kept (confident in the keyframe and in the pair; every pixel
        when too few are) gives a 2D-3D correspondence: its world point, and where the pair
        predicts it in the new frame (``pts3d_2_in_1`` projected with ``K``)."""
        cfg = self.config
        worlds, cams = self._correspondences(cands, outs, cfg.conf_threshold)
        if sum(len(w) for w in worlds) < cfg.min_inliers:  # too few confident points: use them all
            worlds, cams = self._correspondences(cands, outs, 0.0)
        world, cam = torch.cat(worlds), torch.cat(cams)
        if len(world) > cfg.max_points:  # an even subsample
            pick = torch.linspace(0, len(world) - 1, cfg.max_points).long()
            world, cam = world[pick], cam[pick]
        uv = cam[:, :2] / cam[:, 2:] * torch.tensor(np.diag(K)[:2]) + torch.tensor(K[:2, 2])
        T, inliers = localize_from_correspondences(uv, world.numpy(), tuple(q.shape[:2]), K, cfg.pnp_iterations,
                                                   cfg.reproj_error)
        if inliers < cfg.min_inliers or not np.isfinite(T).all():
            return None, []
        Tinv = torch.from_numpy(np.linalg.inv(T))
        scales = []
        for w, c in zip(worlds, cams):  # each pair has its own scale
            ratio = ((w @ Tinv[2, :3] + Tinv[2, 3]) / c[:, 2]).numpy()
            ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
            scales.append(float(np.median(ratio)) if len(ratio) else float("nan"))
        return (T, scales) if np.isfinite(scales[0]) else (None, [])

    def _correspondences(self, cands: list[Keyframe], outs: list[PairOutput], threshold: float
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per keyframe, world points ``(M, 3)`` and the pair's points ``(M, 3)`` in the new
        frame's camera of its pixels confident (above ``threshold``) in the keyframe and the pair."""
        s = self.config.stride
        worlds, cams = [], []
        for kf, (_, _, d, cd) in zip(cands, outs):
            pts = d[::s, ::s].double().reshape(-1, 3)
            keep = ((cd[::s, ::s].float() > threshold) & (kf.conf.float() > threshold)).reshape(-1) & (pts[:, 2] > 0)
            worlds.append(kf.world.double().reshape(-1, 3)[keep])
            cams.append(pts[keep])
        return worlds, cams

    def _new_keyframe(self, frame: Any, enc: Any, pose: np.ndarray, K: np.ndarray, pts: torch.Tensor,
                      conf: torch.Tensor, pairs: dict[int, PairOutput]) -> None:
        s = self.config.stride
        H, W = pts.shape[:2]
        R, t = torch.from_numpy(pose[:3, :3]), torch.from_numpy(pose[:3, 3])
        world = (pts[::s, ::s].double() @ R.T + t).half()
        rgb = self.predictor.colours(frame)
        rgb = torch.full((*world.shape[:2], 3), 0.5) if rgb is None else rgb[::s, ::s]
        idx = self.n_frames
        kf = Keyframe(idx, pose.copy(), K, (H, W), world, conf[::s, ::s].half(), rgb.half(), enc,
                      self.predictor.descriptor(enc) if self.config.loop > 0 else None)
        self.keyframes.add(kf)
        self.kf_poses[idx] = kf.pose
        self.tracks.append(_Track(idx, np.eye(4), True))
        live = {k.frame for k in self.keyframes.items}
        for other, out in pairs.items():
            self.kf_pairs[(idx, other)] = tuple(x[::s, ::s].half() for x in out)  # type: ignore[assignment]
        self.kf_pairs = {p: v for p, v in self.kf_pairs.items() if p[0] in live and p[1] in live}
        self.since_refine += 1
        if self.config.refine_every and self.since_refine >= self.config.refine_every:
            self.refine()

    def refine(self) -> None:
        """Globally align the live keyframes from their stored pair predictions and move them (and
        the frames tracked against them) to the result, kept in the current world frame."""
        self.since_refine = 0
        items = self.keyframes.items
        local = {kf.frame: k for k, kf in enumerate(items)}
        pairs = sorted(self.kf_pairs)
        if len(items) < 3 or not pairs:
            return
        outs = [self.kf_pairs[p] for p in pairs]
        preds = PairPredictions([(local[a], local[b]) for a, b in pairs], *[[o[k].float() for o in outs]
                                for k in range(4)], n_images=len(items))
        cfg = AlignConfig(conf_threshold=self.config.conf_threshold)
        scene = global_align(preds, None, cfg, progress=False)
        ok = scene.placed.numpy()
        if ok.sum() < 3:
            return
        new = scene.poses.double()
        old = torch.from_numpy(np.stack([kf.pose for kf in items]))
        sc, Rm, tv = align_multiple_poses(new[ok], old[ok])
        for k in np.flatnonzero(ok):
            P = np.eye(4)
            P[:3, :3] = (Rm @ new[k, :3, :3]).numpy()
            P[:3, 3] = (sc * Rm @ new[k, :3, 3] + tv).numpy()
            items[k].move(P)
            self.kf_poses[items[k].frame] = items[k].pose
        self.last_pose = self.kf_poses[self.tracks[-1].ref] @ self.tracks[-1].rel
        self.refinements += 1
