"""A reconstruction request: every choice of a run, as nested dataclasses.

The command line (``pointmap reconstruct``), the Python API (:func:`pointmap.reconstruct`) and the
web app each build a :class:`Request`; :func:`pointmap.pipeline.run_request` runs it. Building and
checking a request imports nothing heavy (no torch): the alignment configs are resolved when the
request runs (``None`` = the method's defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal

from ..errors import InputError

if TYPE_CHECKING:
    from ..align import AlignConfig, SparseConfig

__all__ = [
    "Alignment", "ExportSpec", "Inputs", "ModelSpec", "PostProcess", "Priors", "Request", "StorePolicy",
    "check_conf_threshold",
]

DEFAULT_FORMATS = ("glb", "ply", "colmap", "transforms", "depth", "cameras")
"""The formats written when none are named (:data:`pointmap.export.FORMATS`; a test keeps them
equal, this copy keeps the request free of the export modules' imports)."""


@dataclass
class Inputs:
    """What to reconstruct.

    Attributes:
        paths: image files, folders of images and video files, in order.
        fps: frames per second sampled from videos.
        max_frames: most frames kept per video.
        skip_bad: skip unreadable images with a warning instead of failing.
        max_pixels: largest photo (width x height) decoded; ``None``: the loader's bound.
        names: per image, the file name that known cameras and masks are matched by (default: the
            base name of each image file; the app passes the upload names).
    """

    paths: list[str] = field(default_factory=list)
    fps: float = 1.0
    max_frames: int = 200
    skip_bad: bool = False
    max_pixels: int | None = None
    names: list[str] | None = None


@dataclass
class ModelSpec:
    """The network and how it runs.

    Attributes:
        weights: ``"default"`` (bundled), a released model's short name, a checkpoint, a hub id.
        device: ``"cpu"``, ``"cuda"``, ... (``None``: CUDA when available).
        dtype: inference precision (``None``: float32 on CPU, bfloat16 on CUDA).
        fast: compile the network with bfloat16 trunk and heads (CUDA only).
        size: preprocessing size, 224 or 512 (``None``: the model's training size).
        batch_size: pairs per network batch.
    """

    weights: str = "default"
    device: str | None = None
    dtype: str | None = None
    fast: bool = False
    size: int | None = None
    batch_size: int = 16


@dataclass
class StorePolicy:
    """The on-disk predictions store (an interrupted run resumes from it).

    With the store on, dense alignment runs from the streamed reductions of the pairs
    (:mod:`pointmap.align.reduced`), which the store keeps instead of the full pairs (about a
    tenth of the disk; the cameras are the dense stage's, the depth maps the canonical depth
    corrected by the coarse stage: docs/benchmarks.md). Without a store (``"auto"`` up to 20
    images) the full pairs stay in memory and the full dense stage runs.

    Attributes:
        mode: ``"on"``, ``"off"``, or ``"auto"`` (on above 20 images or when the store folder
            already holds a store).
        folder: the folder that holds ``.pointmap-store`` (``None``: the export's output folder).
        replace: a store made for other inputs or settings is replaced instead of refused.
        full_pairs: keep every pair's full predictions in the store and run the full dense
            stage (what ``pointmap extend`` needs; ``"auto"`` then keeps a store whatever the
            number of images); sparse alignment, known cameras, a COLMAP
            database, metric networks, distributed runs and disconnected graphs keep them anyway
            (:func:`pointmap.pipeline.targets.full_pairs_reason`).
    """

    mode: Literal["auto", "on", "off"] = "off"
    folder: str | None = None
    replace: bool = False
    full_pairs: bool = False


@dataclass
class Alignment:
    """The alignment method and its own settings.

    Attributes:
        method: ``"dense"`` (every pixel of every pair), ``"sparse"`` (from pixel matches) or
            ``"auto"`` (sparse for MASt3R models or from 1000 ordered pairs on).
        dense: :class:`~pointmap.align.AlignConfig` (``None``: its defaults). Its
            ``conf_threshold`` and ``shared_focal`` are set from :class:`PostProcess` and
            :class:`Priors`.
        sparse: :class:`~pointmap.align.SparseConfig` (``None``: its defaults).
    """

    method: Literal["dense", "sparse", "auto"] = "dense"
    dense: AlignConfig | None = None
    sparse: SparseConfig | None = None


@dataclass
class Priors:
    """What is known beforehand.

    Attributes:
        cameras: known intrinsics and/or poses (a cameras.json, transforms.json or COLMAP model).
        masks: folder of per-image masks (non-zero = keep).
        shared_focal: one focal length for all images whose focal is not known.
    """

    cameras: str | None = None
    masks: str | None = None
    shared_focal: bool = False


@dataclass
class PostProcess:
    """What is kept of the aligned scene.

    Attributes:
        conf_threshold: raw confidence (``1 + exp(x)``, always > 1) a point must exceed; ``0``
            keeps every point; ``None``: the model's recommendation.
        clean: drop points that lie in front of another view's surface.
        mask_sky: drop sky pixels.
    """

    conf_threshold: float | None = None
    clean: bool = True
    mask_sky: bool = False


@dataclass
class ExportSpec:
    """What is written.

    Attributes:
        output: the output folder (``None``: nothing is written).
        formats: any of :data:`pointmap.export.FORMATS` and ``"colmap-db"``.
        overwrite: replace the results of an earlier run there (only files pointmap wrote).
        mesh: GLB as a mesh instead of a point cloud.
        max_points: most points of the PLY and GLB clouds (``None``: every point).
        cam_size: size of the GLB's camera frustums (``None``: automatic).
    """

    output: str | None = None
    formats: tuple[str, ...] = DEFAULT_FORMATS
    overwrite: bool = False
    mesh: bool = False
    max_points: int | None = 2_000_000
    cam_size: float | None = None


@dataclass
class Request:
    """One reconstruction, end to end (:func:`pointmap.pipeline.run_request`).

    Attributes:
        inputs, model, store, align, priors, post, export: see each class.
        graph: scene graph (``auto``, ``complete``, ``swin-K``, ``logwin-K``, ``oneref-K``,
            ``retrieval-K``, ``retrieval-K+swin-M``; :mod:`pointmap.pairs`).
        distributed: split pair inference over the ``torchrun`` ranks (rank 0 aligns and writes).
        progress: show progress bars.
    """

    inputs: Inputs = field(default_factory=Inputs)
    model: ModelSpec = field(default_factory=ModelSpec)
    graph: str = "auto"
    store: StorePolicy = field(default_factory=StorePolicy)
    align: Alignment = field(default_factory=Alignment)
    priors: Priors = field(default_factory=Priors)
    post: PostProcess = field(default_factory=PostProcess)
    export: ExportSpec = field(default_factory=ExportSpec)
    distributed: bool = False
    progress: bool = False

    def check(self) -> None:
        """Refuse what is knowable before any work (one line naming the value or option).

        Raises:
            InputError: a confidence threshold between 0 and 1 (or negative), options that do not
                apply to the alignment method, or an empty input list.
        """
        if not self.inputs.paths:
            raise InputError("no inputs: name image files, folders or a video")
        if self.post.conf_threshold is not None:
            check_conf_threshold(self.post.conf_threshold)
        inapplicable = self.inapplicable_options()
        if inapplicable:
            fields_, options = zip(*inapplicable)
            err = InputError(f"{', '.join(fields_)} do{'es' if len(fields_) == 1 else ''} not apply to "
                             f"align method {self.align.method!r}; leave {'it' if len(fields_) == 1 else 'them'} "
                             "at the default")
            err.cli_message = (f"{', '.join(options)} do{'es' if len(options) == 1 else ''} not apply to "
                               f"--align {self.align.method}; drop {'it' if len(options) == 1 else 'them'}")
            raise err
        if self.store.full_pairs and self.store.mode == "off":
            err = InputError("StorePolicy.full_pairs needs a store: set StorePolicy.mode to 'on' or 'auto'")
            err.cli_message = "--store-full needs a predictions store: drop --store off"
            raise err
        if "colmap-db" in self.export.formats and self.export.output is None:
            raise InputError("the colmap-db export needs an output folder (ExportSpec.output)")

    def inapplicable_options(self) -> list[tuple[str, str]]:
        """``(field, command-line option)`` of the settings the chosen method does not use."""
        if self.align.method == "sparse" and self.align.dense is not None:
            from ..align import AlignConfig

            default = AlignConfig()
            return [(f"AlignConfig.{f.name}", DENSE_OPTIONS.get(f.name, f"AlignConfig.{f.name}"))
                    for f in fields(default) if f.name not in SPARSE_USES
                    and getattr(self.align.dense, f.name) != getattr(default, f.name)]
        if self.align.method == "dense" and self.align.sparse is not None:
            from ..align import SparseConfig

            default = SparseConfig()
            return [(f"SparseConfig.{f.name}", f"SparseConfig.{f.name}") for f in fields(default)
                    if getattr(self.align.sparse, f.name) != getattr(default, f.name)]
        return []


SPARSE_USES = ("conf_threshold", "conf_trf", "shared_focal")
"""The :class:`~pointmap.align.AlignConfig` fields sparse alignment uses."""

DENSE_OPTIONS = {"niter": "--iterations", "solver": "--solver"}
"""Command-line options that set :class:`~pointmap.align.AlignConfig` fields."""


def check_conf_threshold(value: float) -> float:
    """``value`` when it is a usable raw-confidence threshold: above 1, or 0 (every point).

    Raises:
        InputError: not finite, negative, or in ``(0, 1]`` (raw confidence is always above 1, so
            such a threshold would silently keep every point).
    """
    if not math.isfinite(value) or value < 0 or 0 < value <= 1:
        raise InputError(f"confidence threshold {value:g}: raw confidence (1 + exp(x)) is always above 1; "
                         "use a value above 1 (3 is the released models' usual), or 0 to keep every point")
    return value
