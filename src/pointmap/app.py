"""A local web app (Gradio): photos or a video in, an interactive 3D scene and its exports out.

Run it with ``pointmap app`` or::

    from pointmap.app import launch
    launch()                      # http://127.0.0.1:7860 by default

Safety defaults: the server binds ``127.0.0.1``; uploads are limited in number and size and
checked by *content* (Pillow must decode an image, OpenCV a video), never by name; uploaded files
are copied to fresh names in a per-request temporary folder and their names are never used as
paths; results live in a per-request folder under the app's own temporary root (old ones are
removed); one reconstruction runs at a time (queue concurrency 1).

Photos can be added to the reconstruction the page shows (**Add photos**): the app builds the
request and :func:`pointmap.pipeline.extend.run_extend` (``pointmap extend``) does the work, in
the first render's folder, which keeps the run's predictions store for it.

The module is long because it holds the page layout and the event handlers that share its
per-request state; the reconstruction itself is :func:`pointmap.api.reconstruct`'s.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
from PIL import Image

from .errors import PointmapError
from .export import zip_model
from .inference import resolve_device
from .model import DUSt3R, load_model
from .pairs import make_pairs
from .pipeline import (Alignment, ExportSpec, Inputs, ModelSpec, PostProcess, Priors, Request, StorePolicy,
                       finish, run_request)
from .pipeline.extend import run_extend
from .scene import LOW_IMAGE_KEPT_FRACTION, LOW_KEPT_FRACTION, Scene
from .video import VIDEO_EXTENSIONS

__all__ = [
    "AppLimits", "UploadError", "app_extend_request", "app_request", "build_app", "check_uploads", "estimate",
    "estimate_uploads",
    "launch", "scene_graph",
]

EXAMPLE_DIR = Path(__file__).parent / "examples" / "room"
_KEEP_RUNS = 4  # per-request output folders kept under the app's temporary root
_EXPORT_FORMATS = ("glb", "ply", "colmap", "transforms", "depth", "cameras")  # cameras.json: for adding photos
ALIGN_METHODS = ("dense", "sparse", "auto")


class UploadError(PointmapError):
    """An upload was refused (wrong content, too large, too many files)."""


@dataclass(frozen=True)
class AppLimits:
    """Upload limits of the app.

    Attributes:
        max_images: most images per reconstruction (also the most video frames kept).
        max_upload_mb: largest accepted file, in megabytes (10^6 bytes).
    """

    max_images: int = 32
    max_upload_mb: float = 50.0


@dataclass
class _Upload:
    kind: str  # "image" or "video"
    path: Path  # fresh name inside the request's staging folder
    label: str  # display only, never used as a path


_IMAGE_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp",
              "GIF": ".gif", "MPO": ".jpg", "HEIF": ".heic"}


@dataclass
class _Stored:
    """What a finished run keeps in ``gr.State`` so display options re-render without recomputing."""

    scene: Scene  # as aligned (user masks kept at every threshold), before clean-up and sky masking
    run_dir: Path
    image_paths: list[Path | None] | None = None  # the photos' files, else the scene's own
    labels: list[str] = field(default_factory=list)
    renders: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    request: Request | None = None  # the run's request (its export settings are re-used)
    matches: Any = None  # the pairs' pixel matches when computed (for the colmap-db export)
    model_dir: Path | None = None  # the folder photos are added to (its store, cameras, depth maps)
    added: int = 0  # uploads of photos added so far


_ALIGNED_BY = {"dense": "dense alignment", "sparse": "sparse alignment", "two-view": "two-view closed form",
               "reduced": "dense alignment from streamed reductions"}


def scene_graph(kind: str, k: int) -> str:
    """The scene-graph string for ``kind`` (``complete``, ``swin``, ``oneref``) and its parameter
    ``k`` (window size for ``swin``, reference image index for ``oneref``; ignored for ``complete``)."""
    if kind == "complete":
        return "complete"
    if kind in ("swin", "oneref"):
        return f"{kind}-{int(k)}"
    raise PointmapError(f"unknown scene graph {kind!r}; choose complete, swin or oneref")


def _display_name(path: str | os.PathLike, k: int) -> str:
    name = os.path.basename(str(path))
    return "".join(c for c in name if c.isprintable())[:80] or f"file {k + 1}"


def check_uploads(paths: Sequence[str | os.PathLike], staging: str | os.PathLike,
                  limits: AppLimits, prefix: str = "image_") -> list[_Upload]:
    """Validate uploaded files by size and content and copy them to fresh names in ``staging``
    (``<prefix><k>.<ext>``).

    Accepts several images, or exactly one video. Images must be decodable by Pillow, a video by
    OpenCV (at least one frame).

    Raises:
        UploadError: no files, too many, one too large, one that is neither image nor video, or a
            video mixed with other files. The message names the file (its upload name) at fault.
    """
    if not paths:
        raise UploadError("no files uploaded: add images (or one video) first")
    if len(paths) > limits.max_images:
        raise UploadError(f"{len(paths)} files uploaded; at most {limits.max_images} images are allowed")
    staging = Path(staging)
    out: list[_Upload] = []
    for k, src in enumerate(paths):
        label = _display_name(src, k)
        size = os.path.getsize(src)
        if size > limits.max_upload_mb * 1e6:
            raise UploadError(f"'{label}' is {size / 1e6:.1f} MB; the limit is {limits.max_upload_mb:g} MB per file")
        kind, fmt = _sniff(src)
        if kind is None:
            raise UploadError(f"'{label}' is neither an image nor a video that can be decoded; it was refused")
        ext = _IMAGE_EXT.get(fmt or "", ".img") if kind == "image" else _video_ext(src)
        dst = staging / f"{prefix}{k:03d}{ext}"
        shutil.copyfile(src, dst)
        out.append(_Upload(kind, dst, label))
    if any(u.kind == "video" for u in out) and len(out) > 1:
        raise UploadError("upload either several images or one video, not a mix")
    return out


def _video_ext(path: str | os.PathLike) -> str:
    """A video extension for the staged copy (the upload's own when it is one, else ``.mp4``;
    OpenCV reads by content, the extension only tells the loader it is a video)."""
    ext = Path(path).suffix.lower()
    return ext if ext in VIDEO_EXTENSIONS else ".mp4"


def stage_known_files(paths: Sequence[str | os.PathLike], folder: str | os.PathLike,
                      limits: AppLimits, what: str) -> Path | None:
    """Copy uploaded camera files or masks into ``folder`` under their upload names (which is how
    they are matched to the photos); ``None`` when nothing was uploaded.

    Raises:
        UploadError: too many files, one too large, or a name that cannot be a plain file name.
    """
    if not paths:
        return None
    if len(paths) > limits.max_images + 3:
        raise UploadError(f"{len(paths)} {what} files uploaded; at most {limits.max_images + 3} are allowed")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, src in enumerate(paths):
        name = _display_name(src, k)
        size = os.path.getsize(src)
        if size > limits.max_upload_mb * 1e6:
            raise UploadError(f"'{name}' is {size / 1e6:.1f} MB; the limit is {limits.max_upload_mb:g} MB per file")
        if name.startswith(".") or name != os.path.basename(name):
            raise UploadError(f"'{name}' is not a plain file name; rename the {what} file")
        shutil.copyfile(src, folder / name)
    return folder


def _sniff(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """``("image", pillow_format)`` when Pillow decodes the file, ``("video", None)`` when OpenCV
    reads a frame, else ``(None, None)``.

    Raises:
        UploadError: an image too large to decode safely (Pillow's decompression-bomb guard).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt = im.format
                im.load()
        return "image", fmt
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(f"'{_display_name(path, 0)}' has too many pixels to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError):  # not an image Pillow can read
        pass
    cap = cv2.VideoCapture(str(path))
    try:
        ok = cap.isOpened() and cap.read()[0]
    finally:
        cap.release()
    return ("video", None) if ok else (None, None)


def _load(uploads: list[_Upload], size: int, fps: float, limits: AppLimits) -> list:
    """The uploads' images as a run loads them (:func:`pointmap.pipeline.inputs.load_inputs`; a
    video keeps at most ``limits.max_images`` frames)."""
    from .pipeline.inputs import load_inputs

    video = uploads[0].kind == "video"
    return load_inputs(Inputs([str(u.path) for u in uploads], fps=float(fps),
                              **({"max_frames": limits.max_images} if video else {})), int(size))


def estimate(n_images: int, graph: str) -> str:
    """A one-line estimate of the work: number of images and of network pairs."""
    if n_images == 0:
        return "Upload images (or one video), or try the example."
    if n_images == 1:
        return "1 image: monocular reconstruction (2 network passes)."
    try:
        pairs = make_pairs(n_images, graph, symmetrize=True)
    except PointmapError as exc:
        return f"{n_images} images: {exc}"
    return f"{n_images} images, scene graph `{graph}`: **{len(pairs)} pairs** to run through the network."


def _video_frame_count(path: str | os.PathLike, fps: float, limit: int) -> int:
    """Frames :func:`read_video_frames` would keep from ``path`` at ``fps`` (from the header)."""
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        native = cap.get(cv2.CAP_PROP_FPS) or 30.0
    finally:
        cap.release()
    step = max(1, round(native / fps))
    return min(limit, -(-total // step)) if total > 0 else 0


def estimate_uploads(paths: Sequence[str | os.PathLike], graph: str, fps: float, limits: AppLimits) -> str:
    """:func:`estimate` for uploaded files (a single video counts its sampled frames)."""
    try:
        single_video = len(paths) == 1 and _sniff(paths[0])[0] == "video"
    except UploadError as exc:
        return str(exc)
    if single_video:
        n = _video_frame_count(paths[0], fps, limits.max_images)
        return f"Video, about {n} frames at {fps:g} fps. " + estimate(n, graph)
    return estimate(len(paths), graph)


def app_request(paths: Sequence[str | os.PathLike], labels: Sequence[str], output: str | os.PathLike, *,
                weights: str = "default", device: str | None = None, video: bool = False, fps: float = 1.0,
                max_frames: int = 32, size: int | str = 512, graph_kind: str = "complete", k: float = 3,
                align_method: str = "dense", iters: float = 0, cameras: str | os.PathLike | None = None,
                masks: str | os.PathLike | None = None, shared_focal: bool = False, conf: float = 3.0,
                mesh: bool = False, sky: bool = False, clean: bool = True, cam_size: float = 0.0,
                colmap_db: bool = False, store: str | os.PathLike | None = None) -> Request:
    """The :class:`~pointmap.pipeline.Request` the app's inputs ask for (what the command line's
    ``pointmap reconstruct`` builds from the same choices).

    Args:
        paths: the uploads, staged under fresh names; ``labels``: their upload names (which known
            cameras and masks are matched by; ``None`` in the request when they are the files'
            own names).
        output: the folder of the first render. ``video``: the upload is one video, sampled at
            ``fps`` (at most ``max_frames`` frames). ``iters``: 0 is the solver's default.
        store: the folder that keeps pair predictions (resume); ``None``: the output folder
            keeps them (so that photos can be added to it, :func:`app_extend_request`).
        The other arguments are the page's options.
    """
    names = [str(x) for x in labels]
    own = [Path(p).name for p in paths]
    dense = None
    if iters:
        from .align import AlignConfig

        dense = AlignConfig(niter=int(iters))
    return Request(
        inputs=Inputs([str(p) for p in paths], fps=float(fps), **({"max_frames": int(max_frames)} if video else {}),
                      names=None if names == own or video else names),
        model=ModelSpec(weights=weights, device=device, size=int(size)),
        graph=scene_graph(graph_kind, int(k or 0)),
        # the run's own store (the default: streamed reductions) lets photos be added to it (pointmap extend)
        store=StorePolicy("on", str(store), replace=True) if store is not None else StorePolicy("on"),
        align=Alignment(method=align_method, dense=dense),  # type: ignore[arg-type]
        priors=Priors(None if cameras is None else str(cameras), None if masks is None else str(masks),
                      bool(shared_focal)),
        # the slider's 1 keeps every point (raw confidence is always above 1): 0 in the request
        post=PostProcess(conf_threshold=float(conf) if float(conf) > 1 else 0.0, clean=bool(clean), mask_sky=bool(sky)),
        export=ExportSpec(output=str(output), formats=(*_EXPORT_FORMATS, *(("colmap-db",) if colmap_db else ())),
                          mesh=bool(mesh), max_points=None, cam_size=float(cam_size) if cam_size and cam_size > 0 else None),
        progress=True,
    )


def app_extend_request(paths: Sequence[str | os.PathLike], folder: str | os.PathLike, base: Request, *,
                       conf: float = 3.0, mesh: bool = False, sky: bool = False, clean: bool = True,
                       cam_size: float = 0.0) -> Request:
    """The request that adds the photos ``paths`` to the reconstruction in ``folder`` (made by
    ``base``, :func:`app_request` without a shared store), for
    :func:`pointmap.pipeline.extend.run_extend`: ``base``'s model, size, scene graph (of the new
    photos among themselves), alignment and export formats; the page's display options."""
    return Request(
        inputs=Inputs([str(p) for p in paths]), model=base.model, graph=base.graph,
        store=StorePolicy("on"), align=base.align, priors=Priors(shared_focal=base.priors.shared_focal),
        post=PostProcess(conf_threshold=float(conf) if float(conf) > 1 else 0.0, clean=bool(clean),
                         mask_sky=bool(sky)),
        export=dataclasses.replace(base.export, output=str(folder), overwrite=True, mesh=bool(mesh),
                                   cam_size=float(cam_size) if cam_size and cam_size > 0 else None),
        progress=True,
    )


def _colmap_and_depth_zips(paths: dict[str, Path], render: Path) -> dict[str, Path]:
    out = {}
    if "colmap" in paths:
        out["colmap_zip"] = zip_model(render / "colmap", render / "colmap.zip")
    if "depth" in paths:
        out["depth_zip"] = zip_model(paths["depth"], render / "depth.zip")
    return out


def _render(stored: _Stored, conf: float, mesh: bool, sky: bool, clean: bool, cam_size: float
            ) -> tuple[str, list[tuple[str, str]], list[str], str]:
    """Apply display options to the stored scene and export (:func:`pointmap.pipeline.finish`);
    returns (glb, gallery, files, summary)."""
    stored.renders += 1
    render = stored.run_dir / f"render_{stored.renders:03d}"
    base = stored.request.export if stored.request is not None else ExportSpec(formats=_EXPORT_FORMATS,
                                                                               max_points=None)
    post = PostProcess(conf_threshold=float(conf) if float(conf) > 1 else 0.0, clean=bool(clean), mask_sky=bool(sky))
    spec = dataclasses.replace(base, output=str(render), mesh=bool(mesh),
                               cam_size=float(cam_size) if cam_size and cam_size > 0 else None)
    scene, paths = finish(stored.scene.with_threshold(float(conf)), post, spec, matches=stored.matches,
                          image_paths=stored.image_paths)
    return _show(stored, scene, paths, render, float(conf))


def _show(stored: _Stored, scene: Scene, paths: dict[str, Path], render: Path, conf: float
          ) -> tuple[str, list[tuple[str, str]], list[str], str]:
    """The page's view of an exported render: (glb, gallery, files, summary)."""
    paths = {**paths, **_colmap_and_depth_zips(paths, render)}
    for old in stored.run_dir.glob("render_*"):  # earlier renders (not the folder photos are added to)
        if old not in (render, stored.model_dir):
            shutil.rmtree(old, ignore_errors=True)
    sidecar = json.loads((render / "depth" / "depth.json").read_text())
    gallery = []
    for k, entry in enumerate(sidecar["images"].values()):
        label = stored.labels[k] if k < len(stored.labels) else entry["name"]
        gallery.append((str(render / "depth" / entry["depth_preview"]), f"{label}: depth"))
        gallery.append((str(render / "depth" / entry["conf_preview"]), f"{label}: confidence"))
    files = [str(paths[k]) for k in ("glb", "ply", "colmap_zip", "transforms", "depth_zip") if k in paths]
    kept = int(sum(int(m.sum()) for m in scene.masks))
    frac = scene.kept_fraction()
    summary = (f"{int(scene.placed.sum())}/{len(scene)} images placed; {kept:,} points "
               f"({100 * frac:.1f} %) above the confidence threshold {conf:g}")
    sparse = scene.sparse_images()
    if sparse:
        names = [stored.labels[k] if k < len(stored.labels) else scene.names[k] for k in sparse]
        summary += (f"; {len(sparse)} image{'s' if len(sparse) != 1 else ''} keep"
                    f"{'s' if len(sparse) == 1 else ''} fewer than {100 * LOW_IMAGE_KEPT_FRACTION:g} % "
                    f"of {'its' if len(sparse) == 1 else 'their'} points ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
    if frac < LOW_KEPT_FRACTION:
        summary += (". Few points pass it (photos unlike the model's training data get low "
                    "confidences): lower the threshold under Display options to keep more")
    return str(paths["glb"]), gallery, files, summary


class _Runs:
    """The app's temporary root: one fresh folder per request, the oldest removed; Gradio's own
    upload cache lives in it too (unless ``GRADIO_TEMP_DIR`` is set), so that nothing of the app
    is left in the temporary folder when the process exits."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pointmap-app-"))
        atexit.register(shutil.rmtree, self.root, True)
        if not os.environ.get("GRADIO_TEMP_DIR"):
            os.environ["GRADIO_TEMP_DIR"] = str(self.root / "gradio")
            atexit.register(os.environ.pop, "GRADIO_TEMP_DIR", None)

    def new(self) -> Path:
        runs = sorted(self.root.glob("run_*"), key=lambda p: p.stat().st_mtime)
        for old in runs[: max(0, len(runs) - (_KEEP_RUNS - 1))]:
            shutil.rmtree(old, ignore_errors=True)
        d = self.root / f"run_{time.time_ns()}_{uuid.uuid4().hex[:8]}"
        d.mkdir()
        return d


def build_app(model: str | os.PathLike | DUSt3R = "default", device: str | None = None,
              max_images: int = 32, max_upload_mb: float = 50) -> Any:
    """Build the Gradio app (a ``gr.Blocks``); see :func:`launch` to serve it.

    Args:
        model: a loaded network, a checkpoint path / hub id, or ``"default"`` (the bundled model).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        max_images: most images (or video frames) per reconstruction.
        max_upload_mb: largest accepted upload, per file, in megabytes.
    """
    import gradio as gr

    dev = resolve_device(device)
    net = model if isinstance(model, DUSt3R) else load_model(model, device=dev)
    limits = AppLimits(max_images=int(max_images), max_upload_mb=float(max_upload_mb))
    runs = _Runs()
    native = net.config.native_size
    default_conf = float(net.recommended_conf_threshold)
    gr.set_static_paths(paths=[runs.root])
    examples = [str(p) for p in sorted(EXAMPLE_DIR.glob("*.jpg"))]

    def paths_of(files: Any) -> list[str]:
        if not files:
            return []
        items = files if isinstance(files, list) else [files]
        return [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in items]

    def on_inputs(files: Any, graph_kind: str, k: float, fps: float) -> str:
        return estimate_uploads(paths_of(files), scene_graph(graph_kind, int(k or 0)), float(fps), limits)

    def refuse(message: str) -> tuple:
        # the message appears in the status box; nothing else changes
        return (f"**Refused:** {message}", gr.skip(), gr.skip(), gr.skip(), gr.skip())

    def run(files: Any, fps: float, size: str, graph_kind: str, k: float, iters: float,
            camera_files: Any, mask_files: Any, shared_focal: bool,
            conf: float, mesh: bool, sky: bool, clean: bool, cam_size: float,
            align_method: str = "dense", resume: bool = False, colmap_db: bool = False,
            progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
        t0 = time.perf_counter()
        progress(0.0, desc="checking uploads")
        run_dir = runs.new()
        try:
            staging = run_dir / "inputs"  # fresh names; kept for the COLMAP / nerfstudio image folders
            staging.mkdir()
            uploads = check_uploads(paths_of(files), staging, limits)
            # known cameras / masks: matched to the photos by their upload names
            cam_dir = stage_known_files(paths_of(camera_files), run_dir / "cameras", limits, "camera")
            mask_dir = stage_known_files(paths_of(mask_files), run_dir / "masks", limits, "mask")
            video = uploads[0].kind == "video"
            request = app_request(
                [u.path for u in uploads], [u.label for u in uploads], run_dir / "render_001",
                weights=model if isinstance(model, str) else "given model", device=device, video=video,
                fps=fps, max_frames=limits.max_images, size=size, graph_kind=graph_kind, k=k,
                align_method=align_method, iters=iters, cameras=cam_dir, masks=mask_dir,
                shared_focal=shared_focal, conf=conf, mesh=mesh, sky=sky, clean=clean, cam_size=cam_size,
                colmap_db=colmap_db, store=runs.root / "store" if resume else None)
            progress(0.05, desc="loading, network inference, alignment, export")
            res = run_request(request, model=net)
        except PointmapError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            return refuse(str(exc))
        assert res is not None and res.aligned is not None
        n = len(res.images)
        labels = [f"frame {j}" for j in range(n)] if video else [u.label for u in uploads]
        stored = _Stored(res.aligned, run_dir, labels=labels, renders=1, request=request, matches=res.matches,
                         model_dir=None if resume or video else run_dir / "render_001")
        glb, gallery, files_out, summary = _show(stored, res.scene, res.paths, run_dir / "render_001", float(conf))
        timings = {"load": res.timings.get("load", 0.0), **{k: v.seconds for k, v in res.stages.stages.items()}}
        stored.info = {"pairs": len(res.pairs), "timings": timings}
        status = (f"**Done.** {n} image{'s' if n != 1 else ''}, {len(res.pairs)} pairs, "
                  f"{_ALIGNED_BY.get(res.method, res.method)}. {summary}.  \n"
                  + "Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
                  + f", total {time.perf_counter() - t0:.1f} s.")
        return status, glb, gallery, files_out, stored

    def add(stored: _Stored | None, new_files: Any, freeze: bool, conf: float, mesh: bool, sky: bool,
            clean: bool, cam_size: float, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
        t0 = time.perf_counter()
        if stored is None or stored.request is None or not stored.run_dir.is_dir():
            return refuse("reconstruct some photos first (Run), then add photos to them")
        if stored.model_dir is None:
            return refuse("photos can be added only to a reconstruction of photos (not of a video) run "
                          "without 'Keep pair predictions'")
        n_old = len(stored.labels)
        staging = stored.run_dir / f"added_{stored.added + 1:03d}"
        try:
            staging.mkdir()
            uploads = check_uploads(paths_of(new_files), staging, limits,
                                    prefix=f"added{stored.added + 1:03d}_")
            if any(u.kind == "video" for u in uploads):
                raise UploadError("add photos, not a video")
            if n_old + len(uploads) > limits.max_images:
                raise UploadError(f"{n_old} + {len(uploads)} images; at most {limits.max_images} are allowed")
            request = app_extend_request([u.path for u in uploads], stored.model_dir, stored.request, conf=conf,
                                         mesh=mesh, sky=sky, clean=clean, cam_size=cam_size)
            progress(0.05, desc=f"adding {len(uploads)} photos: network on their pairs, alignment, export")
            res, n_run = run_extend(request, freeze=bool(freeze), model=net)
        except PointmapError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            return refuse(str(exc))
        stored.added += 1
        stored.scene, stored.matches, stored.image_paths = res.aligned, None, None
        stored.labels = stored.labels[:n_old] + [u.label for u in uploads]
        glb, gallery, files_out, summary = _show(stored, res.scene, res.paths, stored.model_dir, float(conf))
        status = (f"**Added {len(uploads)} photo{'s' if len(uploads) != 1 else ''}** to {n_old} "
                  f"({n_run} new pairs{', earlier cameras kept fixed' if freeze else ''}). {summary}.  \n"
                  f"Time: total {time.perf_counter() - t0:.1f} s.")
        return status, glb, gallery, files_out, stored

    def rerender(stored: _Stored | None, conf: float, mesh: bool, sky: bool, clean: bool,
                 cam_size: float) -> tuple:
        if stored is None or not stored.run_dir.is_dir():
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        glb, gallery, files_out, summary = _render(stored, conf, mesh, sky, clean, cam_size)
        return f"**Updated view.** {summary}.", glb, gallery, files_out

    with gr.Blocks(title="pointmap", analytics_enabled=False) as demo:
        gr.Markdown("# pointmap\nUnposed photos to 3D: pointmaps, cameras, depth and a dense "
                    "point cloud. Upload a few overlapping photos (or one video) and press **Run**.")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label=f"Images or one video (at most {limits.max_images} files, "
                                      f"{limits.max_upload_mb:g} MB each)",
                                file_count="multiple", elem_id="uploads")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    example_btn = gr.Button("Try the example (room, 5 photos)", elem_id="example")
                estimate_md = gr.Markdown(estimate(0, "complete"), elem_id="estimate")
                with gr.Accordion("Reconstruction options", open=False):
                    size = gr.Radio(["224", "512"], value=str(native), label="Image size (pixels)")
                    fps = gr.Slider(0.2, 10, value=1.0, step=0.1, label="Video: frames per second kept")
                    graph_kind = gr.Radio(["complete", "swin", "oneref"], value="complete",
                                          label="Scene graph")
                    k = gr.Number(value=3, precision=0, minimum=0,
                                  label="K (swin: window size; oneref: reference image index)")
                    align_method = gr.Radio(list(ALIGN_METHODS), value="dense",
                                            label="Alignment: dense (every pixel), sparse (pixel matches; "
                                                  "for many images) or auto", elem_id="align")
                    iters = gr.Slider(0, 300, value=0, step=10,
                                      label="Dense alignment iterations (0 = solver default)")
                    resume = gr.Checkbox(False, label="Keep pair predictions: a rerun of the same photos "
                                                      "and settings resumes from them", elem_id="resume")
                    colmap_db = gr.Checkbox(False, label="Also write a COLMAP database of the pixel matches "
                                                         "(in the COLMAP zip; needs pycolmap)", elem_id="colmapdb")
                with gr.Accordion("Known cameras and masks (optional)", open=False):
                    camera_files = gr.File(
                        label="Known cameras: a pointmap cameras.json, a nerfstudio transforms.json, "
                              "or a COLMAP model (cameras + images, .bin or .txt); matched to the "
                              "photos by file name, kept fixed",
                        file_count="multiple", elem_id="cameras")
                    shared_focal = gr.Checkbox(False, label="One focal length for all images without a known one")
                    mask_files = gr.File(
                        label="Masks named like the photos (photo.jpg: photo.png or photo_mask.png; "
                              "white = keep): masked-out pixels are left out of the alignment and exports",
                        file_count="multiple", elem_id="masks")
                with gr.Accordion("Display options (no recomputation)", open=True):
                    conf = gr.Slider(1.0, 20.0, value=default_conf, step=0.1,
                                     label="Confidence threshold (raw confidence)")
                    mesh = gr.Checkbox(False, label="Mesh instead of point cloud")
                    sky = gr.Checkbox(False, label="Mask the sky")
                    clean = gr.Checkbox(True, label="Clean up (drop points in front of other views)")
                    cam_size = gr.Slider(0.0, 0.5, value=0.0, step=0.01,
                                         label="Camera size (0 = automatic)")
                with gr.Accordion("Add photos to this reconstruction", open=False):
                    add_files = gr.File(label="More photos of the same scene (only their pairs are run; the "
                                              "others are reused)", file_count="multiple", elem_id="add_uploads")
                    freeze = gr.Checkbox(False, label="Keep the earlier cameras fixed", elem_id="freeze")
                    add_btn = gr.Button("Add photos", elem_id="add")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="status")
                view = gr.Model3D(label="3D scene", elem_id="view", height=480)
                gallery = gr.Gallery(label="Depth and confidence (2nd-98th percentile, turbo)",
                                     columns=4, height=300, elem_id="maps")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                    elem_id="downloads")
        state = gr.State(None)

        run_inputs = [files, fps, size, graph_kind, k, iters, camera_files, mask_files, shared_focal,
                      conf, mesh, sky, clean, cam_size, align_method, resume, colmap_db]
        run_outputs = [status, view, gallery, downloads, state]
        for comp in (files, graph_kind, k, fps):
            comp.change(on_inputs, [files, graph_kind, k, fps], estimate_md, queue=False)
        run_btn.click(run, run_inputs, run_outputs)
        example_btn.click(lambda: examples, None, files, queue=False).then(run, run_inputs, run_outputs)
        add_btn.click(add, [state, add_files, freeze, conf, mesh, sky, clean, cam_size], run_outputs)
        display = [state, conf, mesh, sky, clean, cam_size]
        display_out = [status, view, gallery, downloads]
        for comp in (mesh, sky, clean):
            comp.change(rerender, display, display_out)
        for comp in (conf, cam_size):
            comp.release(rerender, display, display_out)
    demo.queue(default_concurrency_limit=1)
    demo.pointmap_root = runs.root  # type: ignore[attr-defined]
    return demo


def launch(host: str = "127.0.0.1", port: int | None = None, model: str | os.PathLike | DUSt3R = "default",
           device: str | None = None, max_images: int = 32, max_upload_mb: float = 50,
           share: bool = False, block: bool = True) -> Any:
    """Build and serve the app on ``host:port`` (default ``127.0.0.1``, first free port from 7860).

    ``share`` (``pointmap app --share``) opens a public Gradio link: off by default. With
    ``block=False`` the server runs in a background thread and the ``gr.Blocks`` is returned
    (``.close()`` stops it). Gradio's usage analytics are off.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(model=model, device=device, max_images=max_images, max_upload_mb=max_upload_mb)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
                allowed_paths=[str(demo.pointmap_root)], show_error=True,
                max_file_size=f"{max(float(max_upload_mb), 1e-3) * 4:g}mb")
    print(f"pointmap app: {demo.local_url}" + (f" and {demo.share_url}" if share and demo.share_url else
                                               " (for a public link, run `pointmap app --share`)"))
    if block:
        demo.block_thread()
    return demo
