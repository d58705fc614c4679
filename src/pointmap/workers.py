"""Pools of threads for per-item work (decoding images, writing each image's export files).

The per-item work is numpy, torch, image decoding and encoding and file writes, which release
the GIL, so threads run it side by side without copying anything into processes. Torch runs on
one thread per item inside a pool (:func:`one_torch_thread`): its own threads for each of many
small operations only wait on each other (on a busy machine an image's points took 20 times
longer). ``workers=1`` is the plain serial loop, the twin the pool must match.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from .errors import PointmapError

__all__ = ["MAX_WORKERS", "map_items", "one_torch_thread", "workers_for"]

T = TypeVar("T")

MAX_WORKERS = 8
"""The most threads :func:`workers_for` picks by itself (the per-item work is short; more
threads mostly wait on each other)."""


def workers_for(workers: int | None = None) -> int:
    """Threads for per-item work: ``workers`` when given (at least 1), else the CPUs this process
    may run on, at most :data:`MAX_WORKERS`."""
    if workers is not None:
        if int(workers) < 1:
            raise PointmapError(f"workers must be 1 or more, got {workers}")
        return int(workers)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


_torch_threads_lock = threading.Lock()
_torch_threads_users = 0
_torch_threads_saved = 1


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch's CPU operations on one thread inside the block (the threads torch had are back
    when the last of nested or concurrent blocks ends). Results do not depend on it."""
    global _torch_threads_users, _torch_threads_saved
    with _torch_threads_lock:
        if _torch_threads_users == 0:
            _torch_threads_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _torch_threads_users += 1
    try:
        yield
    finally:
        with _torch_threads_lock:
            _torch_threads_users -= 1
            if _torch_threads_users == 0:
                torch.set_num_threads(_torch_threads_saved)


def map_items(
    fn: Callable[[int], T], n: int, workers: int | None = None, done: Callable[[], None] | None = None
) -> list[T]:
    """``[fn(0), ..., fn(n - 1)]``, in this order, computed on a pool of :func:`workers_for`
    threads with torch on one thread per item (:func:`one_torch_thread`). ``done`` is called in
    the calling thread once per item, in order (a progress bar); the first error is raised once
    the items already started have finished, and no new one starts."""
    with one_torch_thread():
        return _map(fn, n, workers, done)


def _map(fn: Callable[[int], T], n: int, workers: int | None, done: Callable[[], None] | None) -> list[T]:
    w = workers_for(workers)
    out: list[T] = []
    if w == 1 or n <= 1:
        for k in range(n):
            out.append(fn(k))
            if done is not None:
                done()
        return out
    with ThreadPoolExecutor(min(w, n), thread_name_prefix="pointmap-worker") as pool:
        try:
            for r in pool.map(fn, range(n)):
                out.append(r)
                if done is not None:
                    done()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return out
