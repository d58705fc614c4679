"""Global image descriptors from the network's own encoder, for retrieval scene graphs.

Each image is encoded once (at most ``max_side`` pixels on its longer side); its descriptor is
the mean of the encoder's output tokens, centred by the collection's mean descriptor and
L2-normalised, so that the dot product of two descriptors is the cosine similarity of what sets
the images apart. No extra weights are needed. :func:`pointmap.pairs.make_pairs` turns them into
a ``retrieval-K`` graph.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .inference import _as_tensor, resolve_device, resolve_dtype
from .model.network import DUSt3R, Encoded

if TYPE_CHECKING:
    from .images import LoadedImage

__all__ = ["centre_descriptors", "describe_and_encode", "descriptor_shape", "image_descriptors", "raw_descriptors"]


@torch.no_grad()
def image_descriptors(
    model: DUSt3R,
    images: Sequence[LoadedImage | torch.Tensor],
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 8,
    max_side: int | None = None,
    progress: bool | None = None,
    centre: bool = True,
) -> torch.Tensor:
    """``(N, D)`` unit global descriptors of ``images`` (float32, CPU).

    Args:
        model: the network (only its encoder runs).
        images: preprocessed images (``LoadedImage`` or ``(3, H, W)`` tensors in ``[-1, 1]``).
        device, dtype: as for :func:`pointmap.inference.infer_pairs`.
        batch_size: images per encoder batch.
        max_side: images are resized (area filter) so that their longer side is at most this,
            a multiple of the patch size (default: the model's training size, e.g. 224).
        progress: show a progress bar (default: when stderr is a terminal and N > 8).
        centre: centre and normalise them (:func:`centre_descriptors`); ``False`` gives the raw
            mean tokens, to be stored and centred later with other images' (``pointmap extend``).
    """
    desc, _ = _describe(model, images, device, dtype, batch_size, max_side, progress, keep_tokens=False)
    return centre_descriptors(desc) if centre else desc


@torch.no_grad()
def describe_and_encode(
    model: DUSt3R,
    images: Sequence[LoadedImage | torch.Tensor],
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 8,
    progress: bool | None = None,
) -> tuple[torch.Tensor, dict[int, Encoded]]:
    """The raw descriptors ``(N, D)`` of :func:`image_descriptors` (``centre=False``) and the
    encoder output of every image encoded at its own shape (its :func:`descriptor_shape` is its
    shape: at most the model's training size), by index: what
    :func:`pointmap.inference.infer_pairs` takes as ``encoded=``, so that a run that keeps its
    images' descriptors encodes those images once for both (tokens ``(1, N, C)`` on the device)."""
    return _describe(model, images, device, dtype, batch_size, None, progress, keep_tokens=True)


def _describe(model: DUSt3R, images: Sequence[LoadedImage | torch.Tensor], device, dtype, batch_size: int,
              max_side: int | None, progress: bool | None, keep_tokens: bool
              ) -> tuple[torch.Tensor, dict[int, Encoded]]:
    dev = resolve_device(device)
    cdt = resolve_dtype(dtype, dev)
    if next(model.parameters()).device != dev:
        model = model.to(dev)
    model.eval()
    imgs = [_as_tensor(im) for im in images]
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, t in enumerate(imgs):
        by_shape[descriptor_shape(model, tuple(t.shape[-2:]), max_side)].append(k)
    if progress is None:
        progress = len(imgs) > 8 and sys.stderr.isatty()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(imgs), desc="descriptors", unit="image", disable=not progress)
    out = [torch.empty(0)] * len(imgs)
    encoded: dict[int, Encoded] = {}
    autocast = torch.autocast(dev.type, dtype=cdt, enabled=cdt != torch.float32)
    for (h, w), ids in by_shape.items():
        for a in range(0, len(ids), batch_size):
            chunk = ids[a : a + batch_size]
            batch = torch.stack([
                imgs[k] if tuple(imgs[k].shape[-2:]) == (h, w)
                else F.interpolate(imgs[k][None], size=(h, w), mode="area")[0]
                for k in chunk
            ]).to(dev)
            with autocast:
                tok = model.encode(batch).tokens
            for b, (k, d) in enumerate(zip(chunk, raw_descriptors(tok))):
                out[k] = d
                if keep_tokens and tuple(imgs[k].shape[-2:]) == (h, w):
                    encoded[k] = Encoded(tok[b : b + 1], (h, w))
            bar.update(len(chunk))
    bar.close()
    return torch.stack(out), encoded


def descriptor_shape(model: DUSt3R, shape: tuple[int, int], max_side: int | None = None) -> tuple[int, int]:
    """``(h, w)`` pixels at which an image of ``shape = (H, W)`` is encoded for its descriptor:
    shrunk (never enlarged) so that its longer side is at most ``max_side`` (default: the
    model's training size), each side a multiple of the patch size."""
    patch = int(getattr(model.config, "patch_size", 16))
    side = int(max_side or max(model.config.img_size))
    H, W = shape
    s = min(1.0, side / max(H, W))
    return max(patch, round(H * s / patch) * patch), max(patch, round(W * s / patch) * patch)


def raw_descriptors(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` float32 CPU raw descriptors (mean token) of encoder tokens ``(B, N, D)`` of
    images encoded at :func:`descriptor_shape`; :func:`centre_descriptors` makes them unit."""
    return tokens.float().mean(1).cpu()


def centre_descriptors(raw: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` raw mean tokens centred by their mean (when ``N > 1``) and L2-normalised: the
    descriptors whose dot products are the similarities retrieval ranks by."""
    desc = raw - raw.mean(0, keepdim=True) if len(raw) > 1 else raw
    return F.normalize(desc, dim=-1)
