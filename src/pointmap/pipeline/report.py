"""What a finished run says: the summary line, its warnings and the list of written files."""

from __future__ import annotations

from ..scene import LOW_IMAGE_KEPT_FRACTION, LOW_KEPT_FRACTION
from .core import ReconstructionResult

__all__ = ["run_report"]

_ALIGNERS = {"dense": "dense global alignment", "sparse": "sparse alignment from pixel matches",
             "two-view": "two-view closed form",
             "reduced": "dense global alignment from the streamed reductions"}


def run_report(res: ReconstructionResult, total_s: float) -> tuple[list[str], list[str]]:
    """``(lines, warnings)`` about ``res``: placed images, pairs, kept points, the aligner that
    ran, stage times and written files; warnings for images or scenes that keep few points."""
    scene, t = res.scene, res.conf_threshold
    sparse = scene.sparse_images()
    counts = scene.kept_counts()
    warnings = []
    if sparse:
        shown = ", ".join(f"{scene.names[k]} ({counts[k]} points)" for k in sparse[:10])
        warnings.append(f"{len(sparse)} image(s) keep fewer than {100 * LOW_IMAGE_KEPT_FRACTION:g} % of their "
                        f"points above the confidence threshold {t:g}: {shown}"
                        f"{', ...' if len(sparse) > 10 else ''}; they add little or nothing to the exports "
                        "(a lower --conf-threshold keeps more)")
    confs = [c[m].mean().item() for c, m in zip(scene.confidence, scene.masks) if m.any()]
    kept, total = sum(int(m.sum()) for m in scene.masks), sum(m.numel() for m in scene.masks)
    frac = kept / total if total else 0.0
    few = f" ({len(sparse)} keeping < {100 * LOW_IMAGE_KEPT_FRACTION:g} % of their points)" if sparse else ""
    lines = [f"placed {int(scene.placed.sum())}/{len(scene)} images{few}; {len(res.pairs)} pairs; kept {kept} "
             f"of {total} points ({100 * frac:.1f} %, raw confidence > {t:g}); mean confidence of kept points "
             f"{sum(confs) / max(len(confs), 1):.2f}; aligned by {_ALIGNERS.get(res.method, res.method)}"]
    if frac < LOW_KEPT_FRACTION:
        warnings.append(f"only {100 * frac:.1f} % of the points pass the confidence threshold {t:g}, so the "
                        "exported cloud is sparse; images unlike the model's training data get low "
                        "confidences. A lower --conf-threshold (raw confidence, > 1; 0 keeps every point) "
                        "keeps more.")
    lines.append(f"time: load {res.timings.get('load', 0.0):.1f}s, " + res.stages.summary()
                 + f", total {total_s:.1f}s")
    lines += [f"  {k}: {p}" for k, p in res.paths.items()]
    return lines, warnings
