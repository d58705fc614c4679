"""Add photos to a reconstruction's output folder (``pointmap extend``), at the cost of the new ones.

A folder reconstructed with a predictions store (``--store on``) holds what extending needs: the
store (every pair prediction, or with the default store the streamed reductions of every pair, and
the identity of the model, images and settings), ``cameras.json``
(the aligned cameras, in the store's image order) and ``images/`` (copies of the images).

1. Refusals before any work: a folder that is not such a reconstruction, one made with another
   model, size or preprocessing (one line naming the difference), unreadable new images, a new
   image that is already in the reconstruction.
2. Pairs only where a new image is involved: new with new by the scene graph, new with old by
   retrieval against the old images' global descriptors (kept in the store by the reconstruction;
   computed from the ``images/`` copies and stored when missing). Every stored pair is reused,
   never run again.
3. Alignment: every image again, the stored pairs included (the result is brought into the old
   cameras' frame and scale); or, with ``freeze``, only the new images, against the old images
   they are paired with held as the folder holds them: their poses, intrinsics and depth maps
   (``depth/``) are known inputs of the alignment (``known_depths``), so their world points are
   constants the new images and the pairs' similarities are fitted to, and every old image keeps
   its camera and depth maps exactly. With a store of reductions, the new pairs are reduced into
   it (new per-pair rows; the old images' per-image state folds in their new pairs) and alignment
   runs from the reductions of every pair (:func:`pointmap.align.reduced.align_reduced`), from
   scratch, then into the old cameras' frame (with ``freeze``, the new pairs are also kept in
   memory for the alignment above); the store then records the grown scene graph, so a later
   extend works and a rerun of ``reconstruct`` on the folder is refused (another scene graph).
4. The exports the folder holds are rewritten under the overwrite rules of
   :class:`~pointmap.io_utils.OutputDir` (only files pointmap wrote are replaced); with
   ``freeze`` the old images' own files (image copies, depth maps and previews) are kept as they
   are, the same bytes a full rewrite would give (the clean-up leaves the old images as they are),
   and only the new images' files and those of the whole scene are written.

The new images are recorded in the store after the old ones (stored pairs keep their indices),
so an extend that is interrupted resumes when rerun with the same images.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..align import global_align
from ..align.reduced import StreamedReductions, grown_plan
from ..errors import PointmapError
from ..export.depth import read_depth_maps, read_depth_sidecar
from ..geometry.registration import align_multiple_poses, similarity_matrix
from ..images import LoadedImage, load_images
from ..inference import infer_pairs, resolve_device, resolve_dtype
from ..known_cameras import CameraPrior, read_pointmap_cameras
from ..model import DUSt3R, load_model
from ..model.network import Encoded
from ..pairs import auto_graph, make_pairs, needs_descriptors
from ..predictions import PairPredictions
from ..retrieval import centre_descriptors, describe_and_encode
from ..scene import Scene
from ..stages import StageLog
from ..store import STORE_DIRNAME, PredictionStore, image_digest, model_digest, recorded_identity, settings_difference
from .core import ReconstructionResult, align_config, reconstruct_images
from .targets import pairs_record
from .finishing import finish
from .inputs import has_video, load_inputs
from .preflight import FIXED_OUTPUTS, preflight
from .request import ExportSpec, Inputs, ModelSpec, Request, StorePolicy
from .runner import store_settings

__all__ = ["EXTEND_NEIGHBOURS", "ExtendError", "Reconstruction", "extend", "extend_pairs", "read_reconstruction",
           "run_extend"]

EXTEND_NEIGHBOURS = 10
"""Old images each new image is paired with (the most similar by global descriptor)."""


class ExtendError(PointmapError):
    """A folder that cannot be extended, or new images that cannot be added to it."""


@dataclass
class Reconstruction:
    """What extending reads of an output folder before any work.

    Attributes:
        folder: the output folder.
        files: the image files (in ``images/``), in the store's image order.
        cameras: each file's camera (``cam2world``, ``K_network``) from ``cameras.json``.
        identity: the store's recorded identity (model, images, settings).
        formats: the export formats the folder holds (rewritten by the extend).
    """

    folder: Path
    files: list[str]
    cameras: dict[str, CameraPrior]
    identity: dict
    formats: tuple[str, ...]


def read_reconstruction(folder: str | os.PathLike) -> Reconstruction:
    """Read ``cameras.json`` and the store's identity of ``folder``.

    Raises:
        ExtendError: not a folder, no ``cameras.json``, no predictions store, images that were not
            placed or have no copy in ``images/``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExtendError(f"{folder} is not a folder; pass the output folder of a reconstruction")
    if not (folder / "cameras.json").is_file():
        raise ExtendError(f"{folder} is not a pointmap reconstruction (it has no cameras.json); pass the "
                          "output folder of `pointmap reconstruct`")
    ident = recorded_identity(folder / STORE_DIRNAME)
    if not ident or not ident.get("images"):
        raise ExtendError(f"{folder} has no predictions store to extend; reconstruct it with --store on")
    cams = read_pointmap_cameras(folder / "cameras.json")
    files = list(cams)
    n_rec = len(ident["images"])
    if len(files) > n_rec or any(Path(ident["images"][k]["name"]).stem not in Path(f).stem
                                 for k, f in enumerate(files)):
        raise ExtendError(f"{folder}: cameras.json does not list the images of its predictions store in "
                          "order (or some images were not placed); reconstruct anew to extend it")
    missing = [f for f in files if not (folder / "images" / f).is_file()]
    if missing:
        raise ExtendError(f"{folder} has no copy of {missing[0]} in images/; reconstruct with an export "
                          "that copies the images (colmap or transforms, in the defaults) to extend it")
    formats = tuple(f for f, outs in FIXED_OUTPUTS.items() if (folder / outs[0]).exists())
    return Reconstruction(folder, files, cams, ident, formats)


