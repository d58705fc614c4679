"""pointmap: unposed photos to 3D with DUSt3R.

The public API, importable from the package itself::

    import pointmap

    result = pointmap.reconstruct("photos/")            # files or folders -> ReconstructionResult
    scene = result.scene                                 # pointmap.Scene

    # or step by step
    model = pointmap.load_model("default")
    images = pointmap.load_images("photos/", size=224)
    preds = pointmap.infer_pairs(model, images, pointmap.make_pairs(len(images), "complete"))
    scene = pointmap.global_align(preds, [im.rgb for im in images])

    # new photos placed in an existing reconstruction's output folder (the map fixed)
    poses, _ = pointmap.localize("out/", ["new.jpg"])   # [pointmap.localization.QueryPose]

    # more photos added to a reconstruction made with store="on", store_full=True (only pairs with a new photo run)
    result = pointmap.extend("out/", ["more/"], freeze=True)

``import pointmap`` itself is cheap: each name is imported from its module on first use (so the
command line can answer ``--help`` without loading torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module (relative to this package) that provides it
_EXPORTS: dict[str, str] = {
    "load_model": ".model",
    "load_images": ".images",
    "make_pairs": ".pairs",
    "infer_pairs": ".inference",
    "global_align": ".align",
    "reconstruct": ".api",
    "reconstruct_images": ".api",
    "ReconstructionResult": ".api",
    "localize": ".localization",
    "extend": ".pipeline.extend",
    "PairPredictions": ".predictions",
    "Scene": ".scene",
    "AlignConfig": ".align",
    "PointmapError": ".errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # static checkers and IDEs see the real objects
    from .align import AlignConfig, global_align
    from .api import ReconstructionResult, reconstruct, reconstruct_images
    from .errors import PointmapError
    from .images import load_images
    from .inference import infer_pairs
    from .localization import localize
    from .pipeline.extend import extend
    from .model import load_model
    from .pairs import make_pairs
    from .predictions import PairPredictions
    from .scene import Scene


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access (PEP 562) and cache it here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pointmap' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
