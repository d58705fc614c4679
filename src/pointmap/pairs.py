"""Scene graphs: which ordered image pairs go through the network.

Graph strings follow the reference DUSt3R ``make_pairs`` and give the same pairs in the same order:

* ``complete``: every pair ``(i, j)`` with ``j < i``, ordered ``(1,0), (2,0), (2,1), (3,0), ...``;
* ``swin[-K][-noncyclic]``: each image with its ``K`` next neighbours (sliding window, default 3);
* ``logwin[-K][-noncyclic]``: each image with neighbours at offsets ``1, 2, 4, ..., 2**(K-1)`` on
  both sides (default 3);
* ``oneref[-K]``: image ``K`` (default 0) with every other image;
* ``retrieval-K``: each image with its ``K`` most similar images by a global descriptor
  (:func:`pointmap.retrieval.image_descriptors`, passed as ``descriptors``), plus, while the graph
  has several connected components, the most similar pair joining the smallest one to the rest;
  ``retrieval-K+swin-M`` / ``retrieval-K+logwin-M`` add a window graph (for ordered captures);
* ``auto`` (see :func:`auto_graph`): ``complete`` up to 20 images, ``logwin-5`` for video frames,
  ``retrieval-10`` for larger photo sets.

``swin``/``logwin`` wrap around the sequence (loop closure) unless ``-noncyclic`` is given; they
collect unordered pairs ``(min, max)`` in a Python ``set`` and emit them in its iteration order,
exactly as the reference builds it. Unlike the reference, a window that wraps onto the image itself
(``K >= n``) never yields a self pair ``(i, i)``.

With ``symmetrize`` (default) the reversed pairs follow the originals: ``[p..., reversed(p)...]``.
A ``prefilter`` ``seqK`` keeps pairs whose indices differ by at most ``K``; ``cycK`` does the same
with the cyclic distance.

All graphs need at least two images; for a single image, callers duplicate it and use ``[(0, 1),
(1, 0)]``, as the reference demo does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import GraphError

__all__ = [
    "GRAPH_FORMS",
    "auto_graph",
    "make_pairs",
    "needs_descriptors",
    "retrieval_pairs",
    "validate_pairs",
    "read_pairs_file",
    "connected_components",
]

#: Human-readable list of the accepted scene-graph strings, used in error messages.
GRAPH_FORMS = (
    "complete, swin, swin-K, swin-K-noncyclic, swin-noncyclic, logwin, logwin-K, "
    "logwin-K-noncyclic, logwin-noncyclic, oneref, oneref-K, retrieval-K, retrieval-K+swin-M, "
    "retrieval-K+logwin-M, auto (K a non-negative image index for oneref, a positive integer "
    "otherwise)"
)

_WINDOW_RE = re.compile(r"^(swin|logwin)(?:-(\d+))?(-noncyclic)?$")
_ONEREF_RE = re.compile(r"^oneref(?:-(\d+))?$")
_RETRIEVAL_RE = re.compile(r"^retrieval-(\d+)(?:\+((?:swin|logwin)(?:-\d+)?(?:-noncyclic)?))?$")
AUTO_COMPLETE_MAX = 20
"""``auto`` uses the complete graph up to this many images."""
_PREFILTER_RE = re.compile(r"^(seq|cyc)(\d+)$")
_DEFAULT_WINDOW = 3


def _graph_error(graph: object, why: str) -> GraphError:
    return GraphError(f"invalid scene graph {graph!r}: {why}. Valid forms: {GRAPH_FORMS}")


def _window_pairs(n: int, offsets: Iterable[int], cyclic: bool) -> list[tuple[int, int]]:
    """Unordered pairs ``(min, max)`` of ``i`` and ``i + off``, in the reference's set order."""
    offsets = list(offsets)
    ids: set[tuple[int, int]] = set()
    for i in range(n):
        for off in offsets:
            j = i + off
            if cyclic:
                j %= n
            if j < 0 or j >= n or j == i:
                continue
            ids.add((i, j) if i < j else (j, i))
    return list(ids)  # set iteration order, as the reference emits them


def _filter_pairs(
    pairs: list[tuple[int, int]], max_dist: int, cyclic: bool
) -> list[tuple[int, int]]:
    """Keep pairs whose (cyclic) index distance is at most ``max_dist``, in order."""
    n = max(max(p) for p in pairs) + 1  # the reference's image count: highest index + 1
    kept = []
    for i, j in pairs:
        dist = abs(i - j)
        if cyclic:
            dist = min(dist, abs(i + n - j), abs(i - n - j))
        if dist <= max_dist:
            kept.append((i, j))
    return kept


def auto_graph(n_images: int, video: bool = False) -> str:
    """The graph ``auto`` stands for: ``complete`` up to :data:`AUTO_COMPLETE_MAX` images,
    ``logwin-5`` for frames of a video (ordered, with loop closure), ``retrieval-10`` for larger
    photo collections (unordered)."""
    if n_images <= AUTO_COMPLETE_MAX:
        return "complete"
    return "logwin-5" if video else "retrieval-10"


