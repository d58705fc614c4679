"""Edge data for alignment: streaming the full-resolution predictions and the coarse sample.

Images may have different shapes: every image is raveled row-major and padded to the largest
area ``A`` (padding has weight 0), as the reference does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..geometry.camera import pixel_grid
from ..predictions import PairPredictions
from .params import conf_transform

__all__ = ["CoarseData", "CoarsePlan", "EdgeStore", "build_edge_data", "coarse_data", "coarse_stride", "edge_weights"]

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class EdgeStore:
    """Full-resolution predictions, streamed to ``device`` in chunks of edges.

    Attributes:
        preds: the source predictions (host memory).
        device: compute device.
        area: padded pixel count ``A`` per image.
        chunk: edges per chunk.
        cache: per chunk ``(p1 (c, A, 3), c1 (c, A), p2, c2)`` on ``device`` when cached.
    """

    preds: PairPredictions
    device: torch.device
    area: int
    chunk: int
    storage_dtype: torch.dtype
    cache_budget: int
    cache: list[tuple[torch.Tensor, ...]] | None = None

    def _load(self, a: int, b: int) -> tuple[torch.Tensor, ...]:
        def stack(ts: list[torch.Tensor], last: int | None) -> torch.Tensor:
            out = []
            for t in ts:
                t = t.to(self.device, non_blocking=True).reshape(-1, *(() if last is None else (last,)))
                if t.shape[0] < self.area:
                    pad = torch.zeros((self.area - t.shape[0],) + t.shape[1:], dtype=t.dtype, device=t.device)
                    t = torch.cat([t, pad])
                out.append(t)
            return torch.stack(out)

        P = self.preds
        return (
            stack(P.pts3d_1[a:b], 3), stack(P.conf_1[a:b], None),
            stack(P.pts3d_2_in_1[a:b], 3), stack(P.conf_2[a:b], None),
        )

    def chunks(self) -> Iterator[tuple[int, int, tuple[torch.Tensor, ...]]]:
        """Yield ``(a, b, (p1, c1, p2, c2))`` float32 tensors for edges ``a:b``."""
        E = len(self.preds)
        if self.cache is not None:
            for k, a in enumerate(range(0, E, self.chunk)):
                yield a, min(a + self.chunk, E), tuple(t.float() for t in self.cache[k])
            return
        nbytes = E * self.area * 8 * torch.finfo(self.storage_dtype).bits // 8
        fill = nbytes <= self.cache_budget
        cache: list[tuple[torch.Tensor, ...]] = []
        for a in range(0, E, self.chunk):
            b = min(a + self.chunk, E)
            data = self._load(a, b)
            if fill:
                cache.append(tuple(t.to(self.storage_dtype) for t in data))
            yield a, b, tuple(t.float() for t in data)
        if fill:
            self.cache = cache


@dataclass
class CoarseData:
    """Everything the coarse stage needs, on the compute device.

    Shapes: ``N`` images, ``E`` edges, ``A`` padded full-resolution area, ``n`` padded coarse
    pixel count per image.

    Attributes:
        ei, ej: ``(E,)`` image indices of each edge's first / second image.
        shapes: per image ``(H, W)``.
        valid_full: ``(N, A)`` bool, real (not padding) pixels of the raveled images; their
            pixel coordinates come from :meth:`pixel_uv` (not stored: ``8 N A`` bytes).
        idx: ``(N, n)`` raveled indices of the coarse pixels; ``valid (N, n)``; ``uv (N, n, 2)``.
        grid: per image ``(Hs, Ws)`` shape of its coarse grid; ``stride``, ``offset``.
        pts_i, pts_j: ``(E, n, 3)`` coarse predictions (camera-``i`` frame).
        conf_i, conf_j: ``(E, n)`` raw confidences (0 on padding).
        w_i, w_j: ``(E, n)`` loss weights (``conf_trf``, user masks and padding applied).
        score: ``(E,)`` ``mean(conf_i) * mean(conf_j)`` over the full maps.
        im_conf: ``(N, A)`` per-pixel max raw confidence over all edges.
        user_mask: ``(N, A)`` bool, pixels allowed in the loss.
    """

    ei: torch.Tensor
    ej: torch.Tensor
    shapes: list[tuple[int, int]]
    valid_full: torch.Tensor
    idx: torch.Tensor
    valid: torch.Tensor
    uv: torch.Tensor
    grid: list[tuple[int, int]]
    stride: int
    offset: int
    pts_i: torch.Tensor
    pts_j: torch.Tensor
    conf_i: torch.Tensor
    conf_j: torch.Tensor
    w_i: torch.Tensor
    w_j: torch.Tensor
    score: torch.Tensor
    im_conf: torch.Tensor
    user_mask: torch.Tensor
    store: EdgeStore | None = None

    @property
    def n_images(self) -> int:
        return len(self.shapes)

    def pixel_uv(self, k: int | None = None) -> torch.Tensor:
        """Pixel coordinates ``(u, v)`` of the raveled image ``k``: ``(H W, 2)``; with ``k=None``
        every image's, padded: ``(N, A, 2)`` (zeros on padding)."""
        dev = self.valid_full.device
        if k is not None:
            h, w = self.shapes[k]
            return pixel_grid(h, w, dev).reshape(-1, 2)
        out = torch.zeros(*self.valid_full.shape, 2, device=dev)
        for r, (h, w) in enumerate(self.shapes):
            out[r, : h * w] = pixel_grid(h, w, dev).reshape(-1, 2)
        return out

    @property
    def im_conf_coarse(self) -> torch.Tensor:
        """``(N, n)`` max raw confidence at the coarse pixels."""
        return torch.gather(self.im_conf, 1, self.idx) * self.valid


