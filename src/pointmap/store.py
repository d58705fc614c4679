"""An on-disk store of pair predictions: float16 shards written batch by batch, read on demand.

Layout of a store folder (``reconstruct`` keeps it in ``OUTPUT/.pointmap-store``)::

    store.json              what the predictions were made from (model, images, preprocessing)
    index-<rank>.jsonl      one line per finished shard: its file, pairs and per-field shapes
    r<rank>-<seq>.safetensors   one shard: every field of a batch of pairs, stacked (B, ...)
    state-<name>.safetensors    optional: per-image arrays accumulated over pairs, and which pairs
                                (:meth:`PredictionStore.save_state`, written atomically)
    image-descriptors.safetensors   every image's raw retrieval descriptor, by image digest
                                (kept by ``reconstruct``, grown by ``extend``;
                                :func:`read_image_descriptors`)

A shard holds *named arrays per pair* (``pts3d_1``, ``conf_1``, ``pts3d_2_in_1``, ``conf_2`` for
DUSt3R; other networks add fields), floating fields stored as float16. A shard counts only once its
index line is written (after the shard file is complete and renamed into place), so a process
killed at any moment leaves a store whose indexed pairs are all whole; a rerun skips them
(:meth:`PredictionStore.done`). Several processes (ranks of a distributed run) write into one
store, each with its own index file and shard names. Reading maps a shard file (safetensors),
copies the rows asked for and keeps at most a few shards mapped, so host memory stays bounded
whatever the store's size.

``store.json`` records an *identity*: the model (name and a digest of its weights and
configuration), the images (name and a digest of each preprocessed image, so a changed file,
size or crop is noticed) and preprocessing settings; a store of streamed reductions
(:mod:`pointmap.align.reduced`, ``reconstruct``'s default) adds their settings (``reductions``)
and its scene graph (``pairs``). :meth:`PredictionStore.open` refuses an identity that differs from
the recorded one with :class:`StoreMismatchError`, naming what differs (first whether the store
holds full pairs or reductions: :func:`kind_difference`).

(Over 450 lines: the layout, its writing, reading and identity checks are one format, kept with its
reader beside its writer.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import PointmapError
from .io_utils import atomic_path, atomic_write, atomic_write_text
from .predictions import LazyTensors, PairPredictions

__all__ = [
    "DESC_FIELDS",
    "DUST3R_FIELDS",
    "PredictionStore",
    "STORE_DIRNAME",
    "StoreMismatchError",
    "image_digest",
    "kind_difference",
    "model_digest",
    "recorded_identity",
    "read_image_descriptors",
    "settings_difference",
    "store_identity",
]

STORE_DIRNAME = ".pointmap-store"
"""Name of the store folder inside an output folder."""

DUST3R_FIELDS = ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")
"""The per-pair fields of a DUSt3R prediction, in :class:`PairPredictions` order."""

DESC_FIELDS = ("desc_1", "desc_conf_1", "desc_2", "desc_conf_2")
"""The per-pair descriptor fields of a network with local descriptors (MASt3R), stored only when
asked for (at 24 dimensions they take 8x the disk of the points)."""

_FORMAT = 1
IMAGE_DESCRIPTORS = "image-descriptors.safetensors"
"""The store's file of per-image global descriptors (:meth:`PredictionStore.write_image_descriptors`)."""
_F16_MAX = 65504.0
_SHARD_RE = re.compile(r"^r(\d+)-(\d+)\.safetensors$")
_STATE_RE = re.compile(r"^state-[a-z0-9_]+\.safetensors$")


class StoreMismatchError(PointmapError):
    """A predictions store was made from another model, other images or other settings."""


