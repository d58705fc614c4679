"""A request's inputs to preprocessed images: image files, folders and video frames, in order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..images import LoadedImage, load_image_arrays, load_images
from ..video import is_video, read_video_frames
from .request import Inputs

__all__ = ["has_video", "load_inputs"]


def has_video(inputs: Inputs) -> bool:
    """Whether any input is a video file (by its extension)."""
    return any(is_video(p) for p in inputs.paths)


def load_inputs(inputs: Inputs, size: int) -> list[LoadedImage]:
    """Every input at ``size`` (224 or 512): images of files and folders, and the frames of each
    video sampled at ``inputs.fps`` (named ``<video stem>_frame<k>``), in the order given.

    ``inputs.max_pixels`` is passed to the photo loader only when set (video frames are decoded
    by OpenCV at their own size).

    Raises:
        ImageLoadError: an unreadable image (unless ``inputs.skip_bad``), an empty folder, an
            unreadable video.
    """
    extra = {} if inputs.max_pixels is None else {"max_pixels": inputs.max_pixels}
    images: list[LoadedImage] = []
    for group in _groups(inputs.paths):
        if is_video(group[0]):
            frames = load_image_arrays(read_video_frames(group[0], fps=inputs.fps, max_frames=inputs.max_frames),
                                       size=size)
            for k, im in enumerate(frames):
                im.meta = dataclasses.replace(im.meta, path=f"{Path(group[0]).stem}_frame{k:04d}")
            images += frames
            continue
        # consecutive files load together (with skip_bad, a bad file among good ones is skipped)
        images += load_images(group if len(group) > 1 or not Path(group[0]).is_dir() else group[0],
                              size=size, skip_bad=inputs.skip_bad, **extra)
    return images


def _groups(paths: list[str]) -> list[list[str]]:
    """``paths`` in order: each video and each folder on its own, consecutive files together."""
    out: list[list[str]] = []
    for p in paths:
        alone = is_video(p) or Path(p).is_dir()
        if alone or not out or is_video(out[-1][0]) or Path(out[-1][0]).is_dir():
            out.append([p])
        else:
            out[-1].append(p)
    return out
