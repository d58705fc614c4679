"""Pair inference that encodes every image once.

The reference re-encodes both images of every ordered pair; the encoder is more than half of the
network's FLOPs, so :func:`infer_pairs` encodes each distinct image once per call, keeps its tokens,
and runs the decoders and heads batched over pairs (grouped by image shapes, so images of different
shapes never force a batch size of 1). A caller that pairs an image again later (online tracking:
a keyframe with every new frame) keeps its encoder output (:func:`encode_images`) and passes it
back (``encoded=``), so it is never encoded twice. Results stream to the CPU batch by batch; on CUDA the copies
run on a side stream through pinned buffers while the next batches compute.

A compiled model (``DUSt3R.optimize_for_inference(compile=True)``) sees a small fixed set of input
shapes: every encoder and decoder batch is padded to its full size. :func:`warmup` compiles them
ahead of a timed run.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from .errors import DeviceError, InputError
from .model.network import DUSt3R, Encoded
from .predictions import PairPredictions
from .store import DESC_FIELDS, DUST3R_FIELDS

if TYPE_CHECKING:
    from .images import LoadedImage
    from .store import PredictionStore

__all__ = ["encode_images", "infer_pairs", "warmup", "resolve_device", "resolve_dtype"]


def available_devices() -> list[str]:
    """Names of the compute devices of this computer: ``cuda:0`` ... then ``mps``, ``cpu``."""
    names = [f"cuda:{k}" for k in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names + ["cpu"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU.

    Raises:
        DeviceError: ``device`` is not a device name, or names one this computer does not have
            (the message lists those it has).
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"device {device!r} is not a device name; this computer has: "
                          f"{', '.join(available_devices())}") from None
    have = available_devices()
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count())
    elif dev.type == "cpu":
        ok = True
    else:
        ok = dev.type in have
    if not ok:
        raise DeviceError(f"device {device} does not exist on this computer; it has: {', '.join(have)}")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Compute dtype: float32 on CPU by default, bfloat16 on CUDA by default."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names:
            raise InputError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        dtype = names[dtype]
    if device.type == "cpu" and dtype == torch.float16:
        raise InputError("float16 autocast is only supported on CUDA; use float32 or bfloat16 on CPU")
    return dtype


def _as_tensor(im: LoadedImage | torch.Tensor) -> torch.Tensor:
    t = getattr(im, "img", im)  # a LoadedImage or a tensor
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise InputError(f"expected images of shape (3, H, W), got {tuple(t.shape)}")
    return t


def _batches(seq: Sequence, n: int, pad: bool = False) -> Iterator[tuple[list, int]]:
    """Consecutive chunks of ``n`` items, each with its number of real items; with ``pad`` the
    last chunk is filled up to ``n`` by repeating its last item (compiled models then see one
    batch shape)."""
    for s in range(0, len(seq), n):
        chunk = list(seq[s : s + n])
        real = len(chunk)
        yield (chunk + [chunk[-1]] * (n - real) if pad else chunk), real


HostAllocator = Callable[[tuple[int, ...], torch.dtype], torch.Tensor]
"""``alloc(shape, dtype)`` -> an empty CPU tensor of that shape and dtype."""


class _HostSink:
    """Moves batched results ``(B, ...)`` to float CPU tensors, in order.

    Staged (the default on CUDA): each batch is copied into staging buffers of ``rows`` rows (a
    ring of ``depth`` sets per result shape), on CUDA pinned and filled on a side stream while
    the compute stream goes on with the next batches; a set is moved into ordinary CPU memory
    once its copy has finished. Not staged (the default elsewhere): results are simply converted
    (``tensor.to(dtype).to("cpu")``). Staging off CUDA runs the same bookkeeping synchronously.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, rows: int, depth: int = 3,
                 staged: bool | None = None, alloc: HostAllocator | None = None) -> None:
        self.device, self.dtype, self.rows, self.depth = device, dtype, rows, depth
        self.alloc = alloc or (lambda shape, dt: torch.empty(shape, dtype=dt))
        self.cuda = device.type == "cuda"
        self.staged = self.cuda if staged is None else staged
        self.stream = torch.cuda.Stream(device) if self.cuda and self.staged else None
        self.pending: deque = deque()  # (event, key, staging, sources, real, done)
        self.free: dict[tuple, list[list[torch.Tensor]]] = defaultdict(list)

    def put(self, tensors: Sequence[torch.Tensor], real: int,
            done: Callable[[list[torch.Tensor]], None]) -> None:
        """Deliver the first ``real`` rows of each of ``tensors`` to ``done`` as CPU tensors
        (at once when not staged; else at a later :meth:`put` or at :meth:`close`)."""
        if not self.staged:
            out = []
            for t in tensors:
                host = self.alloc((real, *t.shape[1:]), self.dtype)
                host.copy_(t[:real])
                out.append(host)
            done(out)
            return
        if len(self.pending) >= self.depth:
            self._deliver_oldest()
        # dtype conversion and layout on the compute stream; the side stream only copies
        src = [t[:real].to(self.dtype).contiguous() for t in tensors]
        key = tuple(tuple(t.shape[1:]) for t in tensors)
        staging = self.free[key].pop() if self.free[key] else [
            torch.empty((self.rows, *t.shape[1:]), dtype=self.dtype, pin_memory=self.cuda)
            for t in tensors]
        event = None
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            for dst, s in zip(staging, src):
                dst[:real].copy_(s, non_blocking=self.cuda)
            if self.stream is not None:
                event = torch.cuda.Event()
                event.record(self.stream)
        # ``src`` stays referenced until its copy is done, so its memory is not reused before
        self.pending.append((event, key, staging, src, real, done))

    def _deliver_oldest(self) -> None:
        event, key, staging, _src, real, done = self.pending.popleft()
        if event is not None:
            event.synchronize()
        out = []
        for buf in staging:
            host = self.alloc((real, *buf.shape[1:]), buf.dtype)
            host.copy_(buf[:real])
            out.append(host)
        self.free[key].append(staging)
        done(out)

    def close(self) -> None:
        """Deliver everything still in flight."""
        while self.pending:
            self._deliver_oldest()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm  # only needed for the bar

    return tqdm(total=total, desc="inference", unit="step")


