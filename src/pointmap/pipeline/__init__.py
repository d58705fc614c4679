"""A reconstruction request and its runner: the one pipeline behind the command line, the Python
API and the web app.

::

    from pointmap.pipeline import Alignment, ExportSpec, Inputs, Request, run_request

    req = Request(inputs=Inputs(["photos/"]), align=Alignment(method="sparse"),
                  export=ExportSpec(output="out", formats=("glb", "colmap-db")))
    result = run_request(req)          # result.scene, result.paths, result.matches, ...
"""

from __future__ import annotations

import importlib
from typing import Any

from .request import Alignment, ExportSpec, Inputs, ModelSpec, PostProcess, Priors, Request, StorePolicy

__all__ = ["Alignment", "ExportSpec", "Inputs", "ModelSpec", "PostProcess", "Priors", "ReconstructionResult",
           "Request", "StorePolicy", "finish", "run_request"]

_LAZY = {"run_request": ".runner", "finish": ".finishing", "ReconstructionResult": ".core"}


def __getattr__(name: str) -> Any:
    """The runner's names are imported on first use (building a request imports no torch)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
