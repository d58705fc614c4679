"""Time and peak memory of a run's stages (encode, pairs, alignment, export) for run summaries.

Peak host memory per stage is the largest resident set size (RSS; pages of memory-mapped files
count) seen while the stage ran, sampled by a background thread every ``interval`` seconds from
``/proc/self/statm`` (Linux; elsewhere the process-wide peak from ``getrusage`` is reported).
It never resets the kernel's own high-water mark, so ``/usr/bin/time`` still sees the true peak.
Peak GPU memory per stage comes from ``torch.cuda.max_memory_allocated`` (reset at each stage).
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

__all__ = ["StageLog", "StageStats", "current_rss_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int:
    """Resident set size of this process now (bytes); the peak so far where ``/proc`` is absent."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class StageStats:
    """One stage: wall seconds, peak host RSS (GB), peak GPU memory (GB, ``nan`` without CUDA)."""

    seconds: float
    peak_rss_gb: float
    peak_gpu_gb: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds, "peak_rss_gb": self.peak_rss_gb, "peak_gpu_gb": self.peak_gpu_gb}


@dataclass
class StageLog:
    """Records :class:`StageStats` per named stage::

        log = StageLog(device)
        with log.stage("pairs"):
            ...
        print(log.summary())

    Attributes:
        stages: ``{name: StageStats}`` in the order the stages ran (a repeated name accumulates
            seconds and keeps the larger peaks).
        interval: RSS sampling period (seconds).
    """

    device: torch.device | str | None = None
    interval: float = 0.05
    stages: dict[str, StageStats] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block and sample its peak memory."""
        cuda = self.device is not None and torch.device(self.device).type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        peak = [current_rss_bytes()]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(self.interval):
                peak[0] = max(peak[0], current_rss_bytes())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            dt = time.perf_counter() - t0
            stop.set()
            thread.join()
            peak[0] = max(peak[0], current_rss_bytes())
            gpu = torch.cuda.max_memory_allocated(self.device) / 1e9 if cuda else float("nan")
            st = StageStats(dt, peak[0] / 1e9, gpu)
            old = self.stages.get(name)
            if old is not None:
                st = StageStats(old.seconds + dt, max(old.peak_rss_gb, st.peak_rss_gb),
                                max(old.peak_gpu_gb, gpu) if cuda else gpu)
            self.stages[name] = st

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{stage: {"seconds", "peak_rss_gb", "peak_gpu_gb"}}``."""
        return {k: v.as_dict() for k, v in self.stages.items()}

    def summary(self) -> str:
        """One line: ``stage 1.2s (peak RSS 0.8 GB[, GPU 3.1 GB]), ...``."""
        parts = []
        for k, v in self.stages.items():
            mem = f"peak RSS {v.peak_rss_gb:.2f} GB"
            if v.peak_gpu_gb == v.peak_gpu_gb:  # not NaN
                mem += f", GPU {v.peak_gpu_gb:.2f} GB"
            parts.append(f"{k} {v.seconds:.1f}s ({mem})")
        return ", ".join(parts)
