"""Run a test's distributed ranks as spawned processes, with a native-crash report per rank.

Imported by the multi-process tests and the web-app test (not collected: it holds no tests).
"""

from __future__ import annotations

import faulthandler
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a rendezvous or a local server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _traced(rank: int, fn: Callable[..., None], fault_dir: str, args: tuple) -> None:
    """Run ``fn(rank, *args)`` with the Python stacks of all threads written to
    ``fault_dir/rank{rank}.txt`` if the process dies of a fatal signal."""
    with open(Path(fault_dir) / f"rank{rank}.txt", "w") as f:
        faulthandler.enable(file=f, all_threads=True)
        try:
            fn(rank, *args)
        finally:
            faulthandler.disable()


def _reports(fault_dir: Path) -> str:
    texts = {p.name: p.read_text() for p in sorted(fault_dir.glob("rank*.txt"))}
    return "\n".join(f"--- {name}\n{text}" for name, text in texts.items() if text.strip())


def spawn_ranks(fn: Callable[..., None], make_args: Callable[[int], tuple[Any, ...]], nprocs: int,
                fault_dir: Path, attempts: int = 2) -> None:
    """Run ``fn(rank, *make_args(attempt))`` in ``nprocs`` spawned processes and wait for them.

    A Python exception in any rank fails at once (``torch.multiprocessing.ProcessRaisedException``).
    A rank killed by a signal (a crash in native code: gloo, the allocator) is reported with the
    Python stacks of its threads at the moment of the crash, as a warning, and the whole run is
    repeated with fresh arguments (``make_args`` must give a new port and reset the outputs the
    ranks write) up to ``attempts`` times in all; a crash in the last attempt fails with the
    report in the message. ``fault_dir`` receives one report file per rank and attempt.
    """
    for attempt in range(attempts):
        sub = Path(fault_dir) / f"attempt{attempt}"
        sub.mkdir(parents=True, exist_ok=True)
        try:
            mp.spawn(_traced, args=(fn, str(sub), make_args(attempt)), nprocs=nprocs, join=True)
            return
        except mp.ProcessExitedException as e:
            if not e.signal_name:  # exited with a status (e.g. os._exit): not a crash
                raise
            report = f"rank {e.error_index} died of {e.signal_name} (attempt {attempt + 1} of {attempts})\n"
            report += _reports(sub) or "(no Python stack was recorded)"
            if attempt + 1 == attempts:
                raise AssertionError(report) from e
            warnings.warn(f"{report}\nrunning the ranks again", RuntimeWarning, stacklevel=2)
