"""Safe output: atomic files (write a temporary file beside the target, then rename) and output
folders (:class:`OutputDir`: staged beside the target, moved into place at the end, a manifest of
what pointmap wrote so that it never replaces anything else)."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import logging
import math
import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

from .errors import OutputExistsError, OutputOverlapError, OutputPathError, PointmapError

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "OutputDir",
    "STAGING_MARKER",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_not_an_input",
    "check_output_file",
    "current_umask",
    "remove_stale_staging",
    "strict_json",
    "write_json",
]


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux
    ``/proc/self/status``); elsewhere set and restored at once."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file's path next to ``path``, for a writer that takes a file name; on success
    it is fsynced (in a staging folder of :meth:`OutputDir.writing`: with the whole folder, before
    its commit) and renamed onto ``path``.

    The file gets the mode a plain ``open`` would give it (``0666`` less the umask: ``0644`` under
    umask 022), not the private ``0600`` of a temporary file. On any exception (including a full
    disk) the temporary file is removed and ``path`` is left as it was. The exception is
    re-raised; ``OSError`` is wrapped in :class:`PointmapError` naming the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        yield Path(tmp)
        if not _synced_at_commit(path):
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, PointmapError):
            raise PointmapError(f"could not write {path}: {exc.strerror or exc}") from exc
        raise


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_STAGING: set[str] = set()
"""Staging folders of :meth:`OutputDir.writing` being filled: flushed at once, not file by file."""


def _synced_at_commit(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in a staging folder being filled (see :data:`_STAGING`)."""
    return any(os.fspath(path).startswith(os.path.join(folder, "")) for folder in tuple(_STAGING))


def _syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs`` (Linux: flushes one file system, reports write errors), or None."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    except (OSError, TypeError):  # no C library to load this way (Windows)
        return None


def _flush_to_disk(folder: Path) -> None:
    """Flush the files of ``folder`` to disk: one ``syncfs`` of its file system where the system
    has it, else an fsync of each file. Raises ``OSError`` for a write that failed."""
    syncfs = _syncfs()
    if syncfs is None:
        for p in folder.rglob("*"):
            if p.is_file() and not p.is_symlink():
                _fsync(p)
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(folder))
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success fsync and rename it onto ``path``
    (:func:`atomic_path`: same mode, same clean-up and errors)."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as strict JSON text: ``NaN`` and infinities become ``null`` (strict parsers reject
    them), numpy scalars and arrays become plain numbers and lists."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalars and arrays
        return _finite(obj.tolist())
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write :func:`strict_json` of ``obj`` to ``path`` atomically; returns the path."""
    atomic_write_text(path, strict_json(obj, indent) + "\n")
    return Path(path)


MANIFEST_NAME = ".pointmap-manifest.json"
"""The file in an output folder that lists (relative paths) the files pointmap wrote there."""

STAGING_MARKER = ".pointmap-staging.json"
"""The file in each staging folder pointmap makes (the process id and host of the run), by which
a later run recognises the staging folder of a killed run as its own to remove."""


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_not_an_input(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an output folder that is an input, contains an input or lies inside an input folder.

    Raises:
        OutputOverlapError: naming the output folder and the input.
    """
    out = _real(output)
    for item in inputs:
        inp = _real(item)
        if out == inp:
            raise OutputOverlapError(f"output folder {output} is the input {item}; choose another "
                                     "output folder")
        if _is_within(inp, out):
            raise OutputOverlapError(f"output folder {output} contains the input {item}; choose an "
                                     "output folder that holds no input")
        if _is_within(out, inp):
            raise OutputOverlapError(f"output folder {output} lies inside the input folder {item}; "
                                     "choose an output folder outside it")


def _read_manifest(folder: Path) -> set[str]:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        return {str(f) for f in data["files"] if isinstance(f, str) and ".." not in Path(f).parts}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _write_manifest(folder: Path, files: set[str]) -> None:
    from . import __version__

    write_json(folder / MANIFEST_NAME, {"written_by": f"pointmap {__version__}", "files": sorted(files)}, 1)


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if (p.is_file() or p.is_symlink()) and p.name not in (MANIFEST_NAME, STAGING_MARKER)}


