"""A synthetic capture on disk and a stand-in for the network that predicts its pairs exactly as
:func:`~pointmap.testing.synthetic_pairs.iter_synthetic_predictions` fabricates them, so that the
whole pipeline (store, scene graphs, alignment, exports) runs on scenes with exact ground truth.

The images are PNG files ``img_<k>.png`` (``k`` = the ground-truth camera); the stand-in maps
each loaded image back to its camera by that name, whatever order the pipeline loads them in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..predictions import PairPredictions
from .synthetic_pairs import SyntheticScene, iter_synthetic_predictions, synthetic_image

__all__ = ["SyntheticNetwork", "write_capture"]


def write_capture(gt: SyntheticScene, folder: str | Path, ids: Sequence[int]) -> list[Path]:
    """Write the images of cameras ``ids`` as ``folder/img_<k>.png``; their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in ids:
        rgb = (synthetic_image(gt, k).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"img_{k:03d}.png")
        out.append(folder / f"img_{k:03d}.png")
    return out


class SyntheticNetwork:
    """Called like :func:`pointmap.inference.infer_pairs`: fabricates the predictions of the pairs
    a store does not hold yet (writing them there; each batch is also given to ``reduce``, and
    nothing is kept when not ``keep``) and counts them in :attr:`ran`.

    Attributes:
        gt: the ground truth the images were written from.
        ran: every ordered pair fabricated, as ground-truth camera indices.
    """

    def __init__(self, gt: SyntheticScene, seed: int = 0) -> None:
        self.gt, self.seed, self.ran = gt, seed, []

    def camera(self, image: Any) -> int:
        """The ground-truth camera of a loaded image (from its file name ``img_<k>``)."""
        m = re.search(r"img_(\d+)", str(getattr(image, "meta", None) and image.meta.path))
        if m is None:
            raise ValueError(f"not an image of a synthetic capture: {image}")
        return int(m.group(1))

    def __call__(self, model: Any, images: Sequence[Any], pairs: Sequence[tuple[int, int]], *args: Any,
                 store: Any = None, reduce: Any = None, keep: bool = True, **kwargs: Any
                 ) -> PairPredictions | None:
        pairs = [(int(i), int(j)) for i, j in pairs]
        done = store.done() if store is not None else set()
        todo = [p for p in pairs if p not in done]
        cams = {k: self.camera(images[k]) for p in todo for k in p}
        fabricated: dict[tuple[int, int], tuple] = {}
        gt_pairs = [(cams[i], cams[j]) for i, j in todo]
        self.ran += gt_pairs
        seed = self.seed + len(self.ran)
        for a, (chunk, arrays) in zip(range(0, len(todo), 16), iter_synthetic_predictions(self.gt, gt_pairs, seed=seed)):
            mine = todo[a : a + len(chunk)]
            if reduce is not None:
                reduce(mine, {n: arrays[n].float() for n in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")})
            if not keep:
                continue
            if store is not None:
                store.write(mine, arrays)
            else:
                for b, p in enumerate(mine):
                    fabricated[p] = tuple(arrays[n][b] for n in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2"))
        if not keep:
            return None
        if store is not None:
            return store.predictions(pairs, len(images))
        cols = list(zip(*(fabricated[p] for p in pairs)))
        return PairPredictions(pairs, *map(list, cols), n_images=len(images))

