"""Frames from a video file, sampled at a given rate (OpenCV decoding)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ImageLoadError, InputError

__all__ = ["VIDEO_EXTENSIONS", "is_video", "read_video_frames"]

VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file by its extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def read_video_frames(path: str | os.PathLike, fps: float = 1.0, max_frames: int = 200) -> list[np.ndarray]:
    """Decode ``path`` and keep one frame every ``1 / fps`` seconds (at most ``max_frames``).

    Returns RGB ``uint8`` arrays ``(H, W, 3)``.

    Raises:
        ImageLoadError: the file cannot be opened or holds no frames.
    """
    import cv2

    if fps <= 0:
        raise InputError(f"fps must be positive, not {fps}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImageLoadError(f"cannot open video {path} (missing file or unsupported codec)")
    native = cap.get(cv2.CAP_PROP_FPS) or 30.0
    step = max(1, round(native / fps))
    frames: list[np.ndarray] = []
    k = 0
    try:
        while len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if k % step == 0:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            k += 1
    finally:
        cap.release()
    if not frames:
        raise ImageLoadError(f"video {path} has no readable frames")
    return frames