class OutputDir:
    """An output folder that pointmap fills safely.

    * pointmap never deletes or replaces a file it did not write: each run records the files it
      wrote in :data:`MANIFEST_NAME`, and ``overwrite`` replaces only those. A file in the folder
      that a run would write but that pointmap did not write makes the run fail, naming it.
    * An output folder that is an input, contains one or lies inside an input folder is refused
      (:func:`check_not_an_input`), as is a path under a regular file or in an unwritable place.
      All checks run in the constructor, so a caller makes one before doing any work.
    * :meth:`writing` gives a temporary folder beside the target; the results move into place
      only when the block ends without an error, so a failed or interrupted run leaves the
      previous results as they were and no half-written or empty folder. A run that is killed
      (SIGKILL, power cut) leaves its temporary folder; the next run that completes removes it
      (:func:`remove_stale_staging`, recognised by :data:`STAGING_MARKER`).
    * Files get the modes ``open`` would give them under the umask, folders those of ``mkdir``.
    * The temporary folder's files are flushed to disk at once before they move into place.

    Args:
        path: the output folder.
        overwrite: replace the results of an earlier run in ``path``; otherwise a folder that is
            not empty is refused with :class:`~pointmap.errors.OutputExistsError`.
        inputs: input files and folders the output must stay clear of.
        option: how the user names ``overwrite`` in messages (``"--overwrite"`` on the command line).
        keep: names of entries of the folder that pointmap writes in place, outside the temporary
            folder (the predictions store of a resumable run): they do not make the folder count
            as not empty, and committing the results leaves them alone.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False,
                 inputs: Sequence[str | os.PathLike] = (), option: str = "overwrite=True",
                 keep: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.keep = tuple(keep)
        self.overwrite = overwrite
        self.option = option
        check_not_an_input(self.path, inputs)
        real = _real(self.path)
        for parent in [real, *real.parents]:
            if parent.exists() and not parent.is_dir():
                if parent == real:
                    raise OutputExistsError(f"output path {path} exists and is not a folder")
                raise OutputPathError(f"output path {path} lies under {parent}, which is a file, "
                                      "not a folder; choose another output folder")
        if self.path.is_dir() and any(c.name not in self.keep for c in self.path.iterdir()) \
                and not overwrite:
            raise OutputExistsError(f"output folder {path} is not empty; pass {option} to replace "
                                    "the results of an earlier run (other files there are kept), or "
                                    "choose another folder")
        _probe_writable(next(p for p in [real, *real.parents] if p.exists()), path, "output folder")

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """Yield a fresh temporary folder beside the target; on success move its files into place.

        On any exception (including ``KeyboardInterrupt``) the temporary folder and any parent
        folders created for it are removed and the target is left untouched.
        """
        parent = _real(self.path).parent
        created = [p for p in [parent, *parent.parents] if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = self._make_temporary(parent)
        except OSError as exc:
            self._remove_empty(created)
            raise OutputPathError(f"cannot write to output folder {self.path}: "
                                  f"{exc.strerror or exc}") from exc
        _STAGING.add(str(tmp))
        try:
            try:
                yield tmp
            finally:
                _STAGING.discard(str(tmp))
            _flush_to_disk(tmp)
            self._commit(tmp)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder is this run's own
            if not self.path.exists():
                self._remove_empty(created)
            if isinstance(exc, OSError) and not isinstance(exc, PointmapError):
                raise OutputPathError(f"could not write to output folder {self.path}: "
                                      f"{exc.strerror or exc}") from exc
            raise

    def _make_temporary(self, parent: Path) -> Path:
        for _ in range(100):  # os.mkdir honours the umask (mkdtemp would make it private)
            tmp = parent / f".{self.path.name}.{secrets.token_hex(4)}.partial"
            try:
                tmp.mkdir()
            except FileExistsError:
                continue
            owner = {"pid": os.getpid(), "host": socket.gethostname()}
            (tmp / STAGING_MARKER).write_text(json.dumps(owner) + "\n", encoding="utf-8")
            return tmp
        raise FileExistsError(f"no free temporary name beside {self.path}")

    @staticmethod
    def _remove_empty(folders: list[Path]) -> None:
        for p in folders:  # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()

    def _commit(self, tmp: Path) -> None:
        new = _files_under(tmp)
        target = self.path
        if not target.exists():
            _write_manifest(tmp, new)
            (tmp / STAGING_MARKER).unlink()  # the folder becomes the output, not a staging folder
            os.replace(tmp, target)  # the whole folder appears at once
            remove_stale_staging(target)
            return
        old = _read_manifest(target)
        foreign = sorted(f for f in new if (target / f).exists() and f not in old)
        if foreign:
            raise OutputExistsError(
                f"output folder {target} already holds {foreign[0]}"
                + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else "")
                + ", which pointmap did not write; move it away or choose another output folder")
        _write_manifest(target, old | new)  # a crash from here on leaves no unlisted file
        for f in sorted(new):
            dst = target / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir() and not dst.is_symlink():
                raise OutputExistsError(f"output folder {target} holds a folder {f} where pointmap "
                                        "writes a file; move it away or choose another output folder")
            os.replace(tmp / f, dst)
        for f in sorted(old - new):  # results of the earlier run that this run did not write
            stale = target / f
            with contextlib.suppress(FileNotFoundError):
                if stale.is_file() or stale.is_symlink():
                    stale.unlink()
            for d in stale.parents:  # folders it leaves empty
                if d == target or target not in d.parents:
                    break
                with contextlib.suppress(OSError):
                    d.rmdir()
        _write_manifest(target, new)
        shutil.rmtree(tmp, ignore_errors=True)
        remove_stale_staging(target)


def _staging_owner_gone(folder: Path) -> bool:
    """Whether ``folder`` is a staging folder of a pointmap run on this machine that has ended:
    it holds :data:`STAGING_MARKER` naming this host and a process id that no longer runs."""
    try:
        owner = json.loads((folder / STAGING_MARKER).read_text(encoding="utf-8"))
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, under another user
        return False
    return False


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove the staging folders (``.NAME.<hex>.partial`` beside ``target``) that an earlier,
    killed run of pointmap left: only folders holding pointmap's :data:`STAGING_MARKER` whose
    process has ended; anything else, however named, is left alone. Returns the folders removed."""
    target = Path(target)
    removed = []
    for cand in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
        if cand.is_dir() and not cand.is_symlink() and _staging_owner_gone(cand):
            shutil.rmtree(cand, ignore_errors=True)
            removed.append(cand)
    if removed:
        log.info("removed %d staging folder(s) that an interrupted earlier run left beside %s",
                 len(removed), target)
    return removed


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False,
                      inputs: Sequence[str | os.PathLike] = (), option: str = "overwrite=True") -> Path:
    """Checks before writing one output file: not an input, not under a regular file, and an
    existing file only with ``overwrite`` (then :func:`atomic_write` replaces it in one step).

    Raises:
        OutputOverlapError, OutputExistsError, OutputPathError: naming the path.
    """
    path = Path(path)
    real = _real(path)
    for item in inputs:
        if _real(item) == real:
            raise OutputOverlapError(f"output file {path} is the input {item}; choose another output file")
    for parent in real.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputPathError(f"output path {path} lies under {parent}, which is a file, not a folder")
    if real.is_dir():
        raise OutputExistsError(f"output path {path} is a folder; give a file name")
    if real.exists() and not overwrite:
        raise OutputExistsError(f"output file {path} exists; pass {option} to replace it")
    _probe_writable(next(p for p in real.parents if p.exists()), path, "output file")
    return path


def _probe_writable(folder: Path, path: str | os.PathLike, what: str) -> None:
    """Create and remove an empty folder in ``folder`` (permission bits alone say nothing about a
    read-only file system or a pseudo file system such as /proc)."""
    probe = folder / f".pointmap-probe-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputPathError(f"cannot write the {what} {path}: {folder} is not writable "
                              f"({exc.strerror or exc}); choose another place") from exc


def foreign_files(folder: str | os.PathLike, entries: Sequence[str]) -> list[str]:
    """Files of ``folder`` under ``entries`` (relative paths of files or folders a run will write
    there) that pointmap did not write (not in its manifest), sorted: what
    :meth:`OutputDir.writing` would refuse to replace at the end, found before any work."""
    root = Path(folder)
    if not root.is_dir():
        return []
    ours = _read_manifest(root)
    found = set()
    for entry in entries:
        p = root / entry
        if p.is_dir() and not p.is_symlink():
            found |= {f"{entry}/{f}" for f in _files_under(p)}
        elif p.exists() or p.is_symlink():
            found.add(Path(entry).as_posix())
    return sorted(found - ours)
