"""Exceptions raised for problems a user can cause (bad files, bad arguments)."""

from __future__ import annotations

__all__ = [
    "PointmapError",
    "CheckpointError",
    "ImageLoadError",
    "GraphError",
    "DatasetError",
    "OutputExistsError",
    "ConfigError",
    "OutputOverlapError",
    "OutputPathError",
    "InputError",
    "DeviceError",
    "FormatError",
    "install_hint",
]


class PointmapError(Exception):
    """Base class: the message says what is wrong and, where possible, what to do.

    ``cli_message``, when set, says the same in the command line's terms (options rather than
    Python arguments); the command line prints it instead of the message.
    """

    cli_message: str | None = None


class CheckpointError(PointmapError):
    """A checkpoint could not be read, is not a DUSt3R checkpoint, or does not match its config."""


class ImageLoadError(PointmapError):
    """An image file could not be read or decoded."""


class GraphError(PointmapError, ValueError):
    """An invalid scene-graph specification or pair list."""


class DatasetError(PointmapError):
    """A dataset folder is missing files or has a malformed layout."""


class OutputExistsError(PointmapError, FileExistsError):
    """An output would overwrite existing results without ``overwrite=True``."""


class ConfigError(PointmapError, ValueError):
    """A configuration file or override is invalid (unknown key, bad value); the message names it."""


class OutputOverlapError(PointmapError):
    """An output folder that is an input, contains an input or lies inside an input folder."""


class OutputPathError(PointmapError):
    """An output path that cannot be written (under a regular file, read-only, no permission)."""


class InputError(PointmapError, ValueError):
    """An argument or value a user passed is out of range or of the wrong kind."""


class DeviceError(PointmapError, ValueError):
    """A compute device that does not exist on this computer (the message lists those that do)."""


class FormatError(PointmapError):
    """An interchange file (a COLMAP model, a ``transforms.json``) that is missing, unreadable or
    malformed; the message names the file and what is wrong with it."""


def install_hint(extra: str) -> str:
    """The command that adds an optional extra (``hub``, ``heic``, ``app``...) from the pointmap
    clone while keeping the installed PyTorch (pinned to its version, so that pip fetches no other
    build), e.g. ``pip install torch==2.13.0 -e ".[hub]"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pin = f"torch=={version('torch').split('+')[0]} "
    except PackageNotFoundError:
        pin = ""
    return f'pip install {pin}-e ".[{extra}]" (in the pointmap clone)'
