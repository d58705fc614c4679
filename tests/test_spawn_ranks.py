"""The multi-process test helper: a native crash is reported with the crashed thread's stack and
the run repeated once; a crash that comes back fails the test; a Python error fails at once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from spawn_ranks import crashed_thread, spawn_ranks


def _crash_in_rank1(rank: int, out: str, crash: bool) -> None:
    if rank == 1 and crash:
        os.kill(os.getpid(), signal.SIGSEGV)
    Path(out, f"rank{rank}").touch()


def _stuck_collective(rank: int, port: int, out: str) -> None:
    """Rank 1 never joins rank 0's all-reduce (a hang inside a collective, as gloo's was)."""
    import time

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    if rank == 0:
        dist.all_reduce(torch.ones(3))
    else:
        time.sleep(6)
    Path(out, f"rank{rank}").touch()


def _raise(rank: int) -> None:
    raise ValueError(f"bad input on rank {rank}")


def test_a_crash_that_comes_back_fails_with_the_report(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match=r"(?s)rank 1 died of SIGSEGV \(run 1 of 2\).*_crash_in_rank1"):
        with pytest.raises(AssertionError, match=r"(?s)rank 1 died of SIGSEGV \(run 2 of 2\).*_crash_in_rank1"):
            spawn_ranks(_crash_in_rank1, lambda a: (str(tmp_path), True), 2, tmp_path / "f")
    assert not (tmp_path / "rank1").exists()
    for a in (0, 1):  # every run's full report is kept
        assert "_crash_in_rank1" in (tmp_path / "f" / f"attempt{a}" / "rank1.txt").read_text()


def test_a_crash_once_is_reported_and_the_run_repeated(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match="running the ranks again"):
        spawn_ranks(_crash_in_rank1, lambda a: (str(tmp_path), a == 0), 2, tmp_path / "f")
    assert (tmp_path / "rank0").exists() and (tmp_path / "rank1").exists()


def test_a_collective_that_times_out_twice_fails_after_a_second_run(tmp_path: Path) -> None:
    from spawn_ranks import free_port

    with pytest.warns(RuntimeWarning, match=r"(?s)rank 0 hit a gloo timeout \(2 s; run 1 of 2\)"):
        with pytest.raises(AssertionError, match=r"rank 0 hit a gloo timeout \(2 s; run 2 of 2\)"):
            spawn_ranks(_stuck_collective, lambda a: (free_port(), str(tmp_path)), 2, tmp_path / "f",
                        pg_timeout=2)
    assert not (tmp_path / "rank0").exists()


def test_python_error_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(mp.ProcessRaisedException, match="bad input on rank"):
        spawn_ranks(_raise, lambda a: (), 2, tmp_path / "f")
    assert not (tmp_path / "f" / "attempt1").exists()


def test_crashed_thread_keeps_the_fatal_line_and_the_crashed_stack_only() -> None:
    report = ("Fatal Python error: Aborted\n\nThread 0x01 (most recent call first):\n"
              '  File "a.py", line 1 in other\n\nCurrent thread 0x02 (most recent call first):\n'
              '  File "b.py", line 2 in crashed\n  File "c.py", line 3 in caller\n\n'
              "Extension modules: numpy, torch (total: 2)\n")
    got = crashed_thread(report)
    assert got.startswith("Fatal Python error: Aborted\nCurrent thread 0x02")
    assert "crashed" in got and "caller" in got
    assert "other" not in got and "Extension" not in got
