"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

_REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path | None:
    env = os.environ.get("POINTMAP_SHARED")
    for cand in ([Path(env)] if env else []) + [_REPO.parent / "shared", _REPO / "shared"]:
        if (cand / "parity").is_dir() or (cand / "data").is_dir():
            return cand
    return None


SHARED = _find_shared()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The folder with parity vectors and evaluation data; skips the test when absent."""
    if SHARED is None:
        pytest.skip("shared parity/evaluation folder not found (set POINTMAP_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def parity_dir(shared_dir: Path) -> Path:
    p = shared_dir / "parity"
    if not p.is_dir():
        pytest.skip("parity vectors not found")
    return p


PARITY_SUBSET = _REPO / "tests" / "data" / "parity"


@pytest.fixture(scope="session")
def parity_or_subset_dir() -> Path:
    """The full parity vectors when ``../shared`` is there, else the subset that ships in
    ``tests/data/parity`` (read it with ``parity_checks.load_vectors``); never skips."""
    return SHARED / "parity" if SHARED is not None and (SHARED / "parity").is_dir() else PARITY_SUBSET


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    p = shared_dir / "data"
    if not p.is_dir():
        pytest.skip("evaluation data not found")
    return p


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests single-threaded: tiny models and many small tensor ops are fastest
    that way and immune to CPU oversubscription. Use with ``pytestmark``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
