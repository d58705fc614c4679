"""Where a run keeps its pair predictions: the output folder's predictions store, opened for the
full pairs or for the streamed reductions once the scene graph is known, and why a run needs the
full pairs (:func:`full_pairs_reason`)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from ..align import AlignConfig
from ..align.reduced import StreamedReductions
from ..images import LoadedImage
from ..model import DUSt3R
from ..pairs import connected_components
from ..store import STORE_DIRNAME, PredictionStore, StoreMismatchError, store_identity

__all__ = ["StoreTarget", "announce_store", "descriptor_target", "full_pairs_reason", "open_store", "open_target",
           "pairs_record", "store_target"]


def open_store(
    out_dir: str | os.PathLike,
    model: DUSt3R,
    model_name: str,
    images: Sequence[LoadedImage],
    preprocessing: dict,
    rank: int = 0,
    replace: bool = False,
) -> PredictionStore:
    """Create or reopen the predictions store of an output folder (``out_dir/.pointmap-store``)
    for the full pairs.

    The store records the model, the images (each preprocessed image is digested) and the
    ``preprocessing`` settings; reopening it for another model, other images or other settings
    raises :class:`~pointmap.store.StoreMismatchError`. Ranks other than 0 open the store the
    first rank created. With ``replace``, a store of another run is removed (it is pointmap's own:
    it holds ``store.json``) and a new one started instead.
    """
    target = store_target(out_dir, model, model_name, images, preprocessing, replace=replace, full_pairs=True)
    if rank != 0:
        return PredictionStore.open(target.path, target.identity, rank=rank, create=False)
    return target.open_full()


@dataclass
class StoreTarget:
    """A predictions store to open once the scene graph is known: streamed reductions, or the
    full pairs when ``full_pairs`` or when the run needs them (:func:`full_pairs_reason`).

    Attributes:
        path: the store folder (``OUTPUT/.pointmap-store``).
        identity: model, images and preprocessing (:func:`pointmap.store.store_identity`).
        replace: a store of another run is removed (it is pointmap's own) and a new one started.
        full_pairs: keep the full pair predictions whatever the alignment.
    """

    path: Path
    identity: dict
    replace: bool = False
    full_pairs: bool = False

    def _replacing(self, open_: Callable):
        try:
            return open_()
        except StoreMismatchError:
            if not self.replace:
                raise
            PredictionStore.remove(self.path)
            return open_()

    def open_full(self) -> PredictionStore:
        """The store of the full pairs (:class:`~pointmap.store.PredictionStore`)."""
        return self._replacing(lambda: PredictionStore.open(self.path, self.identity))

    def open_reductions(self, shapes: Sequence[tuple[int, int]], pairs: Sequence[tuple[int, int]], graph: str,
                        config: AlignConfig, device: torch.device):
        """The store of the streamed reductions of ``pairs`` of images of network ``shapes``
        ``(H, W)`` (:class:`~pointmap.align.reduced.StreamedReductions`, state on ``device``);
        its identity records the scene graph (a rerun with another is refused)."""
        ident = {**self.identity, "pairs": pairs_record(graph, pairs)}
        return self._replacing(lambda: StreamedReductions.open(self.path, ident, shapes, len(pairs), config, device))


def pairs_record(graph: str, pairs: Sequence[tuple[int, int]]) -> str:
    """The scene graph as a reductions store records it: its name, pair count and a digest of the pairs."""
    digest = hashlib.sha256(json.dumps([[int(i), int(j)] for i, j in pairs]).encode()).hexdigest()[:12]
    return f"{graph}: {len(pairs)} ordered pairs, {digest}"


def store_target(out_dir: str | os.PathLike, model: DUSt3R, model_name: str, images: Sequence[LoadedImage],
                 preprocessing: dict, *, replace: bool = False, full_pairs: bool = False) -> StoreTarget:
    """The :class:`StoreTarget` of an output folder (``out_dir/.pointmap-store``) for these images
    and ``preprocessing`` settings (see :func:`open_store`)."""
    names = [im.meta.path or f"image_{k:04d}" for k, im in enumerate(images)]
    ident = store_identity(model_name, model, images, names, preprocessing)
    return StoreTarget(Path(out_dir) / STORE_DIRNAME, ident, replace, full_pairs)


def descriptor_target(store, pairs) -> tuple[Path, dict] | None:
    """``(folder, identity)`` of the predictions store a run keeps its images' retrieval
    descriptors in (``pointmap extend`` pairs new images by them): a store the run opens, or an
    open one of rank 0 when the run plans its scene graph; ``None`` otherwise."""
    if isinstance(store, StoreTarget):
        return store.path, store.identity
    if isinstance(store, PredictionStore) and store.rank == 0 and pairs is None:
        return store.path, store.identity
    return None


def full_pairs_reason(method: str, n_images: int, pairs: Sequence[tuple[int, int]], priors: Mapping,
                      model: DUSt3R, matching: bool = False, distributed: bool = False) -> str | None:
    """Why a run needs every pair's full predictions, in words; ``None`` when dense alignment
    from the streamed reductions serves it.

    The full pairs are needed by sparse alignment and pixel matching (``matching``: a COLMAP
    database), the two-view closed form (one or two images), known cameras (``priors`` with
    ``known_poses`` or ``known_intrinsics``; masks are served), a metric network (its scale is
    read from the pairs), distributed inference, and a pair graph in several parts (alignment
    from reductions needs a connected one).
    """
    known = any(priors.get(k) is not None for k in ("known_poses", "known_intrinsics"))
    reasons = [(method != "dense", "sparse alignment matches pixels of the full pairs"),
               (n_images <= 2, "one or two images are aligned in closed form"),
               (matching, "the COLMAP database needs the pairs' pixel matches"),
               (known, "known cameras are fitted against the full pairs"),
               (bool(model.config.metric), "a metric network's scale is read from the full pairs"),
               (distributed, "distributed inference gathers the full pairs"),
               (len(connected_components([tuple(p) for p in pairs], n_images)) != 1,
                "the pair graph has several parts")]
    return next((why for cond, why in reasons if cond), None)


def open_target(target: StoreTarget, why: str | None, work: list[LoadedImage], pairs, graph: str,
                 cfg: AlignConfig, dev: torch.device):
    """``(store, None)`` of the full pairs when there is a reason ``why``, else ``(None, reductions)``."""
    if why is not None:
        return target.open_full(), None
    return None, target.open_reductions([tuple(im.img.shape[-2:]) for im in work], pairs, graph, cfg, dev)


def announce_store(announce: Callable[[str], None] | None, store: PredictionStore | None, reduced, why: str | None,
                    pairs: Sequence[tuple[int, int]]) -> None:
    """Tell which store the run keeps and what it resumes from."""
    if announce is None:
        return
    if reduced is not None:
        done = len(pairs) - len(reduced.todo(pairs))
        if done:
            announce(f"resuming: {done} of {len(pairs)} pairs already reduced in {reduced.store.path}")
        return
    if why != "asked for":
        announce(f"the predictions store keeps the full pairs: {why}")
    if len(store):
        announce(f"resuming: {len(store)} pair predictions already in {store.path}")