def _coarse_grid(shapes: list[tuple[int, int]], stride: int, off: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """The strided pixel sample: full-resolution validity ``(N, A)``, coarse pixel indices and
    validity ``(N, n)`` (row-major, padded) and each image's ``(rows, cols)`` grid."""
    N, A = len(shapes), max(h * w for h, w in shapes)
    valid_full = torch.zeros(N, A, dtype=torch.bool, device=device)
    idxs, grid = [], []
    for k, (h, w) in enumerate(shapes):
        valid_full[k, : h * w] = True
        rows = torch.arange(min(off, max(h - 1, 0)), h, stride, device=device)
        cols = torch.arange(min(off, max(w - 1, 0)), w, stride, device=device)
        idxs.append((rows[:, None] * w + cols[None, :]).reshape(-1))
        grid.append((len(rows), len(cols)))
    n = max(len(i) for i in idxs)
    idx = torch.zeros(N, n, dtype=torch.long, device=device)
    valid = torch.zeros(N, n, dtype=torch.bool, device=device)
    for k, ix in enumerate(idxs):
        idx[k, : len(ix)] = ix
        valid[k, : len(ix)] = True
    return valid_full, idx, valid, grid


def coarse_stride(shapes: list[tuple[int, int]], stride: int | None, coarse_pixels: int) -> tuple[int, int]:
    """The coarse stage's pixel stride and offset: ``stride`` when given, else the stride that
    samples about ``coarse_pixels`` of the mean image area (offset ``stride // 2``)."""
    if stride is None:
        mean_area = sum(h * w for h, w in shapes) / len(shapes)
        stride = max(1, round(math.sqrt(mean_area / max(coarse_pixels, 1))))
    return stride, (stride // 2 if stride > 1 else 0)


@dataclass
class CoarsePlan:
    """The coarse pixel sample of every image, known before any prediction (image shapes only).

    Attributes:
        shapes: per image ``(H, W)``; ``stride``, ``offset``: the sample grid.
        valid_full: ``(N, A)`` real pixels; ``idx``, ``valid``, ``uv``: ``(N, n)``, ``(N, n)``,
            ``(N, n, 2)`` raveled indices, validity and pixel coordinates of the coarse pixels.
        grid: per image ``(Hs, Ws)`` coarse grid shape.
    """

    shapes: list[tuple[int, int]]
    stride: int
    offset: int
    valid_full: torch.Tensor
    idx: torch.Tensor
    valid: torch.Tensor
    uv: torch.Tensor
    grid: list[tuple[int, int]]

    @classmethod
    def make(cls, shapes: list[tuple[int, int]], stride: int | None, coarse_pixels: int,
             device: torch.device) -> "CoarsePlan":
        """The plan for images of ``shapes`` (``stride`` as :func:`coarse_stride` takes it)."""
        shapes = [(int(h), int(w)) for h, w in shapes]
        stride, off = coarse_stride(shapes, stride, coarse_pixels)
        valid_full, idx, valid, grid = _coarse_grid(shapes, stride, off, device)
        widths = idx.new_tensor([w for _, w in shapes])[:, None]
        uv = torch.stack([idx % widths, idx // widths], -1).float()
        return cls(shapes, stride, off, valid_full, idx, valid, uv, grid)


def edge_weights(plan: CoarsePlan, ei: torch.Tensor, ej: torch.Tensor, pts_i: torch.Tensor,
                 pts_j: torch.Tensor, conf_i: torch.Tensor, conf_j: torch.Tensor,
                 masks: list[torch.Tensor] | None, conf_trf: str
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-finite points zeroed and the loss weights of the coarse samples.

    Returns:
        ``(pts_i, pts_j, w_i, w_j, user_mask)``: points with non-finite entries set to 0, ``(E, n)``
        weights (``conf_trf`` of the raw confidences; 0 on padding, masked pixels, non-finite
        points and confidences <= 0) and the ``(N, A)`` user mask.
    """
    user_mask = plan.valid_full.clone()
    if masks is not None:
        for k, m in enumerate(masks):
            if m is not None:
                user_mask[k, : m.numel()] &= m.to(user_mask.device).reshape(-1).bool()
    bad_i = ~torch.isfinite(pts_i).all(-1)
    bad_j = ~torch.isfinite(pts_j).all(-1)
    pts_i = torch.nan_to_num(pts_i, nan=0.0, posinf=0.0, neginf=0.0)
    pts_j = torch.nan_to_num(pts_j, nan=0.0, posinf=0.0, neginf=0.0)
    um_c = torch.gather(user_mask, 1, plan.idx) & plan.valid
    w_i = conf_transform(conf_i.clamp(min=1e-12), conf_trf) * um_c[ei] * ~bad_i
    w_j = conf_transform(conf_j.clamp(min=1e-12), conf_trf) * um_c[ej] * ~bad_j
    w_i = torch.where(conf_i > 0, w_i, torch.zeros_like(w_i)).clamp(min=0)
    w_j = torch.where(conf_j > 0, w_j, torch.zeros_like(w_j)).clamp(min=0)
    return pts_i, pts_j, w_i, w_j, user_mask


def build_edge_data(
    preds: PairPredictions,
    device: torch.device,
    stride: int | None,
    coarse_pixels: int,
    conf_trf: str,
    masks: list[torch.Tensor] | None,
    chunk_pixels: int,
    storage_dtype: str,
    cache_bytes: int,
) -> CoarseData:
    """One streaming pass over the predictions: coarse samples, edge scores and ``im_conf``.

    Args:
        masks: optional per image ``(H, W)`` bool, ``False`` = excluded from the loss.
    """
    N = preds.n_images
    plan = CoarsePlan.make([tuple(int(x) for x in s) for s in preds.image_shapes], stride,
                           coarse_pixels, device)
    valid_full, idx, valid = plan.valid_full, plan.idx, plan.valid
    A, n = valid_full.shape[1], idx.shape[1]
    ei = torch.tensor([p[0] for p in preds.pairs], dtype=torch.long, device=device)
    ej = torch.tensor([p[1] for p in preds.pairs], dtype=torch.long, device=device)
    E = len(preds)
    chunk = max(1, chunk_pixels // max(A, 1))
    store = EdgeStore(preds, device, A, chunk, _DTYPES[storage_dtype], cache_bytes)
    im_conf = torch.zeros(N, A, device=device)
    pts_i = torch.zeros(E, n, 3, device=device)
    pts_j = torch.zeros(E, n, 3, device=device)
    conf_i = torch.zeros(E, n, device=device)
    conf_j = torch.zeros(E, n, device=device)
    score = torch.zeros(E, device=device)
    area = valid_full.sum(1).float()
    for a, b, (p1, c1, p2, c2) in store.chunks():
        ia, ja = ei[a:b], ej[a:b]
        c1 = torch.nan_to_num(c1) * valid_full[ia]
        c2 = torch.nan_to_num(c2) * valid_full[ja]
        score[a:b] = (c1.sum(1) / area[ia]) * (c2.sum(1) / area[ja])
        with warnings.catch_warnings():  # index_reduce is flagged beta by PyTorch
            warnings.simplefilter("ignore", UserWarning)
            im_conf.index_reduce_(0, ia, c1, "amax")
            im_conf.index_reduce_(0, ja, c2, "amax")
        gi, gj = idx[ia], idx[ja]
        pts_i[a:b] = torch.gather(p1, 1, gi[..., None].expand(-1, -1, 3))
        pts_j[a:b] = torch.gather(p2, 1, gj[..., None].expand(-1, -1, 3))
        conf_i[a:b] = torch.gather(c1, 1, gi) * valid[ia]
        conf_j[a:b] = torch.gather(c2, 1, gj) * valid[ja]
    return coarse_data(plan, ei, ej, pts_i, pts_j, conf_i, conf_j, score, im_conf, masks, conf_trf, store)


def coarse_data(plan: CoarsePlan, ei: torch.Tensor, ej: torch.Tensor, pts_i: torch.Tensor,
                pts_j: torch.Tensor, conf_i: torch.Tensor, conf_j: torch.Tensor, score: torch.Tensor,
                im_conf: torch.Tensor, masks: list[torch.Tensor] | None, conf_trf: str,
                store: EdgeStore | None = None) -> CoarseData:
    """:class:`CoarseData` from the coarse samples (shapes as its attributes), with the loss
    weights of :func:`edge_weights`; ``store`` ``None`` when no full-resolution predictions are
    at hand (the dense stage then cannot run)."""
    pts_i, pts_j, w_i, w_j, user_mask = edge_weights(plan, ei, ej, pts_i, pts_j, conf_i, conf_j,
                                                     masks, conf_trf)
    return CoarseData(
        ei=ei, ej=ej, shapes=plan.shapes, valid_full=plan.valid_full, idx=plan.idx, valid=plan.valid,
        uv=plan.uv, grid=plan.grid, stride=plan.stride, offset=plan.offset, pts_i=pts_i, pts_j=pts_j,
        conf_i=conf_i, conf_j=conf_j, w_i=w_i, w_j=w_j, score=score, im_conf=im_conf,
        user_mask=user_mask, store=store,
    )
