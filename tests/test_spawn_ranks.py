"""The multi-process test helper: native crashes are reported with a stack and retried once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from spawn_ranks import spawn_ranks


def _crash_in_rank1_of_first_attempt(rank: int, out: str, attempt: int, always: bool) -> None:
    if rank == 1 and (always or attempt == 0):
        os.kill(os.getpid(), signal.SIGSEGV)
    Path(out, f"rank{rank}-attempt{attempt}").touch()


def _raise(rank: int) -> None:
    raise ValueError(f"bad input on rank {rank}")


def test_crash_is_reported_and_retried(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match=r"(?s)rank 1 died of SIGSEGV.*_crash_in_rank1_of_first_attempt"):
        spawn_ranks(_crash_in_rank1_of_first_attempt, lambda a: (str(tmp_path), a, False), 2, tmp_path / "f")
    assert (tmp_path / "rank0-attempt1").exists() and (tmp_path / "rank1-attempt1").exists()
    assert not (tmp_path / "rank1-attempt0").exists()


def test_repeated_crash_fails(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning), pytest.raises(AssertionError, match="attempt 2 of 2"):
        spawn_ranks(_crash_in_rank1_of_first_attempt, lambda a: (str(tmp_path), a, True), 2, tmp_path / "f")


def test_python_error_is_not_retried(tmp_path: Path) -> None:
    with pytest.raises(mp.ProcessRaisedException, match="bad input on rank"):
        spawn_ranks(_raise, lambda a: (), 2, tmp_path / "f")
    assert not (tmp_path / "f" / "attempt1").exists()
