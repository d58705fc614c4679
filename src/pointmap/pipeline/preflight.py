"""The refusals a request can meet before any work: options, inputs, output folder, extras, device."""

from __future__ import annotations

from pathlib import Path

from ..errors import OutputExistsError, PointmapError
from ..io_utils import OutputDir, foreign_files
from ..store import STORE_DIRNAME
from .inputs import check_inputs_exist
from .request import Request

__all__ = ["check_output", "preflight"]


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
    check_inputs_exist(request.inputs)
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
    from ..export import FIXED_OUTPUTS

    foreign = foreign_files(Path(spec.output), [e for f in spec.formats for e in FIXED_OUTPUTS.get(f, ())])
    if foreign:
        raise OutputExistsError(
            f"output folder {spec.output} already holds {foreign[0]}"
            + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else "")
            + ", which pointmap did not write; move it away or choose another output folder")
    return out