def extend_pairs(
    n_old: int, n_new: int, graph: str, descriptors: torch.Tensor, k: int, stored: set[tuple[int, int]],
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(new pairs, old pairs)`` of an extend, images indexed old first, then new.

    New pairs: the new images among themselves by ``graph`` (``auto``: :func:`~pointmap.pairs.auto_graph`
    of their count), and each new image with its ``k`` most similar old images by ``descriptors``
    ``(n_old + n_new, D)`` (unit, centred), both ways. Old pairs: the ``stored`` pairs of two old
    images, sorted.
    """
    pairs: list[tuple[int, int]] = []
    if n_new >= 2:
        g = auto_graph(n_new) if graph == "auto" else graph
        desc = descriptors[n_old:] if needs_descriptors(g) else None
        pairs += [(n_old + i, n_old + j) for i, j in make_pairs(n_new, g, symmetrize=True, descriptors=desc)]
    sim = descriptors[n_old:] @ descriptors[:n_old].T
    near = sim.topk(min(k, n_old), dim=1).indices.tolist()
    pairs += [(n_old + q, m) for q, ms in enumerate(near) for m in ms]
    pairs += [(m, n_old + q) for q, ms in enumerate(near) for m in ms]
    old = sorted(p for p in stored if p[0] < n_old and p[1] < n_old)
    return list(dict.fromkeys(pairs)), old


def run_extend(
    request: Request,
    *,
    freeze: bool = False,
    k: int = EXTEND_NEIGHBOURS,
    model: DUSt3R | None = None,
    announce: Callable[[str], None] | None = None,
) -> tuple[ReconstructionResult, int]:
    """Add ``request.inputs`` to the reconstruction in ``request.export.output`` (module docstring).

    ``request.export.formats`` are the formats written (:func:`extend` passes those the folder
    holds); ``request.graph`` pairs the new images among themselves. Returns the result and how
    many pairs the network ran.

    Raises:
        ExtendError, ImageLoadError, PointmapError: before any inference.
    """
    old = read_reconstruction(request.export.output)
    reduced = "reductions" in old.identity
    if reduced and "colmap-db" in request.export.formats:
        raise ExtendError(f"{old.folder}'s predictions store keeps only the reductions of its pairs, and the COLMAP "
                          "database matches pixels of the full pairs; extend without it, or reconstruct with "
                          "--store-full")
    if freeze and "depth" not in old.formats:
        raise ExtendError(f"{old.folder} has no depth/ export: --freeze keeps the old images' depth maps, "
                          "so it needs them; extend without --freeze")
    if freeze:
        _check_depth_files(old)
    request = dataclasses.replace(request, export=dataclasses.replace(request.export, overwrite=True))
    out = preflight(request)
    dev = resolve_device(request.model.device)
    net = model if model is not None else load_model(request.model.weights, device=dev)
    size = request.model.size or net.config.native_size
    _check_settings(old, net, request, size, dev)
    new = load_inputs(request.inputs, size)
    olds = load_images([str(old.folder / "images" / f) for f in old.files], size=size)
    if reduced:
        _check_plan(old, olds + new)
    store = _open_store(old, new)
    desc, encoded = _descriptors(store, net, olds, new, dev, request.model.dtype)
    new_pairs, old_pairs = extend_pairs(len(olds), len(new), request.graph, desc, k, store.done())
    n_run = sum(p not in store.done() for p in new_pairs)
    if announce is not None:
        announce(f"extending {old.folder} ({len(olds)} images) by {len(new)}: {len(new_pairs)} new ordered "
                 f"pairs ({n_run} to run), {len(old_pairs)} stored pairs reused"
                 + (", old cameras frozen" if freeze else ""))
    run = _run_frozen if freeze else _run_free
    res = run(request, net, old, olds, new, new_pairs, old_pairs, store, dev, encoded)
    res.aligned = res.scene
    with res.stages.stage("export"):  # with freeze the old images' own files stay as they are
        res.scene, res.paths = finish(res.scene, request.post, request.export, out, matches=res.matches,
                                      progress=request.progress, device=dev,
                                      unchanged=range(len(olds)) if freeze else ())
    return res, n_run


def _check_depth_files(old: Reconstruction) -> None:
    """Refuse (one line) a folder whose ``depth/`` lacks a file of an old image (``--freeze``
    reads the depth maps and keeps every old image's files)."""
    try:
        side = read_depth_sidecar(old.folder / "depth")
    except PointmapError as exc:
        raise ExtendError(f"{exc}; extend without --freeze") from None
    for f in old.files:
        entry = side["images"].get(Path(f).stem, {})
        files = [v for key, v in entry.items() if key.endswith(("_png", "_npy", "_preview"))] or ["?"]
        if not all((old.folder / "depth" / str(v)).is_file() for v in files):
            raise ExtendError(f"{old.folder}/depth lacks the depth maps of {f}; extend without --freeze")


def _check_settings(old: Reconstruction, net: DUSt3R, request: Request, size: int, dev: torch.device) -> None:
    """Refuse a folder made with another model or other preprocessing (one line naming it)."""
    pre = store_settings(request, net, size, dev)
    if not has_video(request.inputs):  # photos added to frames of a video: the video's fps stands
        pre["fps"] = old.identity.get("preprocessing", {}).get("fps")
    probe = {"model": {"name": request.model.weights, "digest": model_digest(net)}, "preprocessing": pre}
    why = settings_difference(old.identity, probe)
    if why is not None:
        raise ExtendError(f"cannot extend {old.folder}: {why}")


def _check_plan(old: Reconstruction, images: list[LoadedImage]) -> None:
    """Refuse new images that do not fit the coarse plan of the folder's reductions (one line)."""
    try:
        grown_plan(old.identity["reductions"], [tuple(im.img.shape[-2:]) for im in images])
    except PointmapError as exc:
        raise ExtendError(f"cannot extend {old.folder}: {exc}; add images of the recorded shape, or "
                          "reconstruct with --store-full") from None


def _open_store(old: Reconstruction, new: list[LoadedImage]) -> PredictionStore:
    """The folder's store with the new images recorded after the old ones (already recorded: an
    interrupted extend of the same images resumes)."""
    recorded = old.identity["images"]
    digests = [r.get("digest") for r in recorded[: len(old.files)]]
    records = [{"name": str(im.meta.path or f"image_{k:04d}"), "digest": image_digest(im.img)}
               for k, im in enumerate(new)]
    for r in records:
        if r["digest"] in digests:
            raise ExtendError(f"{Path(r['name']).name} is already in the reconstruction (the same image as "
                              f"{old.files[digests.index(r['digest'])]})")
    pending = recorded[len(old.files):]
    if pending and [r.get("digest") for r in pending] != [r["digest"] for r in records]:
        raise ExtendError(f"the predictions store of {old.folder} holds {len(pending)} images of an unfinished "
                          "extend; rerun that extend (the same images) or reconstruct anew")
    store = PredictionStore.open(old.folder / STORE_DIRNAME, old.identity)
    if not pending:
        store.append_images(records)
    return store


def _descriptors(store: PredictionStore, net: DUSt3R, olds: list[LoadedImage], new: list[LoadedImage],
                 dev: torch.device, dtype: str | None) -> tuple[torch.Tensor, dict[int, Encoded]]:
    """``(N, D)`` unit retrieval descriptors of the old then new images, centred together; the raw
    ones are kept in the store (the old images' are computed only when it has none). With them,
    the encoder outputs of the images encoded for them (indices into old + new), which the
    extend's inference takes instead of encoding those images again
    (:func:`~pointmap.retrieval.describe_and_encode`)."""
    digests = [r["digest"] for r in store.identity["images"]]
    raw, encoded = [], {}
    for start, group, ds in ((0, olds, digests[: len(olds)]), (len(olds), new, digests[len(olds):])):
        got = store.image_descriptors(ds)
        if got is None:
            got, enc = describe_and_encode(net, group, device=dev, dtype=dtype)
            encoded.update({start + k: e for k, e in enc.items()})
        raw.append(got)
    raw_all = torch.cat(raw)
    store.write_image_descriptors(digests, raw_all)
    return centre_descriptors(raw_all), encoded


def _run_free(request: Request, net: DUSt3R, old: Reconstruction, olds: list[LoadedImage],
              new: list[LoadedImage], new_pairs: list, old_pairs: list, store: PredictionStore,
              dev: torch.device, encoded: dict[int, Encoded]) -> ReconstructionResult:
    """Every image aligned again from all pairs, then moved into the old cameras' frame and scale
    (from the reductions, grown by the new pairs, when the store keeps them)."""
    want_db = "colmap-db" in request.export.formats
    if "reductions" in store.identity:
        store = _grown(store, olds + new, old_pairs + new_pairs, dev)
    res = reconstruct_images(
        olds + new, net, pairs=old_pairs + new_pairs, batch_size=request.model.batch_size, device=dev,
        dtype=request.model.dtype, align=align_config(net, request.align.dense, request.post.conf_threshold,
                                                    request.priors.shared_focal),
        align_method=request.align.method, sparse=request.align.sparse, progress=request.progress, store=store,
        keep_descriptors=want_db, keep_matches=want_db, encoded=encoded)
    res.scene = _to_old_frame(res.scene, [old.cameras[f].cam2world for f in old.files])
    res.graph = "extend"
    return res


def _to_old_frame(scene: Scene, old_poses: Sequence[np.ndarray]) -> Scene:
    """``scene`` moved by the similarity that best maps its first cameras onto ``old_poses``."""
    n = len(old_poses)
    placed = [k for k in range(n) if bool(scene.placed[k])]
    if len(placed) < 2:
        return scene
    dst = torch.from_numpy(np.stack([old_poses[k] for k in placed])).double()
    s, R, t = align_multiple_poses(scene.poses[placed].double(), dst)
    M = similarity_matrix(s, R, t)
    poses = M @ scene.poses.double()
    poses[:, :3, :3] = poses[:, :3, :3] / s
    scene = dataclasses.replace(scene, poses=poses.float(), depths=[d * s.float() for d in scene.depths])
    return scene


def _run_frozen(request: Request, net: DUSt3R, old: Reconstruction, olds: list[LoadedImage],
                new: list[LoadedImage], new_pairs: list, old_pairs: list, store: PredictionStore,
                dev: torch.device, encoded: dict[int, Encoded]) -> ReconstructionResult:
    """The new images aligned against the old images they are paired with, those held as the
    folder holds them (camera and depth: constants of the alignment); every old image keeps its
    camera and depth maps."""
    n_old = len(olds)
    images = olds + new
    log = StageLog(dev)
    with log.stage("inference"):
        full = _infer_new(request, net, images, new_pairs, old_pairs, store, dev, encoded)
    used = sorted({i for p in new_pairs for i in p})
    maps = _folder_maps(old, range(n_old))
    held = {r: k for r, k in enumerate(used) if k < n_old}
    cams = {r: old.cameras[old.files[k]] for r, k in held.items()}
    cfg = align_config(net, request.align.dense, request.post.conf_threshold, request.priors.shared_focal)
    if dev.type == "cpu" and cfg.dense_solve_bytes is None:  # each new image couples only its own pairs
        cfg = dataclasses.replace(cfg, dense_solve_bytes=0)  # (old images: constants): sparse normal equations
    with log.stage("alignment"):
        sub = global_align(full.subset(used), [images[k].rgb for k in used], config=cfg, device=dev,
                           progress=request.progress,
                           known_poses={r: torch.from_numpy(c.cam2world).float() for r, c in cams.items()},
                           known_intrinsics={r: torch.from_numpy(c.K_network).float() for r, c in cams.items()},
                           known_depths={r: torch.from_numpy(maps[k][0]) for r, k in held.items()})
    scene = _merge(sub, used, old, olds, new, maps, cfg.conf_threshold)
    timings = {k: v.seconds for k, v in log.stages.items()}
    return ReconstructionResult(scene, images, full, timings, list(new_pairs), stages=log, graph="extend",
                                method="dense", conf_threshold=cfg.conf_threshold)


def _infer_new(request: Request, net: DUSt3R, images: list[LoadedImage], new_pairs: list, old_pairs: list,
               store: PredictionStore, dev: torch.device, encoded: dict[int, Encoded]) -> PairPredictions:
    """The new pairs' predictions: written to a store of full pairs and read back on access; or,
    with a store of reductions, kept in memory while each pair it lacks is reduced into it."""
    kw = dict(batch_size=request.model.batch_size, device=dev, dtype=resolve_dtype(request.model.dtype, dev),
              progress=request.progress, descriptors=False, encoded=encoded)
    if "reductions" not in store.identity:
        infer_pairs(net, images, new_pairs, store=store, **kw)
        return store.predictions(new_pairs, len(images))
    reduced = _grown(store, images, old_pairs + new_pairs, dev)
    todo = set(reduced.todo(new_pairs))

    def reduce(pairs: list[tuple[int, int]], arrays: dict[str, torch.Tensor]) -> None:
        rows = [b for b, p in enumerate(pairs) if tuple(p) in todo]
        if rows:
            reduced.write([pairs[b] for b in rows], {n: a[rows] for n, a in arrays.items()})

    preds = infer_pairs(net, images, new_pairs, reduce=reduce, **kw)
    reduced.save()
    return preds


def _grown(store: PredictionStore, images: list[LoadedImage], pairs: list, dev: torch.device) -> StreamedReductions:
    """The store's reductions reopened for every image, the grown scene graph ``pairs`` recorded."""
    store.append_images([], pairs=pairs_record("extend", pairs))
    return StreamedReductions.grow(store, [tuple(im.img.shape[-2:]) for im in images], dev)


def _folder_maps(old: Reconstruction, images: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``(depth, confidence)`` ``(H, W)`` float32 of the old ``images`` (store indices) as
    ``depth/`` holds them."""
    side = read_depth_sidecar(old.folder / "depth")
    return {k: read_depth_maps(old.folder / "depth", side["images"][Path(old.files[k]).stem]) for k in images}


def _merge(sub: Scene, used: list[int], old: Reconstruction, olds: list[LoadedImage], new: list[LoadedImage],
           maps: dict[int, tuple[np.ndarray, np.ndarray]], threshold: float) -> Scene:
    """The whole scene: each old image as the folder holds it (camera, and the depth and
    confidence ``maps`` of ``depth/``), each new image as aligned in ``sub`` (images ``used``)."""
    at = {k: n for n, k in enumerate(used)}
    imgs, poses, Ks, depths, confs, placed = [], [], [], [], [], []
    for k, im in enumerate(olds + new):
        imgs.append(im.rgb)
        if k < len(olds):
            cam = old.cameras[old.files[k]]
            d, c = maps[k]
            poses.append(torch.from_numpy(cam.cam2world).float())
            Ks.append(torch.from_numpy(cam.K_network).float())
            depths.append(torch.from_numpy(d))
            confs.append(torch.from_numpy(c))
            placed.append(True)
            continue
        s = at[k]
        poses.append(sub.poses[s])
        Ks.append(sub.intrinsics[s])
        depths.append(sub.depths[s])
        confs.append(sub.confidence[s])
        placed.append(bool(sub.placed[s]))
    masks = [(c > threshold) & (d > 0) & torch.isfinite(d) for d, c in zip(depths, confs)]
    images = olds + new
    return Scene(imgs=imgs, poses=torch.stack(poses), intrinsics=torch.stack(Ks), depths=depths, confidence=confs,
                 masks=masks, conf_threshold=threshold, placed=torch.tensor(placed),
                 metas=[im.meta for im in images],
                 names=[Path(im.meta.path).name if im.meta.path else f"image_{k:04d}" for k, im in enumerate(images)],
                 units=sub.units)


def extend(
    folder: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    freeze: bool = False,
    k: int = EXTEND_NEIGHBOURS,
    weights: str = "default",
    size: int | None = None,
    device: str | None = None,
    graph: str = "auto",
    formats: Sequence[str] | None = None,
    progress: bool = False,
    model: DUSt3R | None = None,
) -> ReconstructionResult:
    """Add ``images`` (files or folders) to the reconstruction in ``folder`` and rewrite its exports.

    Args:
        folder: the output folder of a reconstruction made with a predictions store (``--store on``).
        freeze: keep the old cameras (and depth maps) exactly; only the new images are aligned.
        k: old images each new image is paired with (the most similar).
        weights, size: the model and image size the folder was made with (others are refused).
        graph: scene graph of the new images among themselves.
        formats: export formats written (default: those the folder holds).

    Returns:
        The :class:`~pointmap.pipeline.core.ReconstructionResult` of the whole, grown scene.
    """
    old = read_reconstruction(folder)
    request = Request(inputs=Inputs([str(p) for p in images]),
                      model=ModelSpec(weights=weights, device=device, size=size), graph=graph,
                      store=StorePolicy(mode="on"),
                      export=ExportSpec(output=str(folder), formats=tuple(formats or old.formats), overwrite=True),
                      progress=progress)
    return run_extend(request, freeze=freeze, k=k, model=model)[0]
