"""Run a test's distributed ranks as spawned processes, with a native-crash report per rank.

Imported by the multi-process tests and the web-app test (not collected: it holds no tests).
"""

from __future__ import annotations

import faulthandler
import socket
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


def spawn_ranks(fn: Callable[..., None], args: tuple[Any, ...], nprocs: int, fault_dir: Path) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` spawned processes and wait for them, once.

    A Python exception in any rank fails at once (``torch.multiprocessing.ProcessRaisedException``).
    A rank killed by a signal (a crash in native code: gloo, the allocator) fails the test with an
    ``AssertionError`` whose message holds the Python stacks of the crashed rank's threads at the
    moment of the crash; it is not re-run (a re-run would hide a flaky crash). ``fault_dir``
    receives one report file per rank.
    """
    fault_dir = Path(fault_dir)
    fault_dir.mkdir(parents=True, exist_ok=True)
    try:
        mp.spawn(_traced, args=(fn, str(fault_dir), args), nprocs=nprocs, join=True)
    except mp.ProcessExitedException as e:
        if not e.signal_name:  # exited with a status (e.g. os._exit): not a crash
            raise
        report = f"rank {e.error_index} died of {e.signal_name}\n"
        report += _reports(fault_dir) or "(no Python stack was recorded)"
        raise AssertionError(report) from e
