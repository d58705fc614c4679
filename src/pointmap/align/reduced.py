"""Streamed reductions: what alignment reads, computed batch by batch as pair predictions are made,
so that the full pairs need not be kept.

Per ordered pair ``(i, j)`` (:meth:`PairReducer.reduce`), on the predictions' device:

* the coarse stage's samples (:class:`~.data.CoarsePlan`, fixed by the image shapes before any
  prediction): ``pts_i (n, 3)``, ``conf_i (n,)`` of ``pts3d_1``/``conf_1`` at image ``i``'s coarse
  pixels and ``pts_j``, ``conf_j`` of ``pts3d_2_in_1``/``conf_2`` at image ``j``'s;
* ``score``: ``mean(conf_1) * mean(conf_2)`` over the full maps (the spanning tree's weight).

Per image, accumulated over the pairs (:class:`PairReducer` state):

* ``im_conf (N, A)``: the running maximum of every raw confidence of the image;
* a *canonical depth* in the image's own frame: the ``conf_trf``-weighted mean of the z of every
  ``pts3d_1`` where the image comes first, each divided by its median depth, then brought to the
  median depth of the most confident such pair (mean raw confidence).

The coarse stage reads exactly what it reads from full pairs (:func:`~.data.build_edge_data`), so
cameras are those of the full-pairs path up to float16 rounding. The dense stage, which needs every
pair's full maps, is replaced by the canonical depth times the coarse solution's correction: the
log-ratio ``log(coarse depth / canonical depth)`` at the coarse pixels, upsampled bilinearly
(:func:`~.dense.upsample_one`, image by image), so the depth is the coarse stage's at its pixels and the
canonical depth's shape in between. ``benchmarks/bench_reduction.py`` measures what this loses
against the dense stage; ``docs/benchmarks.md`` states it.

:class:`StreamedReductions` keeps the reductions in a :class:`~pointmap.store.PredictionStore`:
per-pair rows in its append-only shards, the per-image state with the list of pairs folded into
it in ``state-images.safetensors`` (written atomically by :meth:`StreamedReductions.save`). A
pair counts as done only once a state save includes it, so an interrupted run re-runs the pairs
folded after the last save and resumes to the uninterrupted result. :meth:`StreamedReductions.grow`
reopens them for more images at the recorded coarse plan (:func:`grown_plan`; ``pointmap extend``):
the stored rows stay valid and the saved state fills the first images' rows. ``pointmap reconstruct``
aligns this way whenever it keeps a store (:class:`pointmap.pipeline.targets.StoreTarget`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import GraphError, PointmapError
from ..geometry.camera import intrinsics_matrix
from ..pairs import connected_components
from ..store import PredictionStore
from .coarse import coarse_solve
from .common import CameraSet, KnownCameras, assemble_scene
from .config import AlignConfig
from .data import CoarsePlan, coarse_data
from .dense import upsample_one
from .init import mst_init
from .params import conf_transform

__all__ = ["PAIR_FIELDS", "REDUCTION_VERSION", "PairReducer", "StreamedReductions", "align_reduced",
           "grown_plan", "reduction_block"]

REDUCTION_VERSION = 1
"""Version of the reductions' definition, recorded in a store's identity."""

PAIR_FIELDS = ("pts_i", "conf_i", "pts_j", "conf_j", "score")
"""The per-pair rows of a reduction (shapes ``(n, 3)``, ``(n,)``, ``(n, 3)``, ``(n,)``, ``()``)."""

_STATE = "images"


def reduction_block(plan: CoarsePlan, conf_trf: str) -> dict[str, Any]:
    """The reductions' settings a store records (a rerun with others is refused)."""
    return {"version": REDUCTION_VERSION, "stride": plan.stride, "offset": plan.offset,
            "conf_trf": conf_trf, "coarse_pixels": int(plan.idx.shape[1])}


