"""The refusals a request can meet before any work: options, inputs, output folder, extras.

Imports no torch (unless ``colmap-db`` is asked for: the pycolmap check), so that the command
line refuses at once, before the network's code is even imported.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, OutputExistsError, PointmapError
from ..io_utils import OutputDir, foreign_files
from .request import Request

__all__ = ["FIXED_OUTPUTS", "STORE_DIRNAME", "check_inputs_exist", "check_output", "preflight"]

STORE_DIRNAME = ".pointmap-store"
""":data:`pointmap.store.STORE_DIRNAME` (a test keeps them equal; this copy keeps the checks
free of torch)."""

FIXED_OUTPUTS = {
    "glb": ("scene.glb",), "ply": ("points.ply",), "colmap": ("colmap/sparse/0", "colmap/text"),
    "colmap-db": ("colmap/database.db", "colmap/init"), "transforms": ("transforms.json",),
    "depth": ("depth/depth.json",), "cameras": ("cameras.json",),
}
"""Per export format (:func:`pointmap.export.export_scene`), the files and folders it writes
whatever the images are called: a file there that pointmap did not write is refused before any
work (``images/`` and the per-image depth files are checked when the results move into place)."""


def check_inputs_exist(paths: list[str]) -> None:
    """Refuse, before any work, an input path that does not exist (naming it)."""
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"image, folder or video not found: {p}")


def preflight(request: Request, rank: int = 0) -> OutputDir | None:
    """Check ``request`` before the model is loaded; the checked output folder (rank 0 of a run
    that exports), else ``None``.

    Raises:
        PointmapError: the first problem found, named (options that do not apply, a confidence
            threshold that means nothing, a missing input, an output folder that is an input or
            holds files pointmap did not write under the names it writes, pycolmap missing for
            ``colmap-db``).
    """
    request.check()
    out = check_output(request) if rank == 0 else None
    check_inputs_exist(request.inputs.paths)
    if "colmap-db" in request.export.formats:  # the export needs pycolmap
        from ..export.colmap_database import require_pycolmap

        try:
            require_pycolmap("the colmap-db export")
        except PointmapError as exc:
            exc.cli_message = str(exc).replace("the colmap-db export", "--export colmap-db", 1)
            raise
    return out


def check_output(request: Request) -> OutputDir | None:
    """The output folder, checked: never an input nor inside one, and (with ``overwrite``) no file
    pointmap did not write under the names this export writes. A predictions store in it (an
    interrupted run) is kept and resumed."""
    spec = request.export
    if spec.output is None:
        return None
    inputs = [*request.inputs.paths, *(p for p in (request.priors.masks, request.priors.cameras) if p)]
    out = OutputDir(spec.output, overwrite=spec.overwrite, option="--overwrite", inputs=inputs,
                    keep=(STORE_DIRNAME,))
    foreign = foreign_files(Path(spec.output), [e for f in spec.formats for e in FIXED_OUTPUTS.get(f, ())])
    if foreign:
        raise OutputExistsError(
            f"output folder {spec.output} already holds {foreign[0]}"
            + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else "")
            + ", which pointmap did not write; move it away or choose another output folder")
    return out
