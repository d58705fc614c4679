"""The multi-process test helper: a native crash fails the test with the crashed rank's stack,
without a re-run; a Python error fails at once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from spawn_ranks import spawn_ranks


def _crash_in_rank1(rank: int, out: str) -> None:
    if rank == 1:
        os.kill(os.getpid(), signal.SIGSEGV)
    Path(out, f"rank{rank}").touch()


def _raise(rank: int) -> None:
    raise ValueError(f"bad input on rank {rank}")


def test_crash_fails_with_the_report_and_is_not_rerun(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"(?s)rank 1 died of SIGSEGV.*_crash_in_rank1"):
        spawn_ranks(_crash_in_rank1, (str(tmp_path),), 2, tmp_path / "f")
    assert not (tmp_path / "rank1").exists()
    assert "_crash_in_rank1" in (tmp_path / "f" / "rank1.txt").read_text()  # the report is kept


def test_python_error_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(mp.ProcessRaisedException, match="bad input on rank"):
        spawn_ranks(_raise, (), 2, tmp_path / "f")