def _digest_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(str(t.dtype).encode())
    h.update(str(tuple(t.shape)).encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def image_digest(img: torch.Tensor) -> str:
    """Hex digest of a preprocessed image tensor (content, shape and dtype)."""
    h = hashlib.sha1()
    _digest_tensor(h, img)
    return h.hexdigest()[:16]


def model_digest(model: torch.nn.Module) -> str:
    """Hex digest of a network's weights (every parameter and buffer) and configuration."""
    h = hashlib.sha1()
    cfg = getattr(model, "config", None)
    h.update(repr(cfg).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        _digest_tensor(h, t)
    return h.hexdigest()[:16]


def store_identity(
    model_name: str,
    model: torch.nn.Module,
    images: Sequence[Any],
    names: Sequence[str],
    preprocessing: Mapping[str, Any],
) -> dict[str, Any]:
    """The identity a store records: model, images and preprocessing.

    Args:
        model_name: how the user named the model (checkpoint path or ``"default"``).
        model: the network (its weights are digested).
        images: preprocessed images (``LoadedImage`` or ``(3, H, W)`` tensors).
        names: display name of each image (used in messages).
        preprocessing: settings that change the predictions (size, inference dtype, ...).
    """
    imgs = []
    for nm, im in zip(names, images):
        t = getattr(im, "img", im)
        imgs.append({"name": str(nm), "digest": image_digest(t)})
    return {
        "model": {"name": str(model_name), "digest": model_digest(model)},
        "images": imgs,
        "preprocessing": {k: v for k, v in sorted(preprocessing.items())},
    }


#: The command-line option behind each setting a store records, named in mismatch messages.
SETTING_OPTIONS: dict[str, str] = {
    "size": "--size", "dtype": "--dtype", "fps": "--fps",
    "descriptors": "--align or --export colmap-db",
}


def recorded_identity(path: str | os.PathLike) -> dict[str, Any] | None:
    """The identity recorded in the ``store.json`` of the store folder ``path`` (``None`` when it
    has none).

    Raises:
        PointmapError: the file exists but cannot be read.
    """
    meta = Path(path) / "store.json"
    if not meta.is_file():
        return None
    try:
        rec = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PointmapError(f"cannot read the predictions store {meta}: {exc}") from exc
    ident = rec.get("identity") if isinstance(rec, dict) else None
    return ident if isinstance(ident, dict) else {}


def settings_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """What differs between the model and preprocessing of two identities, in words (``None``
    when they match); settings are named with their command-line option (:data:`SETTING_OPTIONS`)."""
    if old.get("model", {}).get("digest") != new.get("model", {}).get("digest"):
        return (f"it was made with the model {old.get('model', {}).get('name')!r} and this run uses "
                f"{new.get('model', {}).get('name')!r} (different weights: --weights)")
    op, np_ = old.get("preprocessing", {}), new.get("preprocessing", {})
    for key in sorted(set(op) | set(np_)):
        if op.get(key) != np_.get(key):
            option = f" ({SETTING_OPTIONS[key]} on the command line)" if key in SETTING_OPTIONS else ""
            return f"it was made with {key}={op.get(key)!r} and this run uses {key}={np_.get(key)!r}{option}"
    if "reductions" in old and "reductions" in new and old["reductions"] != new["reductions"]:
        return (f"it holds the reductions {old['reductions']!r} and this run asks for {new['reductions']!r} "
                "(other alignment settings, or another --graph)")
    return None


def read_image_descriptors(path: str | os.PathLike, digests: Sequence[str],
                           identity: Mapping[str, Any] | None = None) -> torch.Tensor | None:
    """``(N, D)`` global descriptors of the images with these ``digests`` kept in the store folder
    ``path`` (:meth:`PredictionStore.write_image_descriptors`); ``None`` when it lacks any of them,
    or, given the ``identity`` of a run, when the store was made with another model or other
    settings (:func:`settings_difference`)."""
    file = Path(path) / IMAGE_DESCRIPTORS
    if not file.is_file():
        return None
    if identity is not None and settings_difference(recorded_identity(path) or {}, identity) is not None:
        return None
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        known = json.loads((f.metadata() or {}).get("digests", "[]"))
        desc = f.get_tensor("descriptors")
    row = {d: k for k, d in enumerate(known)}
    if any(d not in row for d in digests):
        return None
    return desc[[row[d] for d in digests]].float()


def kind_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Whether one identity is of a store of full pairs and the other of streamed reductions
    (:mod:`pointmap.align.reduced`), in words (``None`` when both are of one kind)."""
    if ("reductions" in old) == ("reductions" in new):
        return None
    if "reductions" in new:
        return ("it holds the full pair predictions (a run with --store-full) and this run keeps only their "
                "reductions; add --store-full to resume it")
    return ("it holds only the reductions of the pair predictions and this run keeps the full pairs "
            "(--store-full, sparse alignment, known cameras or a COLMAP database need them)")


def _mismatch(path: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """What differs between two identities, in words (``None`` when they match). The kind of
    store and the settings are compared before the images (a new ``size`` changes every image
    digest), the images before the scene graph."""
    why = kind_difference(old, new) or settings_difference(old, new)
    if why is not None:
        return why
    oi, ni = old.get("images", []), new.get("images", [])
    if len(oi) != len(ni):
        return f"it was made from {len(oi)} images and this run has {len(ni)}"
    for k, (a, b) in enumerate(zip(oi, ni)):
        if a.get("digest") != b.get("digest"):
            what = "a different" if a.get("name") == b.get("name") else f"{b.get('name')!r} instead of the"
            return f"image {k} is {what} image {a.get('name')!r} (another file, or files in another order)"
    if old.get("pairs") != new.get("pairs"):
        return (f"it holds reductions of the scene graph {old.get('pairs')!r} and this run's is "
                f"{new.get('pairs')!r} (--graph on the command line)")
    return None


class _Field(LazyTensors):
    """One field of a list of stored pairs, read on access."""

    def __init__(self, store: "PredictionStore", locs: list[tuple[str, int]], name: str,
                 shapes: list[tuple[int, ...]]) -> None:
        self.store, self.locs, self.name, self.shapes = store, locs, name, shapes

    def load(self, k: int) -> torch.Tensor:
        shard, row = self.locs[k]
        return self.store._read(shard, row, self.name)


class PredictionStore:
    """A folder of pair predictions (see the module docstring for the layout).

    Use :meth:`open` to create or reopen one; :meth:`write` adds a batch; :meth:`done` lists the
    pairs already stored; :meth:`predictions` gives a store-backed :class:`PairPredictions`.

    Attributes:
        path: the store folder.
        identity: what the predictions were made from (``store.json``).
        rank: the writer's rank (names its index file and shards).
    """

    def __init__(self, path: Path, identity: dict[str, Any], rank: int = 0, max_open: int = 4) -> None:
        self.path = Path(path)
        self.identity = identity
        self.rank = int(rank)
        self.max_open = max(1, int(max_open))
        self._open: OrderedDict[str, Any] = OrderedDict()
        self._entries: dict[tuple[int, int], tuple[str, int, dict[str, list[int]]]] = {}
        self._seq = 0
        self.refresh()

    # ------------------------------------------------------------------ creation
    @classmethod
    def open(cls, path: str | os.PathLike, identity: Mapping[str, Any], rank: int = 0,
             create: bool = True) -> "PredictionStore":
        """Open the store at ``path``, creating it (when ``create``) if it does not exist.

        Raises:
            StoreMismatchError: the store was made from another model, other images or other
                preprocessing; the message says which and what to do.
            PointmapError: ``path`` exists but is not a store, or it is missing and not ``create``.
        """
        path = Path(path)
        meta = path / "store.json"
        ident = json.loads(json.dumps(dict(identity)))  # plain JSON types, as read back
        if meta.is_file():
            try:
                rec = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise PointmapError(f"cannot read the predictions store {meta}: {exc}") from exc
            if rec.get("format") != _FORMAT:
                raise PointmapError(f"{path} is a predictions store of another format "
                                    f"({rec.get('format')!r}); use a new output folder")
            why = _mismatch(path, rec.get("identity", {}), ident)
            if why is not None:
                raise StoreMismatchError(
                    f"the predictions store {path} does not belong to this run: {why}. Rerun with "
                    "the same model, images and settings to resume, or use another output folder "
                    "(or --overwrite) to start afresh")
            return cls(path, rec.get("identity", {}), rank)
        if not create:
            raise PointmapError(f"no predictions store at {path}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise PointmapError(f"{path} exists and is not a predictions store; remove it or use "
                                "another output folder")
        path.mkdir(parents=True, exist_ok=True)
        if rank == 0 or not meta.exists():
            atomic_write_text(meta, json.dumps({"format": _FORMAT, "identity": ident}, indent=1))
        return cls(path, ident, rank)

    @staticmethod
    def remove(path: str | os.PathLike) -> None:
        """Delete the store at ``path``: only its own files (``store.json``, index files, shards);
        the folder itself goes when nothing else is left in it."""
        path = Path(path)
        if not (path / "store.json").is_file():
            raise PointmapError(f"{path} is not a predictions store; not removing it")
        for f in path.iterdir():
            if (f.name in ("store.json", IMAGE_DESCRIPTORS) or re.match(r"^index-\d+\.jsonl$", f.name)
                    or _SHARD_RE.match(f.name) or _STATE_RE.match(f.name)):
                f.unlink()
        with contextlib.suppress(OSError):
            path.rmdir()

    def append_images(self, images: Sequence[Mapping[str, str]], **record: Any) -> None:
        """Record more images (``{"name", "digest"}`` each, as :func:`store_identity` makes them)
        after the recorded ones: the stored pairs keep their indices (``pointmap extend``).
        ``record``: identity entries replaced at the same time (a reductions store's ``pairs``)."""
        if self.rank != 0:
            raise PointmapError("only rank 0 records images in a predictions store")
        self.identity = {**self.identity, **json.loads(json.dumps(record)),
                         "images": [*self.identity.get("images", []), *(dict(im) for im in images)]}
        atomic_write_text(self.path / "store.json", json.dumps({"format": _FORMAT, "identity": self.identity},
                                                               indent=1))

    # ------------------------------------------------------------------ image descriptors
    def image_descriptors(self, digests: Sequence[str]) -> torch.Tensor | None:
        """``(N, D)`` stored global descriptors of the images with these digests (``None`` when
        the store lacks any of them)."""
        return read_image_descriptors(self.path, digests)

    def write_image_descriptors(self, digests: Sequence[str], desc: torch.Tensor) -> None:
        """Store ``(N, D)`` global descriptors of the images with these digests (replacing the
        file: pass every image's)."""
        from safetensors.torch import save

        data = save({"descriptors": desc.detach().cpu().float().contiguous()},
                    metadata={"digests": json.dumps(list(digests))})
        with atomic_write(self.path / IMAGE_DESCRIPTORS) as f:
            f.write(data)

    # ------------------------------------------------------------------ index
    def refresh(self) -> None:
        """Re-read every rank's index (to see shards other processes finished)."""
        entries: dict[tuple[int, int], tuple[str, int, dict[str, list[int]]]] = {}
        seq = 0
        if self.path.is_dir():
            for f in sorted(self.path.iterdir()):
                m = _SHARD_RE.match(f.name)
                if m and int(m.group(1)) == self.rank:
                    seq = max(seq, int(m.group(2)) + 1)
            for idx in sorted(self.path.glob("index-*.jsonl")):
                for line in idx.read_text(encoding="utf-8").splitlines():
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line torn by a crash: its shard is not counted
                    if not (self.path / rec["shard"]).is_file():
                        continue
                    for row, (i, j) in enumerate(rec["pairs"]):
                        entries.setdefault((int(i), int(j)), (rec["shard"], row, rec["shapes"]))
        self._entries = entries
        self._seq = max(self._seq, seq)

    def done(self) -> set[tuple[int, int]]:
        """The ordered pairs already stored."""
        return set(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def nbytes(self) -> int:
        """Size of the store's files on disk (bytes)."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    # ------------------------------------------------------------------ writing
    def write(self, pairs: Sequence[tuple[int, int]], arrays: Mapping[str, torch.Tensor]) -> None:
        """Store one batch: ``arrays[name]`` is ``(B, ...)`` with row ``b`` belonging to
        ``pairs[b]``. Floating arrays are stored as float16 (clamped to its range)."""
        from safetensors.torch import save

        pairs = [(int(i), int(j)) for i, j in pairs]
        out: dict[str, torch.Tensor] = {}
        for name, t in arrays.items():
            if t.shape[0] != len(pairs):
                raise ValueError(f"{name} has {t.shape[0]} rows for {len(pairs)} pairs")
            t = t.detach().cpu()
            if t.is_floating_point():
                t = t.float().clamp(-_F16_MAX, _F16_MAX).to(torch.float16)
            out[name] = t.contiguous()
        name = f"r{self.rank}-{self._seq:06d}.safetensors"
        self._seq += 1
        with atomic_write(self.path / name) as f:
            f.write(save(out))
        rec = {"shard": name, "pairs": pairs,
               "shapes": {k: list(v.shape[1:]) for k, v in out.items()}}
        with open(self.path / f"index-{self.rank}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for row, p in enumerate(pairs):
            self._entries.setdefault(p, (name, row, rec["shapes"]))

    # ------------------------------------------------------------------ reading
    def _handle(self, shard: str) -> Any:
        from safetensors import safe_open

        h = self._open.get(shard)
        if h is None:
            h = safe_open(str(self.path / shard), framework="pt")
            self._open[shard] = h
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)  # unmaps that shard
        else:
            self._open.move_to_end(shard)
        return h

    def _read(self, shard: str, row: int, name: str) -> torch.Tensor:
        return self._handle(shard).get_slice(name)[row : row + 1][0].clone()

    def close(self) -> None:
        """Unmap every open shard."""
        self._open.clear()

    def _stored(self, pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """``pairs`` as int tuples, every one checked to be in the store."""
        pairs = [(int(i), int(j)) for i, j in pairs]
        missing = [p for p in pairs if p not in self._entries]
        if missing:
            raise PointmapError(f"the predictions store {self.path} lacks {len(missing)} of the "
                                f"pairs, e.g. {missing[:3]}")
        return pairs

    def rows(self, pairs: Sequence[tuple[int, int]], fields: Sequence[str]) -> dict[str, torch.Tensor]:
        """Every field of ``fields`` for ``pairs`` (in that order), stacked ``(P, ...)`` as stored
        (float16 for floating fields); each shard is read once per field.

        Raises:
            PointmapError: a pair is not in the store.
        """
        pairs = self._stored(pairs)
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for k, p in enumerate(pairs):
            shard, row, _ = self._entries[p]
            by_shard.setdefault(shard, []).append((k, row))
        out: dict[str, torch.Tensor] = {}
        for shard, items in by_shard.items():
            h = self._handle(shard)
            at = torch.tensor([k for k, _ in items])
            rows = torch.tensor([r for _, r in items])
            for name in fields:
                t = h.get_tensor(name)[rows]
                if name not in out:
                    out[name] = torch.empty((len(pairs),) + tuple(t.shape[1:]), dtype=t.dtype)
                out[name][at] = t
        return out

    def save_state(self, name: str, arrays: Mapping[str, torch.Tensor],
                   pairs: Sequence[tuple[int, int]]) -> None:
        """Write ``state-<name>.safetensors`` atomically: ``arrays`` (as given, on the host) and
        the list of ``pairs`` they account for (read back by :meth:`load_state`)."""
        from safetensors.torch import save_file

        if not re.match(r"^[a-z0-9_]+$", name):
            raise ValueError(f"state name {name!r}: use lower-case letters, digits and _")
        data = {k: v.detach().cpu().contiguous() for k, v in arrays.items()}
        meta = {"pairs": json.dumps([[int(i), int(j)] for i, j in pairs], separators=(",", ":"))}
        self._open.pop(f"state-{name}.safetensors", None)
        # written tensor by tensor from their memory (no bytes object of the whole state)
        with atomic_path(self.path / f"state-{name}.safetensors") as tmp:
            save_file(data, str(tmp), metadata=meta)

    def load_state(self, name: str) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]] | None:
        """What :meth:`save_state` last wrote under ``name`` (``None`` when nothing was)."""
        from safetensors import safe_open

        f = self.path / f"state-{name}.safetensors"
        if not f.is_file():
            return None
        with safe_open(str(f), framework="pt") as h:
            arrays = {k: h.get_tensor(k).clone() for k in h.keys()}
            pairs = [(int(i), int(j)) for i, j in json.loads((h.metadata() or {}).get("pairs", "[]"))]
        return arrays, pairs

    def state_row(self, name: str, key: str, k: int) -> torch.Tensor:
        """Row ``k`` of the array ``key`` of the state :meth:`save_state` last wrote under
        ``name``, read alone from the file."""
        from safetensors import safe_open

        with safe_open(str(self.path / f"state-{name}.safetensors"), framework="pt") as h:
            return h.get_slice(key)[k]

    def predictions(self, pairs: Sequence[tuple[int, int]], n_images: int,
                    fields: Sequence[str] = DUST3R_FIELDS) -> PairPredictions:
        """Store-backed :class:`PairPredictions` for ``pairs`` (in that order).

        Raises:
            PointmapError: a pair is not in the store.
        """
        pairs = self._stored(pairs)
        locs = [(self._entries[p][0], self._entries[p][1]) for p in pairs]

        def column(name: str) -> _Field:
            return _Field(self, locs, name, [tuple(self._entries[p][2][name]) for p in pairs])

        cols = [column(name) for name in fields]
        desc: dict[str, _Field] = {}
        if pairs and all(n in self._entries[p][2] for p in pairs for n in DESC_FIELDS):
            desc = {n: column(n) for n in DESC_FIELDS}  # read on access, like the points
        return PairPredictions(pairs, *cols, n_images=n_images, **desc)

