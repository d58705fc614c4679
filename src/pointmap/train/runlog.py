"""Run logs: ``log.jsonl`` rows (and TensorBoard scalars) written on rank 0, read back, plotted.

``log.jsonl`` holds one JSON object per logged optimiser step (``{"kind": "train", "step", "epoch",
"lr", "loss", ...}``) and per evaluation (``{"kind": "test", "step", "epoch", "loss_med", ...}``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import install_hint
from ..io_utils import atomic_write, atomic_write_text, strict_json

__all__ = ["RunLogger", "read_log", "plot_loss_curve"]


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a run's ``log.jsonl`` (strict JSON: a non-finite value was written as ``null``)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def plot_loss_curve(log: str | os.PathLike, png: str | os.PathLike) -> Path:
    """Plot train loss per step (and test ``loss_med`` per evaluation) of ``log.jsonl`` to ``png``.

    Needs matplotlib (the ``train`` extra: :func:`pointmap.errors.install_hint`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError(f"plot_loss_curve needs matplotlib: {install_hint('train')}") from exc
    rows = read_log(log)
    tr = [r for r in rows if r.get("kind") == "train"]
    te = [r for r in rows if r.get("kind") == "test"]
    fig, ax = plt.subplots(figsize=(7, 4))
    def values(rs: list[dict[str, Any]], key: str) -> list[float]:  # null (a NaN loss) -> gap
        return [float("nan") if r[key] is None else r[key] for r in rs]

    ax.plot([r["step"] for r in tr], values(tr, "loss"), label="train loss")
    if te:
        ax.plot([r["step"] for r in te], values(te, "loss_med"), "o-", label="test loss_med")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(png, "wb") as f:
        f.write(buf.getvalue())
    return Path(png)


class RunLogger:
    """JSONL + optional TensorBoard logging of one run (writes nothing unless ``enabled``: rank 0).

    Args:
        out: the run folder (``log.jsonl`` and ``tb/`` go there).
        enabled: this process writes the logs.
        tensorboard: also write TensorBoard events when the package is installed.
        resume_step: a resumed run's step: rows after it (written after the checkpoint) are
            dropped; ``None`` starts a new log (an old one from this run folder is removed).
    """

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.path = out / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():  # drop rows after the checkpoint
            keep = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(strict_json(r, indent=None) + "\n" for r in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                warnings.warn(f"TensorBoard logging disabled: install it with {install_hint('train')}",
                              stacklevel=3)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (a dict with ``kind`` and ``step``; numbers also go to TensorBoard)."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(strict_json(row, indent=None) + "\n")  # NaN/inf as null
        if self.tb is not None:
            prefix = row["kind"]
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, row["step"])

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.tb is not None:
            self.tb.close()