class PairReducer:
    """Reduces batches of pair predictions (see the module docstring) and accumulates the
    per-image state on ``device``.

    Attributes:
        plan: the coarse pixel sample; ``conf_trf``: confidence transform of the canonical weights.
        im_conf: ``(N, A)`` running max raw confidence; ``num``, ``den``: ``(N, A)`` the canonical
            depth's weighted sums (float32); ``best``: ``(N, 2)`` mean raw confidence and median
            depth of each image's most confident first-image pair (``-inf`` before any).
        folded: the pairs folded in, in order.
    """

    def __init__(self, plan: CoarsePlan, conf_trf: str, device: torch.device | str) -> None:
        self.plan, self.conf_trf = plan, conf_trf
        self.device = torch.device(device)
        N, A = plan.valid_full.shape
        self.im_conf = torch.zeros(N, A, device=self.device)
        self.num = torch.zeros(N, A, device=self.device)
        self.den = torch.zeros(N, A, device=self.device)
        self.best = torch.tensor([[-float("inf"), 1.0]], device=self.device).repeat(N, 1)
        self.folded: list[tuple[int, int]] = []
        self._idx = plan.idx.to(self.device)
        self._valid = plan.valid.to(self.device)
        self._rows: Callable[[str, int], torch.Tensor] | None = None

    def spill(self, rows: Callable[[str, int], torch.Tensor]) -> None:
        """Drop ``num`` and ``den`` from memory (``2 N A`` floats: 1.57 GB at 1000 images of
        512x384) while alignment runs; ``rows(name, k)`` gives image ``k``'s row of either from
        where the state was saved. Anything else that needs them reads them back whole."""
        self.num = self.den = None  # type: ignore[assignment]
        self._rows = rows

    def _restore(self) -> None:
        if self.num is None and self._rows is not None:
            N = self.im_conf.shape[0]
            self.num = torch.stack([self._rows("num", k) for k in range(N)]).to(self.device)
            self.den = torch.stack([self._rows("den", k) for k in range(N)]).to(self.device)
            self._rows = None

    def reduce(self, pairs: Sequence[tuple[int, int]], arrays: Mapping[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
        """Fold one batch into the per-image state and return its per-pair rows.

        Args:
            pairs: the batch's ordered pairs ``(i, j)`` (one shape per batch, as stacked).
            arrays: ``pts3d_1``, ``pts3d_2_in_1`` ``(B, H, W, 3)``, ``conf_1``, ``conf_2``
                ``(B, H, W)`` (any device; moved to the reducer's).

        Returns:
            :data:`PAIR_FIELDS` stacked ``(B, ...)``, float32 on the reducer's device.
        """
        dev = self.device
        B = len(pairs)
        p1, c1 = _finite_points(arrays["pts3d_1"].to(dev).float().reshape(B, -1, 3), arrays["conf_1"].to(dev))
        p2, c2 = _finite_points(arrays["pts3d_2_in_1"].to(dev).float().reshape(B, -1, 3), arrays["conf_2"].to(dev))
        ia = torch.tensor([int(p[0]) for p in pairs], dtype=torch.long, device=dev)
        ja = torch.tensor([int(p[1]) for p in pairs], dtype=torch.long, device=dev)
        gi, gj = self._idx[ia], self._idx[ja]  # padding gathers pixel 0, with confidence 0
        rows = {
            "pts_i": torch.gather(p1, 1, gi[..., None].expand(-1, -1, 3)),
            "conf_i": torch.gather(c1, 1, gi) * self._valid[ia],
            "pts_j": torch.gather(p2, 1, gj[..., None].expand(-1, -1, 3)),
            "conf_j": torch.gather(c2, 1, gj) * self._valid[ja],
            "score": c1.mean(1) * c2.mean(1),
        }
        self._fold(pairs, ia, ja, p1[..., 2], c1, c2)
        return rows

    def _fold(self, pairs: Sequence[tuple[int, int]], ia: torch.Tensor, ja: torch.Tensor,
              z: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> None:
        """Per-image state: max confidences and the canonical depth's sums."""
        hw = z.shape[1]
        with warnings.catch_warnings():  # index_reduce is flagged beta by PyTorch
            warnings.simplefilter("ignore", UserWarning)
            self.im_conf[:, :hw].index_reduce_(0, ia, c1, "amax")
            self.im_conf[:, : c2.shape[1]].index_reduce_(0, ja, c2, "amax")
        ok = z > 0  # z is finite (:func:`_finite_points`)
        med = torch.nanmedian(torch.where(ok, z, torch.full_like(z, float("nan"))), 1).values
        med = torch.where(torch.isfinite(med), med, torch.ones_like(med))
        w = conf_transform(c1, self.conf_trf).clamp(min=0) * ok
        zn = torch.where(ok, z, torch.zeros_like(z)) / med[:, None]
        self.num[:, :hw].index_add_(0, ia, w * zn)
        self.den[:, :hw].index_add_(0, ia, w)
        m = c1.mean(1)
        for b, (i, _) in enumerate(pairs):  # in order: the first of equally confident pairs wins
            better = m[b] > self.best[int(i), 0]
            self.best[int(i)] = torch.where(better, torch.stack([m[b], med[b]]), self.best[int(i)])
        self.folded.extend((int(i), int(j)) for i, j in pairs)

    def canonical_depth(self, k: int | None = None) -> torch.Tensor:
        """``(N, A)`` canonical depth (0 where no first-image pair gave a weight); with ``k``
        image ``k``'s alone, ``(A,)``."""
        if k is not None and self.num is None and self._rows is not None:  # spilled: one row read
            num, den = self._rows("num", k).to(self.device), self._rows("den", k).to(self.device)
            med = self.best[k, 1]
        elif k is None:
            self._restore()
            num, den, med = self.num, self.den, self.best[:, 1:2]
        else:
            num, den, med = self.num[k], self.den[k], self.best[k, 1]
        d = num / den.clamp(min=1e-30) * med
        return torch.where(den > 0, d, torch.zeros_like(d))

    def state(self) -> dict[str, torch.Tensor]:
        """The per-image state (host tensors) for :meth:`load`."""
        self._restore()
        return {"im_conf": self.im_conf.cpu(), "num": self.num.cpu(), "den": self.den.cpu(),
                "best": self.best.cpu()}

    def load(self, state: Mapping[str, torch.Tensor], folded: Sequence[tuple[int, int]]) -> None:
        """Restore what :meth:`state` gave, with the pairs it accounts for. A state of fewer images
        (or smaller ones) fills the first rows (columns); the others stay as before any pair (an
        extend adds images after the recorded ones)."""
        self._restore()
        for name in ("im_conf", "num", "den", "best"):
            t = state[name].to(self.device)
            getattr(self, name)[: t.shape[0], : t.shape[1]].copy_(t)
        self.folded = [(int(i), int(j)) for i, j in folded]


def _finite_points(pts: torch.Tensor, conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pts (B, A, 3)`` with non-finite points set to 0 and ``conf (B, ...)`` as ``(B, A)`` float
    with those points' confidence (and a non-finite confidence) set to 0: a prediction that
    overflowed carries no weight."""
    c = torch.nan_to_num(conf.float().reshape(pts.shape[:-1]))
    if bool(torch.isfinite(pts.sum())):  # a non-finite coordinate makes the sum non-finite
        return pts, c
    ok = torch.isfinite(pts).all(-1)
    return torch.where(ok[..., None], pts, torch.zeros_like(pts)), torch.where(ok, c, torch.zeros_like(c))


class StreamedReductions:
    """Reductions of a run's pairs kept in a :class:`PredictionStore` (see the module docstring).

    Use :meth:`open`; :meth:`todo` lists the pairs still to predict; :meth:`write` reduces and
    stores a batch; :meth:`save` makes the per-image state durable; :meth:`align` aligns.
    """

    def __init__(self, store: PredictionStore, reducer: PairReducer, save_every_s: float) -> None:
        self.store, self.reducer, self.save_every_s = store, reducer, save_every_s
        self._saved = time.monotonic()

    @classmethod
    def open(cls, path: str | Path, identity: Mapping[str, Any], shapes: Sequence[tuple[int, int]],
             n_pairs: int, config: AlignConfig | None = None, device: torch.device | str = "cpu",
             save_every_s: float = 60.0) -> "StreamedReductions":
        """Create or reopen the reductions store at ``path`` for images of ``shapes`` and a graph
        of ``n_pairs`` ordered pairs (which fix the coarse pixels, as :func:`align_pairs` would).

        Raises:
            StoreMismatchError: the store was made from other inputs or other reductions.
        """
        cfg = config or AlignConfig()
        plan = CoarsePlan.make(list(shapes), cfg.coarse_stride, cfg.coarse_pixels_for(n_pairs),
                               torch.device(device))
        ident = {**dict(identity), "reductions": reduction_block(plan, cfg.conf_trf)}
        store = PredictionStore.open(path, ident)
        reducer = PairReducer(plan, cfg.conf_trf, device)
        saved = store.load_state(_STATE)
        if saved is not None:
            reducer.load(*saved)
        return cls(store, reducer, save_every_s)

    @classmethod
    def grow(cls, store: PredictionStore, shapes: Sequence[tuple[int, int]], device: torch.device | str = "cpu",
             save_every_s: float = 60.0) -> "StreamedReductions":
        """Reopen the reductions of ``store`` (already open) for more images: ``shapes`` of every
        image, the recorded ones first. The coarse plan is the recorded one (:func:`grown_plan`);
        the saved per-image state fills the first images' rows.

        Raises:
            PointmapError: the store holds no reductions, or the images do not fit its plan.
        """
        plan = grown_plan(store.identity.get("reductions"), shapes, torch.device(device))
        reducer = PairReducer(plan, store.identity["reductions"]["conf_trf"], device)
        saved = store.load_state(_STATE)
        if saved is not None:
            reducer.load(*saved)
        return cls(store, reducer, save_every_s)

    def todo(self, pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """The pairs of ``pairs`` not yet accounted for by the last saved state, in order."""
        done = set(self.reducer.folded) & self.store.done()
        return [(int(i), int(j)) for i, j in pairs if (int(i), int(j)) not in done]

    def write(self, pairs: Sequence[tuple[int, int]], arrays: Mapping[str, torch.Tensor]) -> None:
        """Reduce one batch, store its rows and save the state when ``save_every_s`` passed."""
        self.store.write(pairs, self.reducer.reduce(pairs, arrays))
        if time.monotonic() - self._saved >= self.save_every_s:
            self.save()

    def save(self) -> None:
        """Write the per-image state and the pairs folded into it (atomically)."""
        self.store.save_state(_STATE, self.reducer.state(), self.reducer.folded)
        self._saved = time.monotonic()

    def align(self, pairs: Sequence[tuple[int, int]], config: AlignConfig | None = None,
              device: torch.device | str = "cpu", **kw: Any):
        """:func:`align_reduced` on the stored rows of ``pairs`` (the state saved first; the
        canonical-depth sums are then read from it image by image, not held)."""
        self.save()
        self.reducer.spill(lambda name, k: self.store.state_row(_STATE, name, k))
        return align_reduced(self.reducer, pairs, self.store.rows(pairs, PAIR_FIELDS), config, device, **kw)


def grown_plan(block: Mapping[str, Any] | None, shapes: Sequence[tuple[int, int]],
               device: torch.device | str = "cpu") -> CoarsePlan:
    """The coarse plan of images of ``shapes`` at the stride of the recorded reductions ``block``
    (:func:`reduction_block`): the stored rows of the first images stay valid.

    Raises:
        PointmapError: no reductions, or the images need another plan (another coarse pixel count:
            images of another shape than the recorded ones).
    """
    if not block:
        raise PointmapError("the predictions store holds no reductions")
    plan = CoarsePlan.make([tuple(s) for s in shapes], int(block["stride"]), int(block.get("coarse_pixels", 0)),
                           torch.device(device))
    got = reduction_block(plan, str(block["conf_trf"]))
    if got != dict(block):
        raise PointmapError(f"the images need the reductions {got!r} and the store holds {dict(block)!r} "
                            "(images of another shape than the recorded ones)")
    return plan


def align_reduced(reducer: PairReducer, pairs: Sequence[tuple[int, int]],
                  rows: MutableMapping[str, torch.Tensor], config: AlignConfig | None = None,
                  device: torch.device | str = "cpu", imgs: Sequence[torch.Tensor] | None = None,
                  masks: list[torch.Tensor] | None = None, progress: bool = False):
    """Align from reductions: the coarse stage as :func:`~.optimizer.align_pairs` runs it, then
    the canonical depth corrected by the coarse depths (module docstring) instead of the dense
    stage. The pair graph must be connected; no known cameras.

    Args:
        reducer: the per-image state (every pair of ``pairs`` folded in).
        rows: :data:`PAIR_FIELDS` of ``pairs``, stacked ``(E, ...)``; emptied as read (each
            stored field released once converted: with the converted rows not held past the
            coarse data either, 0.65 GB less during the coarse stage at 1000 images of 512x384).
        imgs, masks: per image colours ``(H, W, 3)`` in ``[0, 1]`` and loss masks ``(H, W)``.

    Returns:
        :class:`~.optimizer.AlignResult` (``dense_loss`` NaN).

    Raises:
        GraphError: the pair graph is not connected.
    """
    from .optimizer import AlignResult

    cfg = config or AlignConfig()
    dev = torch.device(device)
    plan = reducer.plan
    N = len(plan.shapes)
    if len(connected_components(list(pairs), N)) != 1:
        raise GraphError("alignment from reductions needs a connected pair graph")
    missing = set((int(i), int(j)) for i, j in pairs) - set(reducer.folded)
    if missing:
        raise PointmapError(f"the reductions lack {len(missing)} of the pairs, e.g. {sorted(missing)[:3]}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    plan_d = CoarsePlan(plan.shapes, plan.stride, plan.offset, plan.valid_full.to(dev), plan.idx.to(dev),
                        plan.valid.to(dev), plan.uv.to(dev), plan.grid)
    ei = torch.tensor([int(p[0]) for p in pairs], dtype=torch.long, device=dev)
    ej = torch.tensor([int(p[1]) for p in pairs], dtype=torch.long, device=dev)
    r = {k: rows.pop(k).to(dev).float() for k in PAIR_FIELDS}
    data = coarse_data(plan_d, ei, ej, r["pts_i"], r["pts_j"], r["conf_i"], r["conf_j"], r["score"],
                       reducer.im_conf.to(dev), masks, cfg.conf_trf)
    del r  # the coarse data holds what it needs (its points are copies)
    timings["prepare"] = time.perf_counter() - t0
    known = KnownCameras.from_inputs(plan.shapes)
    t0 = time.perf_counter()
    init = mst_init(data, cfg.conf_threshold, cfg.niter_pnp, cfg.pnp_reproj_error, cfg.base_scale,
                    cfg.pnp_seed, **known.init_priors())
    timings["init"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    co = coarse_solve(data, init, known, cfg, progress)
    timings["coarse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = CameraSet(torch.eye(4).repeat(N, 1, 1), torch.zeros(N, 3, 3), [None] * N, [None] * N,
                    torch.zeros(N, dtype=torch.bool))
    for k, (h, w) in enumerate(plan.shapes):  # image by image: no (N, A) temporaries
        with torch.no_grad():
            depth = corrected_depth(data, reducer.canonical_depth(k).to(dev), co.log_depth, k)
        K = intrinsics_matrix(torch.stack([co.fx[k], co.fy[k]]).cpu(), co.pp[k].cpu())
        out.fill(k, co.R[k], co.C[k], K, depth.reshape(h, w), data.im_conf[k, : h * w].reshape(h, w), known)
    timings["dense"] = time.perf_counter() - t0
    E = len(pairs)
    pw = torch.zeros(E, 4, 4)
    pw[:, :3, :3] = (co.s[:, None, None] * co.Rp).cpu()
    pw[:, :3, 3] = co.Tp.cpu()
    pw[:, 3, 3] = 1
    scene = assemble_scene(out, imgs, masks, cfg.conf_threshold)
    return AlignResult(scene=scene, loss=co.loss, dense_loss=float("nan"), init_loss=co.init_loss,
                       pair_poses=pw, stride=plan.stride, iterations=co.iterations, timings=timings)


def corrected_depth(data, canonical: torch.Tensor, log_depth: torch.Tensor, k: int) -> torch.Tensor:
    """Image ``k``'s ``(H W,)`` depth: its ``canonical (A,)`` depth times the upsampled log-ratio
    of the coarse depths ``exp(log_depth[k])`` (``log_depth (N, n)``) to it at the coarse pixels;
    the upsampled coarse depth where the canonical depth is 0 (a coarse pixel without it takes
    the image's median ratio)."""
    hw = data.shapes[k][0] * data.shapes[k][1]
    canonical = canonical[:hw]
    can_c = canonical[data.idx[k]]
    good = (can_c > 0) & data.valid[k]
    ratio = log_depth[k] - can_c.clamp(min=1e-30).log()
    med = ratio[good].median() if bool(good.any()) else ratio.new_tensor(0.0)
    ratio = torch.where(good, ratio, med).expand(len(data.shapes), -1)  # a view: row k is read
    up = upsample_one(data, ratio, k).exp() * canonical
    return torch.where(canonical > 0, up, upsample_one(data, log_depth, k).exp())
