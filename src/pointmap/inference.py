"""Pair inference that encodes every image once.

The reference re-encodes both images of every ordered pair; the encoder is more than half of the
network's FLOPs, so :func:`infer_pairs` encodes each distinct image once per call, keeps its tokens,
and runs the decoders and heads batched over pairs (grouped by image shapes, so images of different
shapes never force a batch size of 1). Results stream to the CPU batch by batch.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .images import LoadedImage
from .model.network import DUSt3R, Encoded
from .predictions import PairPredictions

__all__ = ["infer_pairs", "resolve_device", "resolve_dtype"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Compute dtype: float32 on CPU by default, bfloat16 on CUDA by default."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        dtype = names[dtype]
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("float16 autocast is only supported on CUDA; use float32 or bfloat16 on CPU")
    return dtype


def _as_tensor(im: LoadedImage | torch.Tensor) -> torch.Tensor:
    t = im.img if isinstance(im, LoadedImage) else im
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"expected images of shape (3, H, W), got {tuple(t.shape)}")
    return t


def _chunks(seq: Sequence, n: int, pad: bool = False):
    """Consecutive chunks of ``n``; with ``pad`` the last one is filled up by repeating its last
    item (compiled models then see one batch shape)."""
    for s in range(0, len(seq), n):
        chunk = list(seq[s : s + n])
        yield chunk + [chunk[-1]] * (n - len(chunk)) if pad else chunk


@torch.no_grad()
def infer_pairs(
    model: DUSt3R,
    images: Sequence[LoadedImage | torch.Tensor],
    pairs: Sequence[tuple[int, int]],
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool | None = None,
    storage_dtype: torch.dtype = torch.float32,
) -> PairPredictions:
    """Run the network on ordered image pairs.

    Args:
        model: a :class:`DUSt3R` network (moved to ``device`` if needed).
        images: preprocessed images (``LoadedImage`` or ``(3, H, W)`` tensors in ``[-1, 1]``).
        pairs: ordered ``(i, j)`` indices into ``images``.
        batch_size: pairs per decoder batch (images per encoder batch is twice that).
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA when available).
        dtype: autocast dtype for encoder and decoders (``float32`` default on CPU, ``bfloat16``
            default on CUDA, ``float16`` on CUDA); heads always run in float32.
        progress: show a progress bar (default: when stderr is a terminal and there are > 8 pairs).
        storage_dtype: dtype of the returned maps (float32; float16 halves memory for big scenes).

    Returns:
        :class:`PairPredictions` with, per pair, ``pts3d_1`` ``(H_i, W_i, 3)``, ``conf_1``,
        ``pts3d_2_in_1`` ``(H_j, W_j, 3)``, ``conf_2`` on the CPU, in the order of ``pairs``.
    """
    if len(pairs) == 0:
        raise ValueError("no pairs to run")
    dev = resolve_device(device)
    cdt = resolve_dtype(dtype, dev)
    pairs = [(int(i), int(j)) for i, j in pairs]
    n = len(images)
    bad = [p for p in pairs if not (0 <= p[0] < n and 0 <= p[1] < n)]
    if bad:
        raise ValueError(f"pairs refer to images outside 0..{n - 1}: {bad[:5]}")
    if next(model.parameters()).device != dev:
        model = model.to(dev)
    model.eval()
    if progress is None:
        progress = len(pairs) > 8 and sys.stderr.isatty()
    autocast = torch.autocast(dev.type, dtype=cdt, enabled=cdt != torch.float32)
    pin = dev.type == "cuda"
    pad = bool(getattr(model, "static_shapes", False))

    imgs = {k: _as_tensor(images[k]) for k in sorted({i for p in pairs for i in p})}
    # --- encode each image once, batched by shape
    tokens: dict[int, torch.Tensor] = {}
    shapes: dict[int, tuple[int, int]] = {k: (int(t.shape[1]), int(t.shape[2])) for k, t in imgs.items()}
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k in imgs:
        by_shape[shapes[k]].append(k)
    bar = tqdm(total=len(imgs) + len(pairs), disable=not progress, desc="inference", unit="step")
    with autocast:
        for shape, ids in by_shape.items():
            for chunk in _chunks(ids, max(1, 2 * batch_size), pad):
                batch = torch.stack([imgs[k] for k in chunk]).to(dev, non_blocking=True)
                enc = model.encode(batch)
                for k, t in zip(chunk, enc.tokens):
                    tokens[k] = t
                bar.update(len(set(chunk)))

    # --- decode + heads, batched by (shape_i, shape_j)
    out: list[tuple | None] = [None] * len(pairs)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for idx, (i, j) in enumerate(pairs):
        groups[(shapes[i], shapes[j])].append(idx)
    for (s1, s2), idxs in groups.items():
        for chunk in _chunks(idxs, max(1, batch_size), pad):
            e1 = Encoded(torch.stack([tokens[pairs[q][0]] for q in chunk]), s1)
            e2 = Encoded(torch.stack([tokens[pairs[q][1]] for q in chunk]), s2)
            with autocast:
                p1, p2 = model.forward_encoded(e1, e2)
            res = [
                t.to(storage_dtype).to("cpu", non_blocking=pin)
                for t in (p1["pts3d"], p1["conf"], p2["pts3d_in_other_view"], p2["conf"])
            ]
            for b, q in enumerate(chunk):
                if out[q] is None:
                    out[q] = tuple(r[b] for r in res)
            bar.update(len(set(chunk)))
    bar.close()
    if pin:
        torch.cuda.synchronize(dev)
    pts1, c1, pts2, c2 = (list(x) for x in zip(*out))  # type: ignore[arg-type]
    return PairPredictions(pairs, pts1, c1, pts2, c2, n_images=n)
