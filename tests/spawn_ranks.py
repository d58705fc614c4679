"""Run a test's distributed ranks as spawned processes, with a native-crash report per rank.

Imported by the multi-process tests and the web-app test (not collected: it holds no tests).

Why a crashed or stuck run is repeated once: twice in many CI runs (a SIGSEGV, later a SIGABRT)
one gloo rank of the two-process FSDP test died inside native code on the loaded 2-core machine,
and once in about twenty local runs under load the two ranks hung inside gloo's all-gather while
gathering the full optimiser state (rank 0 waiting for its send to complete, rank 1 spinning in the
destructor of its finished buffer). Neither is in pointmap's code. The ranks' collectives get a
timeout (``pg_timeout``) so that a hang becomes a gloo timeout error; a crash or a timeout is
reported (the crashed thread's Python stack or the error, as a warning in the test summary, with
every rank's report in ``fault_dir``) and the run is repeated from clean outputs; a second failure
fails the test, so a failure that comes back is never hidden.
"""

from __future__ import annotations

import datetime
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


def _traced(rank: int, fn: Callable[..., None], fault_dir: str, pg_timeout: float, args: tuple) -> None:
    """Run ``fn(rank, *args)`` with the Python stacks of all threads written to
    ``fault_dir/rank{rank}.txt`` if the process dies of a fatal signal, and ``pg_timeout`` seconds
    as the default timeout of the process groups it creates."""
    import torch.distributed.distributed_c10d as c10d

    c10d.default_pg_timeout = datetime.timedelta(seconds=pg_timeout)  # read by init_process_group
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


_GLOO_TIMEOUT = re.compile(r"gloo.*Timed out|Timed out.*gloo", re.S)


def spawn_ranks(fn: Callable[..., None], make_args: Callable[[int], tuple[Any, ...]], nprocs: int,
                fault_dir: Path, attempts: int = 2, pg_timeout: float = 120.0) -> None:
    """Run ``fn(rank, *make_args(attempt))`` in ``nprocs`` spawned processes and wait for them.

    A Python exception in any rank fails at once (``torch.multiprocessing.ProcessRaisedException``),
    except gloo's timeout error (a collective that did not complete within ``pg_timeout`` seconds).
    That, or a rank killed by a signal (a crash in native code: gloo, the allocator), is reported as
    a ``RuntimeWarning`` (the crashed thread's stack, or the error) and the whole run is repeated
    with fresh arguments (``make_args(attempt)`` gives a new port and resets whatever the ranks
    write), up to ``attempts`` runs in all; a failure in the last one fails with an
    ``AssertionError`` holding the report. ``fault_dir/attempt{k}/rank{r}.txt`` keeps every rank's
    full crash report.
    """
    for attempt in range(attempts):
        sub = Path(fault_dir) / f"attempt{attempt}"
        sub.mkdir(parents=True, exist_ok=True)
        try:
            mp.spawn(_traced, args=(fn, str(sub), pg_timeout, make_args(attempt)), nprocs=nprocs, join=True)
            return
        except mp.ProcessRaisedException as e:
            if not _GLOO_TIMEOUT.search(str(e)):
                raise
            report = (f"rank {e.error_index} hit a gloo timeout ({pg_timeout:g} s; run {attempt + 1} of "
                      f"{attempts})\n{str(e).strip().splitlines()[-1]}")
            error: BaseException = e
        except mp.ProcessExitedException as e:
            if not e.signal_name:  # exited with a status (e.g. os._exit): not a crash
                raise
            report = (f"rank {e.error_index} died of {e.signal_name} (run {attempt + 1} of {attempts})\n"
                      + _report(sub, e.error_index))
            error = e
        if attempt + 1 == attempts:
            raise AssertionError(report) from error
        warnings.warn(f"{report}\nrunning the ranks again", RuntimeWarning, stacklevel=2)
