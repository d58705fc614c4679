"""Frames from a video file, sampled at a given rate (OpenCV decoding)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import ImageLoadError, InputError

__all__ = ["VIDEO_EXTENSIONS", "is_video", "iter_video_frames", "read_video_frames"]

VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file by its extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def iter_video_frames(path: str | os.PathLike, fps: float | None = None,
                      max_frames: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Decode ``path`` frame by frame, keeping one frame every ``1 / fps`` seconds (every frame
    when ``fps`` is ``None``), at most ``max_frames``; only one decoded frame is held at a time.

    Yields:
        ``(timestamp in seconds, RGB uint8 (H, W, 3))``.

    Raises:
        ImageLoadError: the file cannot be opened or holds no frames.
        InputError: ``fps`` not positive.
    """
    import cv2

    if fps is not None and fps <= 0:
        raise InputError(f"fps must be positive, not {fps}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImageLoadError(f"cannot open video {path} (missing file or unsupported codec)")
    native = cap.get(cv2.CAP_PROP_FPS) or 30.0
    step = 1 if fps is None else max(1, round(native / fps))
    kept = k = 0
    try:
        while max_frames is None or kept < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if k % step == 0:
                kept += 1
                yield k / native, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            k += 1
    finally:
        cap.release()
    if not kept:
        raise ImageLoadError(f"video {path} has no readable frames")


def read_video_frames(path: str | os.PathLike, fps: float = 1.0, max_frames: int = 200) -> list[np.ndarray]:
    """Decode ``path`` and keep one frame every ``1 / fps`` seconds (at most ``max_frames``).

    Returns RGB ``uint8`` arrays ``(H, W, 3)``.

    Raises:
        ImageLoadError: the file cannot be opened or holds no frames.
    """
    return [frame for _, frame in iter_video_frames(path, fps, max_frames)]
