"""Run a test's distributed ranks as spawned processes, with a native-crash report per rank.

Imported by the multi-process tests and the web-app test (not collected: it holds no tests).

Why a crashed run is repeated once: twice in many CI runs (a SIGSEGV, later a SIGABRT) one gloo
rank of the two-process FSDP test died inside native code on the loaded 2-core CI machine, while
hundreds of local runs did not reproduce it. The crash is reported (the crashed thread's Python
stack, as a warning in the test summary and in ``fault_dir``) and the run is repeated from clean
outputs; a second crash fails the test, so a crash that comes back is never hidden.
"""

from __future__ import annotations

import faulthandler
import re
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


def crashed_thread(report: str) -> str:
    """The part of a :mod:`faulthandler` report that matters first: the fatal error line and the
    stack of the thread that crashed (``Current thread ...``), without the other threads' stacks
    and the list of extension modules."""
    head = report.split("\n", 1)[0]
    m = re.search(r"(?ms)^Current thread.*?(?=^\S|\Z)", report)
    if not m:
        return report.strip()
    return f"{head}\n{m.group(0).rstrip()}" if head.startswith("Fatal") else m.group(0).rstrip()


def _report(fault_dir: Path, crashed: int) -> str:
    path = fault_dir / f"rank{crashed}.txt"
    text = path.read_text() if path.exists() else ""
    if not text.strip():
        return "(no Python stack was recorded)"
    return crashed_thread(text) + f"\n(all threads of every rank: {fault_dir})"


def spawn_ranks(fn: Callable[..., None], make_args: Callable[[int], tuple[Any, ...]], nprocs: int,
                fault_dir: Path, attempts: int = 2) -> None:
    """Run ``fn(rank, *make_args(attempt))`` in ``nprocs`` spawned processes and wait for them.

    A Python exception in any rank fails at once (``torch.multiprocessing.ProcessRaisedException``).
    A rank killed by a signal (a crash in native code: gloo, the allocator) is reported with the
    stack of its crashed thread as a ``RuntimeWarning`` and the whole run is repeated with fresh
    arguments (``make_args(attempt)`` gives a new port and resets whatever the ranks write), up to
    ``attempts`` runs in all; a crash in the last one fails with an ``AssertionError`` holding the
    report. ``fault_dir/attempt{k}/rank{r}.txt`` keeps every rank's full report.
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
            report = (f"rank {e.error_index} died of {e.signal_name} (run {attempt + 1} of {attempts})\n"
                      + _report(sub, e.error_index))
            if attempt + 1 == attempts:
                raise AssertionError(report) from e
            warnings.warn(f"{report}\nrunning the ranks again", RuntimeWarning, stacklevel=2)