def _encode(model: DUSt3R, imgs: Mapping[int, torch.Tensor], dev: torch.device, batch_size: int, pad: bool,
            done: Callable[[int], None]) -> dict[int, Encoded]:
    """Encoder output of each of ``imgs`` (``{index: (3, H, W)}``), batched by shape (under the
    caller's autocast); ``done(n)`` after each batch of ``n`` real images."""
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, t in imgs.items():
        by_shape[(int(t.shape[1]), int(t.shape[2]))].append(k)
    out: dict[int, Encoded] = {}
    for shape, ids in by_shape.items():
        for chunk, real in _batches(ids, batch_size, pad):
            enc = model.encode(torch.stack([imgs[k] for k in chunk]).to(dev, non_blocking=True))
            for k, t in zip(chunk[:real], enc.tokens):
                out[k] = Encoded(t[None], shape)
            done(real)
    return out


@torch.no_grad()
def encode_images(model: DUSt3R, images: Sequence[LoadedImage | torch.Tensor], device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None, batch_size: int = 8) -> list[Encoded]:
    """Encoder output of each image, to be paired later by :func:`infer_pairs` (``encoded=``)
    without encoding it again: per image an :class:`Encoded` with tokens ``(1, N, C)`` on the
    device (in the autocast dtype). ``device``, ``dtype`` as for :func:`infer_pairs`."""
    dev = resolve_device(device)
    cdt = resolve_dtype(dtype, dev)
    if next(model.parameters()).device != dev:
        model = model.to(dev)
    model.eval()
    imgs = {k: _as_tensor(im) for k, im in enumerate(images)}
    with torch.autocast(dev.type, dtype=cdt, enabled=cdt != torch.float32):
        out = _encode(model, imgs, dev, max(1, int(batch_size)), bool(getattr(model, "static_shapes", False)),
                      lambda n: None)
    return [out[k] for k in range(len(imgs))]


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
    encode_batch_size: int | None = None,
    *,
    host_alloc: HostAllocator | None = None,
    descriptors: bool = True,
    desc_dtype: torch.dtype | None = None,
    store: PredictionStore | None = None,
    reduce: Callable[[list[tuple[int, int]], dict[str, torch.Tensor]], None] | None = None,
    encoded: Mapping[int, Encoded] | None = None,
    keep: bool = True,
) -> PairPredictions | None:
    """Run the network on ordered image pairs.

    Args:
        model: a :class:`DUSt3R` network (moved to ``device`` if needed).
        images: preprocessed images (``LoadedImage`` or ``(3, H, W)`` tensors in ``[-1, 1]``).
        pairs: ordered ``(i, j)`` indices into ``images``.
        batch_size: pairs per decoder batch.
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA when available).
        dtype: autocast dtype for encoder and decoders (``float32`` default on CPU, ``bfloat16``
            default on CUDA, ``float16`` on CUDA); heads run in float32 (or in the dtype set by
            ``model.optimize_for_inference(head_dtype=...)``).
        progress: show a progress bar (default: when stderr is a terminal and there are > 8 pairs).
        storage_dtype: dtype of the returned maps (float32; float16 halves memory for big scenes).
        encode_batch_size: images per encoder batch (default ``min(2 * batch_size, 8)``: the
            encoder is efficient from 8 images on, and a compiled model, which pads every batch
            to its full size, then wastes little on the last one).
        host_alloc: ``host_alloc(shape, dtype)`` returns the empty CPU tensor each batch of
            results is copied into (default ``torch.empty``); distributed inference passes one
            that carves them out of memory shared with the first rank.
        descriptors: for a network with local descriptors (MASt3R), keep them (``desc_1``,
            ``desc_conf_1``, ``desc_2``, ``desc_conf_2``); ``False`` drops them on the device.
            At ``D = 24`` they take 8x the memory of the points (``4 * 2 * (D + 1) * H * W``
            bytes per pair in float32).
        desc_dtype: storage dtype of the descriptors (default ``storage_dtype``; ``float16``
            halves their memory).

        store: write each batch, as it finishes, to this :class:`~pointmap.store.PredictionStore`
            instead of keeping it in memory; pairs the store already holds are not run again
            (resuming an interrupted run), and the result is read from the store on access.
            Kept descriptors are written to the same shards (float16, 50 bytes per pixel and
            side at ``D = 24``: 8x the disk of the points) and read on access like the points.
        reduce: called once per batch, before its copy to the host, with the batch's pairs and
            its predictions on the device: ``pts3d_1``, ``conf_1``, ``pts3d_2_in_1``, ``conf_2``
            ``(B, H, W[, 3])`` float32 (e.g. :meth:`pointmap.align.reduced.StreamedReductions.write`).
        encoded: encoder outputs already at hand (:func:`encode_images`: one image each, tokens
            ``(1, N, C)`` on ``device``), by index into ``images``; those images are not encoded
            again and their entries of ``images`` are not read (they may be ``None``).
        keep: ``False``: the predictions go to ``reduce`` only; nothing is copied to the host or
            written to ``store``, and ``None`` is returned (the streamed reductions' run).

    Returns:
        :class:`PairPredictions` with, per pair, ``pts3d_1`` ``(H_i, W_i, 3)``, ``conf_1``,
        ``pts3d_2_in_1`` ``(H_j, W_j, 3)``, ``conf_2`` (and the descriptor fields when kept) on the
        CPU, in the order of ``pairs``
        (store-backed float16 when ``store`` is given); ``None`` when not ``keep``.
    """
    if len(pairs) == 0:
        raise InputError("no pairs to run")
    if not keep and (reduce is None or store is not None):
        raise InputError("infer_pairs(keep=False) needs reduce= and no store=")
    dev = resolve_device(device)
    cdt = resolve_dtype(dtype, dev)
    pairs = [(int(i), int(j)) for i, j in pairs]
    n = len(images)
    bad = [p for p in pairs if not (0 <= p[0] < n and 0 <= p[1] < n)]
    if bad:
        raise InputError(f"pairs refer to images outside 0..{n - 1}: {bad[:5]}")
    batch_size = max(1, int(batch_size))
    enc_batch = max(1, int(encode_batch_size or min(2 * batch_size, 8)))
    if next(model.parameters()).device != dev:
        model = model.to(dev)
    model.eval()
    if progress is None:
        progress = len(pairs) > 8 and sys.stderr.isatty()
    autocast = torch.autocast(dev.type, dtype=cdt, enabled=cdt != torch.float32)
    pad = bool(getattr(model, "static_shapes", False))

    todo = list(range(len(pairs)))
    if store is not None:
        done = store.done()
        todo = [q for q in todo if pairs[q] not in done]
    given = dict(encoded or {})
    imgs = {k: _as_tensor(images[k]) for k in sorted({i for q in todo for i in pairs[q]}) if k not in given}
    bar = _progress_bar(len(imgs) + len(todo), bool(progress))
    # --- encode each image once, batched by shape
    tokens = {k: e.tokens[0] for k, e in given.items()}
    shapes = {k: tuple(e.shape) for k, e in given.items()}
    with autocast:
        for k, e in _encode(model, imgs, dev, enc_batch, pad, bar.update).items():
            tokens[k], shapes[k] = e.tokens[0], e.shape

    # --- decode + heads, batched by (shape_i, shape_j); results stream to the CPU
    out: list[tuple | None] = [None] * len(pairs)
    sink = _HostSink(dev, storage_dtype, rows=batch_size, alloc=host_alloc)
    keep_desc = keep and bool(descriptors) and model.config.desc_dim > 0
    ddt = desc_dtype or storage_dtype
    # with a store the descriptors go into the same shards as the points (one sink, one write)
    dsink = _HostSink(dev, ddt, rows=batch_size, alloc=host_alloc) if keep_desc and store is None else None
    fields = DUST3R_FIELDS + (DESC_FIELDS if keep_desc else ())
    dout: list[tuple | None] = [None] * len(pairs)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for idx in todo:
        i, j = pairs[idx]
        groups[(shapes[i], shapes[j])].append(idx)
    for (s1, s2), idxs in groups.items():
        for chunk, real in _batches(idxs, batch_size, pad):
            e1 = Encoded(torch.stack([tokens[pairs[q][0]] for q in chunk]), s1)
            e2 = Encoded(torch.stack([tokens[pairs[q][1]] for q in chunk]), s2)
            with autocast:
                p1, p2 = model.forward_encoded(e1, e2)

            def keep_batch(res: list[torch.Tensor], chunk: list[int] = chunk, real: int = real) -> None:
                if store is not None:
                    store.write([pairs[q] for q in chunk[:real]], dict(zip(fields, res)))
                    return
                for b, q in enumerate(chunk[:real]):
                    out[q] = tuple(r[b] for r in res)

            arrays = (p1["pts3d"], p1["conf"], p2["pts3d_in_other_view"], p2["conf"])
            if reduce is not None:
                reduce([pairs[q] for q in chunk[:real]],
                       {f: a[:real].float() for f, a in zip(DUST3R_FIELDS, arrays)})
            if keep_desc and store is not None:
                arrays += (p1["desc"], p1["desc_conf"], p2["desc"], p2["desc_conf"])
            if keep:
                sink.put(arrays, real, keep_batch)
            if dsink is not None:
                def dstore(res: list[torch.Tensor], chunk: list[int] = chunk, real: int = real) -> None:
                    for b, q in enumerate(chunk[:real]):
                        dout[q] = tuple(r[b] for r in res)

                dsink.put((p1["desc"], p1["desc_conf"], p2["desc"], p2["desc_conf"]), real, dstore)
            bar.update(real)
    sink.close()
    if dsink is not None:
        dsink.close()
    bar.close()
    if not keep:
        return None
    if store is not None:
        return store.predictions(pairs, n_images=n)
    pts1, c1, pts2, c2 = (list(x) for x in zip(*out))  # type: ignore[arg-type]
    desc = [list(x) for x in zip(*dout)] if dsink is not None else [None] * 4  # type: ignore[arg-type]
    return PairPredictions(pairs, pts1, c1, pts2, c2, n_images=n, desc_1=desc[0], desc_conf_1=desc[1],
                           desc_2=desc[2], desc_conf_2=desc[3])


def warmup(
    model: DUSt3R,
    shapes: Iterable[tuple[int, int]],
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    encode_batch_size: int | None = None,
) -> float:
    """Run :func:`infer_pairs` once on blank images of every ``(H, W)`` in ``shapes`` and every
    ordered pair of them, with the batch settings of the run to come.

    For a compiled model (which pads every batch to its full size) this compiles every input
    shape that run will see, so it then runs without recompiling; for any model it also warms up
    cuDNN autotuning and the allocators. Returns the seconds it took.
    """
    dev = resolve_device(device)
    blank = [torch.zeros(3, int(h), int(w)) for h, w in dict.fromkeys(tuple(s) for s in shapes)]
    if not blank:
        raise InputError("warmup needs at least one image shape")
    pairs = [(i, j) for i in range(len(blank)) for j in range(len(blank))]
    start = time.perf_counter()
    infer_pairs(model, blank, pairs, batch_size=batch_size, device=dev, dtype=dtype,
                progress=False, encode_batch_size=encode_batch_size)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - start
