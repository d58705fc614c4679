"""Atomic file output: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import OutputExistsError, PointmapError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "prepare_output_dir"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success fsync and rename it onto ``path``.

    On any exception (including a full disk) the temporary file is removed and ``path`` is left as
    it was. The exception is re-raised; ``OSError`` is wrapped in :class:`PointmapError` naming the
    file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, PointmapError):
            raise PointmapError(f"could not write {path}: {exc.strerror or exc}") from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def prepare_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Create an output folder; refuse a non-empty existing one unless ``overwrite``."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputExistsError(f"output path {path} exists and is not a folder")
        if any(path.iterdir()):
            if not overwrite:
                raise OutputExistsError(
                    f"output folder {path} is not empty; pass --overwrite to replace its contents"
                )
            for child in path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path