def needs_descriptors(graph: str) -> bool:
    """Whether ``graph`` is a retrieval graph (it needs image descriptors)."""
    return isinstance(graph, str) and graph.startswith("retrieval")


def retrieval_pairs(descriptors, k: int) -> list[tuple[int, int]]:
    """Unordered pairs ``(i, j)``, ``i < j``, sorted: each image with its ``k`` most similar
    images (dot product of the ``(N, D)`` unit ``descriptors``), then the most similar pair
    between the smallest connected component and the rest until the graph is connected.
    Memory: blocks of 1024 rows of similarities."""
    import torch

    D = torch.as_tensor(descriptors, dtype=torch.float32)
    n = D.shape[0]
    k = min(k, n - 1)
    edges: set[tuple[int, int]] = set()
    for a in range(0, n, 1024):
        S = D[a : a + 1024] @ D.T
        rows = torch.arange(S.shape[0])
        S[rows, rows + a] = -float("inf")
        top = S.topk(k, dim=1).indices
        for r, js in enumerate(top.tolist()):
            i = a + r
            edges.update((min(i, j), max(i, j)) for j in js)
    while True:
        comps = connected_components(sorted(edges), n)
        if len(comps) <= 1:
            break
        small = min(comps, key=len)
        inside = torch.zeros(n, dtype=torch.bool)
        inside[small] = True
        S = D[small] @ D.T
        S[:, inside] = -float("inf")
        best = int(S.argmax())
        i, j = small[best // n], best % n
        edges.add((min(i, j), max(i, j)))
    return sorted(edges)


def make_pairs(
    n_images: int,
    graph: str = "complete",
    symmetrize: bool = True,
    prefilter: str | None = None,
    descriptors=None,
) -> list[tuple[int, int]]:
    """Ordered image-index pairs of a scene graph, in the reference order.

    Args:
        n_images: number of images (at least 2).
        graph: ``complete``, ``swin[-K][-noncyclic]``, ``logwin[-K][-noncyclic]`` or
            ``oneref[-K]`` (see the module docstring).
        symmetrize: append every pair reversed, after all originals.
        prefilter: ``None``, ``seqK`` or ``cycK`` (``K`` a non-negative integer): drop pairs whose
            index distance (cyclic for ``cyc``) exceeds ``K``.
        descriptors: ``(N, D)`` unit image descriptors, needed by ``retrieval-K`` graphs
            (:func:`pointmap.retrieval.image_descriptors`).

    Returns:
        List of ``(i, j)`` image indices; pair ``(i, j)`` predicts both views in camera ``i``.

    Raises:
        GraphError: fewer than 2 images, an unknown or malformed graph or prefilter string, an
            ``oneref`` index out of range, or a prefilter that removes every pair.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, int):
        raise GraphError(f"n_images must be an integer, got {n_images!r}")
    if not isinstance(graph, str):
        raise _graph_error(graph, "the scene graph must be a string")
    if n_images < 2:
        raise GraphError(
            f"a scene graph needs at least 2 images, got {n_images}; to process a single image, "
            "duplicate it and use the pairs [(0, 1), (1, 0)]"
        )
    n = n_images
    pairs: list[tuple[int, int]]
    if graph == "complete":
        pairs = [(i, j) for i in range(n) for j in range(i)]
    elif m := _WINDOW_RE.match(graph):
        kind, k_str, noncyclic = m.groups()
        k = int(k_str) if k_str is not None else _DEFAULT_WINDOW
        if k < 1:
            raise _graph_error(graph, f"the window size K must be at least 1, got {k}")
        cyclic = noncyclic is None
        if kind == "swin":
            pairs = _window_pairs(n, range(1, k + 1), cyclic)
        else:
            offsets = [2**e for e in range(k)]
            pairs = _window_pairs(n, [-o for o in offsets] + offsets, cyclic)
    elif m := _RETRIEVAL_RE.match(graph):
        k = int(m.group(1))
        if k < 1:
            raise _graph_error(graph, f"the number of retrieved images K must be at least 1, got {k}")
        if descriptors is None:
            raise GraphError(f"scene graph {graph!r} needs image descriptors "
                             "(pointmap.retrieval.image_descriptors)")
        if len(descriptors) != n:
            raise GraphError(f"{len(descriptors)} descriptors for {n} images")
        pairs = retrieval_pairs(descriptors, k)
        if m.group(2):
            have = set(pairs)
            pairs += [p for p in sorted(make_pairs(n, m.group(2), symmetrize=False)) if p not in have]
    elif m := _ONEREF_RE.match(graph):
        ref = int(m.group(1)) if m.group(1) is not None else 0
        if ref >= n:
            raise _graph_error(graph, f"reference image {ref} is out of range for {n} images")
        pairs = [(ref, j) for j in range(n) if j != ref]
    else:
        raise _graph_error(graph, "unknown name or malformed suffix")

    if symmetrize:
        pairs = pairs + [(j, i) for i, j in pairs]

    if prefilter is not None:
        pm = _PREFILTER_RE.match(prefilter) if isinstance(prefilter, str) else None
        if pm is None:
            raise GraphError(
                f"invalid prefilter {prefilter!r}: expected None, 'seqK' or 'cycK' with K a "
                "non-negative integer (e.g. 'seq2')"
            )
        pairs = _filter_pairs(pairs, int(pm.group(2)), cyclic=pm.group(1) == "cyc")
        if not pairs:
            raise GraphError(f"prefilter {prefilter!r} removed every pair of graph {graph!r}")
    return pairs


def _as_index(x: object) -> int | None:
    """``int(x)`` for integer-like values (Python/NumPy/0-d tensor ints), else ``None``."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if hasattr(x, "__index__"):
        try:
            return int(x.__index__())  # type: ignore[attr-defined]
        except TypeError:
            return None
    return None


def validate_pairs(
    pairs: Iterable[Sequence[int]],
    n_images: int,
    symmetrize: bool = False,
    require_connected: bool = False,
) -> list[tuple[int, int]]:
    """Check a user-supplied pair list and return it as a list of ``(int, int)`` tuples.

    Args:
        pairs: ``(i, j)`` image indices (tuples, lists, NumPy rows...).
        n_images: number of images; indices must lie in ``[0, n_images)``.
        symmetrize: append the reverse of every pair whose reverse is not already listed (after all
            the given pairs, in their order).
        require_connected: also require the pairs to link all images into one graph (needed by
            global alignment).

    Raises:
        GraphError: an entry that is not two integers, an index out of range, a self pair
            ``(i, i)``, a duplicate pair, an empty list, or (``require_connected``) a disconnected
            graph.
    """
    out: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for k, p in enumerate(pairs):
        try:
            items = list(p)  # type: ignore[arg-type]
        except TypeError:
            items = []
        ij = [_as_index(v) for v in items]
        if len(ij) != 2 or ij[0] is None or ij[1] is None:
            raise GraphError(
                f"pair #{k} is {p!r}; each pair must be two integer image indices (i, j)"
            )
        i, j = ij[0], ij[1]
        for v in (i, j):
            if not 0 <= v < n_images:
                raise GraphError(
                    f"pair #{k} {(i, j)}: index {v} is out of range for {n_images} images"
                )
        if i == j:
            raise GraphError(f"pair #{k} {(i, j)} pairs an image with itself")
        if (i, j) in seen:
            raise GraphError(f"pair #{k} {(i, j)} is listed twice")
        seen.add((i, j))
        out.append((i, j))
    if not out:
        raise GraphError("the pair list is empty")
    if symmetrize:
        out += [(j, i) for i, j in list(out) if (j, i) not in seen]
    if require_connected:
        comps = connected_components(out, n_images)
        if len(comps) > 1:
            others = [c for c in comps if 0 not in c]
            raise GraphError(
                f"the pairs split the {n_images} images into {len(comps)} unconnected groups; "
                f"e.g. images {others[0][:10]} share no pair with image 0"
            )
    return out


def connected_components(pairs: Iterable[Sequence[int]], n_images: int) -> list[list[int]]:
    """Groups of image indices linked by ``pairs`` (direction ignored), each sorted, ordered by
    their smallest index. An image in no pair is a group on its own."""
    parent = list(range(n_images))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in pairs:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for a in range(n_images):
        groups.setdefault(find(a), []).append(a)
    return [groups[r] for r in sorted(groups)]


def read_pairs_file(
    path: str | os.PathLike[str], names: Sequence[str] | None = None
) -> list[tuple[int, int]]:
    """Read pairs from a text file: one pair per line, two whitespace-separated fields.

    A field is an image index or, when ``names`` is given, an image name: a name matches an entry
    of ``names`` exactly or by file name (``a.jpg`` matches ``photos/a.jpg``). Text after ``#`` is a
    comment; blank lines are skipped. The result is not validated: pass it to
    :func:`validate_pairs`.

    Raises:
        GraphError: the file is missing or unreadable, a line does not have two fields, or a field
            is neither an index nor a known name (the message gives ``path:line``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise GraphError(f"pairs file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(f"cannot read pairs file {path}: {exc}") from exc

    lookup: dict[str, int] = {}
    if names is not None:
        base: dict[str, list[int]] = {}
        for k, nm in enumerate(names):
            base.setdefault(os.path.basename(str(nm)), []).append(k)
        lookup = {b: ks[0] for b, ks in base.items() if len(ks) == 1}  # unique file names only
        lookup.update({str(nm): k for k, nm in enumerate(names)})

    def field(tok: str, lineno: int) -> int:
        if tok in lookup:
            return lookup[tok]
        if re.fullmatch(r"\d+", tok):
            return int(tok)
        hint = (
            "an image name or index" if names is not None else "an integer index (no names given)"
        )
        raise GraphError(f"{path}:{lineno}: {tok!r} is not {hint}")

    pairs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        toks = line.split("#", 1)[0].split()
        if not toks:
            continue
        if len(toks) != 2:
            raise GraphError(f"{path}:{lineno}: expected two fields 'i j', got {line.strip()!r}")
        pairs.append((field(toks[0], lineno), field(toks[1], lineno)))
    return pairs
