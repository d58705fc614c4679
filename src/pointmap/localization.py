"""Place new photos in an existing reconstruction, the map fixed (``pointmap localize``).

A reconstruction's output folder holds what a query needs: ``cameras.json`` (the map images'
poses and intrinsics), ``depth/`` (each map image's depth and confidence at the network
resolution) and ``images/`` (copies of the map images). For each query:

1. retrieval: the ``k`` map images most similar by the network's global descriptors
   (:func:`pointmap.retrieval.image_descriptors`, as the ``retrieval-K`` scene graphs);
2. the network predicts each pair (query, map image);
3. 2D-3D correspondences: query pixels matched to map pixels by reciprocal 3D nearest neighbours
   of the pair's pointmaps, each map pixel carrying its world point (the map's depth and pose);
4. one PnP-RANSAC over the correspondences of all ``k`` pairs, re-fitted on its inliers
   (:func:`pointmap.align.poses.place_query`, the solver of ``pointmap eval visloc``), with the
   query's focal estimated from its own pointmap (principal point at the image centre).

A query is *placed* only with at least ``min_inliers`` inliers and an inlier fraction
(its *confidence*) of at least ``min_confidence`` (default 0.5: with the bundled model a photo of
random noise reaches 0.35 against a map, real queries 0.65 to 0.95); otherwise it is reported as
not placed and given no pose. The map folder is only read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .align.poses import QueryView, place_query
from .errors import PointmapError
from .export.cameras import CONVENTION
from .export.depth import read_depth_maps, read_depth_sidecar
from .geometry import depth_to_world, estimate_focal
from .images import LoadedImage, load_images
from .inference import infer_pairs, resolve_device
from .io_utils import write_json
from .known_cameras import read_pointmap_cameras
from .model.network import DUSt3R
from .predictions import PairPredictions
from .retrieval import image_descriptors
from .store import STORE_DIRNAME, model_digest, recorded_identity

__all__ = [
    "LocalizationMap",
    "MapFolderError",
    "QueryPose",
    "localize",
    "place_queries",
    "poses_dict",
    "query_pairs",
    "read_map",
    "retrieve_neighbours",
    "write_poses",
]

_NEEDS = ("cameras.json", "depth/depth.json", "images")


class MapFolderError(PointmapError):
    """A folder that cannot serve as a map: not a reconstruction, or made with another model or size."""


@dataclass
class LocalizationMap:
    """The placed images of a reconstruction, as :func:`read_map` reads them.

    Attributes:
        folder: the output folder.
        files: file names of the map images (in ``images/``).
        images: the map images at the network resolution.
        cam2world: ``(M, 4, 4)`` poses (OpenCV axes, the reconstruction's units).
        K: ``(M, 3, 3)`` intrinsics in network pixels.
        depth_entries: each image's entry of ``depth/depth.json``.
        conf_threshold: the reconstruction's raw-confidence threshold (points kept above it).
        units: ``{"units", "metric", "units_note"}`` of the reconstruction.
    """

    folder: Path
    files: list[str]
    images: list[LoadedImage]
    cam2world: np.ndarray
    K: np.ndarray
    depth_entries: list[dict[str, Any]]
    conf_threshold: float
    units: dict[str, Any]
    _world: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.files)

    def world_points(self, m: int) -> np.ndarray:
        """``(H, W, 3)`` float64 world points of map image ``m`` at the network resolution; NaN
        where the reconstruction kept no point (confidence at or below its threshold, no depth)."""
        if m not in self._world:
            depth, conf = read_depth_maps(self.folder / "depth", self.depth_entries[m])
            pts = depth_to_world(torch.from_numpy(depth).double(), torch.from_numpy(self.K[m]),
                                 torch.from_numpy(self.cam2world[m])).numpy()
            keep = (conf > self.conf_threshold) & np.isfinite(depth) & (depth > 0)
            self._world[m] = np.where(keep[..., None], pts, np.nan)
        return self._world[m]


@dataclass
class QueryPose:
    """Where a query is in the map.

    Attributes:
        name: the query's file name.
        placed: whether it was placed (enough inliers); else ``cam2world`` is ``None``.
        cam2world: ``(4, 4)`` camera-to-world pose (OpenCV axes, the map's units) or ``None``.
        K: ``(3, 3)`` intrinsics in the query's original pixels (estimated focal, centred
            principal point); K_network the same at the network resolution.
        inliers, n_matches, confidence: PnP-RANSAC inliers, 2D-3D correspondences and
            ``inliers / n_matches``.
        neighbours: the map images it was paired with, most similar first.
    """

    name: str
    placed: bool
    cam2world: np.ndarray | None
    K: np.ndarray
    K_network: np.ndarray
    inliers: int
    n_matches: int
    confidence: float
    neighbours: list[str]


def _check_layout(folder: Path) -> None:
    if not folder.is_dir():
        raise MapFolderError(f"{folder} is not a folder; pass the output folder of a reconstruction")
    missing = [n for n in _NEEDS if not (folder / n).exists()]
    if missing:
        raise MapFolderError(f"{folder} is not a reconstruction that can serve as a map: it has no "
                             f"{', '.join(missing)} (reconstruct with the default exports, which write "
                             "cameras.json, depth/ and images/)")


def read_map(folder: str | os.PathLike, size: int) -> LocalizationMap:
    """Read the placed images of the reconstruction in ``folder`` (``cameras.json``, ``depth/``,
    ``images/``), the images preprocessed at ``size``.

    Raises:
        MapFolderError: a missing part, depth maps not at the network resolution, or images that
            load at another network size than the depth maps (another ``size`` or model).
    """
    folder = Path(folder)
    _check_layout(folder)
    priors = read_pointmap_cameras(folder / "cameras.json")
    side = read_depth_sidecar(folder / "depth")
    if side.get("resolution") != "network":
        raise MapFolderError(f"{folder / 'depth'} holds depth maps at the {side.get('resolution')!r} "
                             "resolution; localization needs them at the network resolution (the default)")
    files = [f for f, p in priors.items() if p.K is not None and p.cam2world is not None]
    entries = [side["images"].get(Path(f).stem) for f in files]
    if not files or any(e is None for e in entries):
        what = "no placed image" if not files else f"no depth maps of {files[entries.index(None)]}"
        raise MapFolderError(f"{folder} has {what}; it cannot serve as a map")
    images = load_images([str(folder / "images" / f) for f in files], size=size)
    for f, im, e in zip(files, images, entries):
        if tuple(im.true_shape) != (e.get("height"), e.get("width")):
            raise MapFolderError(
                f"{folder} was reconstructed at {e.get('width')}x{e.get('height')} network pixels ({f}) "
                f"and size {size} gives {im.true_shape[1]}x{im.true_shape[0]}: use the model and --size "
                "it was made with")
    K = np.stack([im.meta.intrinsics_to_network(torch.from_numpy(priors[f].K)).numpy()
                  for f, im in zip(files, images)])
    return LocalizationMap(folder, files, images, np.stack([priors[f].cam2world for f in files]), K,
                           entries, float(side.get("conf_threshold", 0.0)),
                           {k: side.get(k) for k in ("units", "metric", "units_note")})


def check_map_model(folder: str | os.PathLike, model: DUSt3R, model_name: str, size: int) -> None:
    """Refuse a map whose predictions store says it was made with another model or size.

    Raises:
        MapFolderError: naming both models or sizes.
    """
    ident = recorded_identity(Path(folder) / STORE_DIRNAME)
    if not ident:
        return
    rec = ident.get("model", {})
    if rec.get("digest") not in (None, model_digest(model)):
        raise MapFolderError(f"{folder} was reconstructed with the model {rec.get('name')!r} and this run "
                             f"uses {model_name!r} (different weights); pass --weights {rec.get('name')}")
    made = ident.get("preprocessing", {}).get("size")
    if made is not None and made != size:
        raise MapFolderError(f"{folder} was reconstructed at size {made} and this run uses {size}; "
                             f"pass --size {made}")


def retrieve_neighbours(
    model: DUSt3R, lmap: LocalizationMap, queries: Sequence[LoadedImage], k: int,
    device: str | torch.device | None = None,
) -> list[list[int]]:
    """Indices of the ``k`` map images most similar to each query (cosine of the global
    descriptors of :func:`pointmap.retrieval.image_descriptors`), most similar first."""
    desc = image_descriptors(model, [*lmap.images, *queries], device=device)
    sim = desc[len(lmap):] @ desc[: len(lmap)].T
    return sim.topk(min(k, len(lmap)), dim=1).indices.tolist()


def query_pairs(n_map: int, neighbours: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Ordered pairs ``(n_map + q, m)`` of every query ``q`` with its map images ``m``, for images
    listed map first, then queries."""
    return [(n_map + q, m) for q, ms in enumerate(neighbours) for m in ms]


def _query_intrinsics(views: Sequence[QueryView]) -> np.ndarray:
    """``(3, 3)`` network intrinsics of a query: median focal of its pointmaps, centred principal point."""
    H, W = views[0].pts_query.shape[:2]
    f = float(np.median([float(estimate_focal(v.pts_query.float())) for v in views]))
    return np.array([[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]])


def place_queries(
    lmap: LocalizationMap,
    queries: Sequence[LoadedImage],
    preds: PairPredictions,
    neighbours: Sequence[Sequence[int]],
    conf_threshold: float = 3.0,
    iterations: int = 1000,
    reproj_error: float = 5.0,
    min_inliers: int = 30,
    min_confidence: float = 0.5,
) -> list[QueryPose]:
    """Place each query from the predictions of its pairs :func:`query_pairs` (images indexed map
    first, then queries) with :func:`pointmap.align.poses.place_query`."""
    out = []
    for q, (im, ms) in enumerate(zip(queries, neighbours)):
        views = []
        for m in ms:
            e = preds.index(len(lmap) + q, m)
            views.append(QueryView(preds.pts3d_1[e], preds.conf_1[e], preds.pts3d_2_in_1[e], preds.conf_2[e],
                                   lmap.world_points(m)))
        K = _query_intrinsics(views)
        p = place_query(views, K, conf_threshold, iterations, reproj_error,
                        min_inliers=min_inliers, min_confidence=min_confidence)
        K0 = im.meta.intrinsics_to_original(torch.from_numpy(K)).numpy()
        out.append(QueryPose(Path(im.meta.path or f"query_{q}").name, p.placed, p.cam2world if p.placed else None,
                             K0, K, p.inliers, p.n_matches, p.confidence, [lmap.files[m] for m in ms]))
    return out


def localize(
    folder: str | os.PathLike,
    queries: Sequence[str | os.PathLike],
    model: DUSt3R | str = "default",
    k: int = 5,
    size: int | None = None,
    device: str | torch.device | None = None,
    conf_threshold: float | None = None,
    min_inliers: int = 30,
    min_confidence: float = 0.5,
    progress: bool = False,
) -> tuple[list[QueryPose], LocalizationMap]:
    """Poses and intrinsics of the query images in the reconstruction in ``folder`` (only read).

    Args:
        folder: a reconstruction's output folder (``cameras.json``, ``depth/``, ``images/``).
        queries: image files or folders.
        model: the network or its name (as ``--weights``; the one the map was made with).
        k: map images paired with each query.
        size: network image size (default: the model's).
        conf_threshold: raw confidence above which pair predictions are matched (default: the
            model's recommendation).
        min_inliers, min_confidence: what it takes for a query to be placed.

    Returns:
        ``(one QueryPose per query image, the map)``.

    Raises:
        MapFolderError, ImageLoadError, PointmapError: before any inference.
    """
    from .model import load_model

    dev = resolve_device(device)
    _check_layout(Path(folder))
    name = model if isinstance(model, str) else "the given model"
    net = load_model(model, device=dev) if isinstance(model, str) else model
    size = int(size or net.config.native_size)
    check_map_model(folder, net, name, size)
    lmap = read_map(folder, size)
    imgs = load_images([str(q) for q in queries], size=size)
    neighbours = retrieve_neighbours(net, lmap, imgs, k, dev)
    preds = infer_pairs(net, [*lmap.images, *imgs], query_pairs(len(lmap), neighbours), device=dev,
                        progress=progress)
    thr = net.recommended_conf_threshold if conf_threshold is None else conf_threshold
    return place_queries(lmap, imgs, preds, neighbours, thr, min_inliers=min_inliers,
                         min_confidence=min_confidence), lmap


def poses_dict(poses: Sequence[QueryPose], lmap: LocalizationMap) -> dict[str, Any]:
    """The JSON-ready description of localized queries::

        {"convention", "units", "metric", "units_note", "map", "queries": {name: {"placed",
         "cam2world" (4x4 or null), "K" (3x3, original pixels), "K_network", "inliers",
         "n_matches", "confidence", "neighbours"}}}
    """
    convention = dict(CONVENTION)
    if lmap.units.get("metric"):
        convention["units"] = "metres for translations (a metric network's scale); pixels for intrinsics"
    queries = {}
    for p in poses:
        key = p.name if p.name not in queries else f"{p.name}#{len(queries)}"
        queries[key] = {
            "placed": p.placed, "cam2world": None if p.cam2world is None else p.cam2world.tolist(),
            "K": p.K.tolist(), "K_network": p.K_network.tolist(), "inliers": p.inliers,
            "n_matches": p.n_matches, "confidence": p.confidence, "neighbours": p.neighbours,
        }
    return {"convention": convention, **lmap.units, "map": str(lmap.folder), "queries": queries}


def write_poses(path: str | os.PathLike, poses: Sequence[QueryPose], lmap: LocalizationMap) -> Path:
    """Write :func:`poses_dict` to the JSON file ``path``, atomically; returns it."""
    return write_json(Path(path), poses_dict(poses, lmap))
