"""Scene graphs: exact pairs and order of the reference make_pairs, validation, pair files."""

from __future__ import annotations

import numpy as np
import pytest

from pointmap.errors import GraphError
from pointmap.pairs import connected_components, make_pairs, read_pairs_file, validate_pairs


def _check_symmetric(pairs):
    """[originals..., reversed originals...] with nothing else."""
    half = len(pairs) // 2
    assert len(pairs) == 2 * half
    assert pairs[half:] == [(j, i) for i, j in pairs[:half]]
    return pairs[:half]


def _set_order(n, offsets, cyclic):
    """Iteration order of the Python set the reference builds (insertion sequence reproduced)."""
    s = set()
    for i in range(n):
        for off in offsets:
            j = i + off
            if cyclic:
                j %= n
            if 0 <= j < n and j != i:
                s.add((min(i, j), max(i, j)))
    return list(s)


def test_complete():
    first = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert make_pairs(4) == first + [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    assert make_pairs(4, "complete", symmetrize=False) == first
    assert make_pairs(2) == [(1, 0), (0, 1)]
    assert len(make_pairs(10)) == 90


def test_oneref():
    assert make_pairs(4, "oneref-2", symmetrize=False) == [(2, 0), (2, 1), (2, 3)]
    assert make_pairs(4, "oneref") == [(0, 1), (0, 2), (0, 3), (1, 0), (2, 0), (3, 0)]
    assert make_pairs(3, "oneref-0", symmetrize=False) == [(0, 1), (0, 2)]


@pytest.mark.parametrize(
    "graph, n, expected",
    [
        (
            "swin-2",
            6,
            {
                (0, 1),
                (0, 2),
                (1, 2),
                (1, 3),
                (2, 3),
                (2, 4),
                (3, 4),
                (3, 5),
                (4, 5),
                (0, 4),
                (0, 5),
                (1, 5),
            },
        ),
        (
            "swin-2-noncyclic",
            6,
            {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4), (3, 5), (4, 5)},
        ),
        ("swin-1-noncyclic", 4, {(0, 1), (1, 2), (2, 3)}),
        ("swin-1", 4, {(0, 1), (1, 2), (2, 3), (0, 3)}),
        (
            "swin",
            8,
            {
                (i, (i + k) % 8) if i < (i + k) % 8 else ((i + k) % 8, i)
                for i in range(8)
                for k in (1, 2, 3)
            },
        ),
        (
            "swin-noncyclic",
            5,
            {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)},
        ),
        ("swin-5", 4, {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}),  # window wraps: no (i, i)
        (
            "logwin-2-noncyclic",
            6,
            {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 2), (1, 3), (2, 4), (3, 5)},
        ),
        (
            "logwin-3",
            8,
            {
                (i, j)
                for i in range(8)
                for j in range(i + 1, 8)
                if min(j - i, 8 - (j - i)) in (1, 2, 4)
            },
        ),
        (
            "logwin-3-noncyclic",
            8,
            {(i, j) for i in range(8) for j in range(i + 1, 8) if j - i in (1, 2, 4)},
        ),
        (
            "logwin",
            10,
            {
                (i, j)
                for i in range(10)
                for j in range(i + 1, 10)
                if min(j - i, 10 - (j - i)) in (1, 2, 4)
            },
        ),
    ],
)
def test_window_graphs(graph, n, expected):
    pairs = make_pairs(n, graph)
    first = _check_symmetric(pairs)
    assert all(i < j for i, j in first)
    assert len(first) == len(set(first))
    assert set(first) == expected
    assert make_pairs(n, graph, symmetrize=False) == first


@pytest.mark.parametrize(
    "graph", ["swin-3", "swin-4-noncyclic", "logwin-3", "logwin-4-noncyclic", "swin-7"]
)
@pytest.mark.parametrize("n", [5, 9, 17, 40])
def test_window_order_is_reference_set_order(graph, n):
    kind, *rest = graph.split("-")
    k = int(rest[0])
    cyclic = "noncyclic" not in graph
    offsets = (
        list(range(1, k + 1))
        if kind == "swin"
        else ([-(2**e) for e in range(k)] + [2**e for e in range(k)])
    )
    assert make_pairs(n, graph, symmetrize=False) == _set_order(n, offsets, cyclic)


def test_prefilter():
    assert make_pairs(5, prefilter="seq1") == [
        (1, 0),
        (2, 1),
        (3, 2),
        (4, 3),
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
    ]
    assert make_pairs(5, prefilter="cyc1") == [
        (1, 0),
        (2, 1),
        (3, 2),
        (4, 0),
        (4, 3),
        (0, 1),
        (1, 2),
        (2, 3),
        (0, 4),
        (3, 4),
    ]
    assert make_pairs(6, "oneref-0", prefilter="seq2", symmetrize=False) == [(0, 1), (0, 2)]
    assert make_pairs(6, "oneref-0", prefilter="cyc2", symmetrize=False) == [
        (0, 1),
        (0, 2),
        (0, 4),
        (0, 5),
    ]
    assert make_pairs(4, prefilter="seq3") == make_pairs(4)


@pytest.mark.parametrize(
    "graph, match",
    [
        ("foo", "unknown name"),
        ("", "unknown name"),
        ("Complete", "unknown name"),
        ("complete-noncyclic", "unknown name"),
        ("swin-0", "at least 1"),
        ("logwin-0-noncyclic", "at least 1"),
        ("swin-x", "malformed"),
        ("swin-3-foo", "malformed"),
        ("logwin--3", "malformed"),
        ("swin-3-noncyclic-2", "malformed"),
        ("oneref-x", "malformed"),
        ("oneref-1-noncyclic", "malformed"),
        ("oneref--1", "malformed"),
        ("oneref-4", "reference image 4 is out of range for 4 images"),
    ],
)
def test_invalid_graphs(graph, match):
    with pytest.raises(GraphError, match=match) as info:
        make_pairs(4, graph)
    assert repr(graph) in str(info.value)
    assert "swin-K-noncyclic" in str(info.value) and "oneref-K" in str(info.value)


def test_invalid_counts_and_prefilters():
    for n in (0, 1):
        with pytest.raises(GraphError, match=rf"at least 2 images, got {n}.*duplicate"):
            make_pairs(n)
    with pytest.raises(GraphError, match="must be an integer"):
        make_pairs(3.0)  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="must be a string"):
        make_pairs(3, None)  # type: ignore[arg-type]
    for bad in ("seq", "seqx", "seq-1", "foo2", "cyc 1"):
        with pytest.raises(GraphError, match=rf"invalid prefilter '{bad}'.*'seqK' or 'cycK'"):
            make_pairs(4, prefilter=bad)
    with pytest.raises(GraphError, match="removed every pair"):
        make_pairs(3, prefilter="seq0")


def test_validate_pairs():
    assert validate_pairs([(0, 1), [2, 1], np.array([1, 3])], 4) == [(0, 1), (2, 1), (1, 3)]
    out = validate_pairs([(np.int64(0), 1), (1, 0), (1, 2)], 3, symmetrize=True)
    assert out == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert all(type(v) is int for p in out for v in p)
    for bad, match in [
        ([(0, 5)], r"index 5 is out of range for 4 images"),
        ([(-1, 0)], r"index -1 is out of range"),
        ([(2, 2)], r"itself"),
        ([(0, 1), (0, 1)], r"pair #1 \(0, 1\) is listed twice"),
        ([(0, 1, 2)], r"pair #0 .* two integer"),
        ([(0.0, 1)], r"two integer"),
        ([(True, 1)], r"two integer"),
        ([5], r"two integer"),
        (["01"], r"two integer"),
        ([], r"empty"),
    ]:
        with pytest.raises(GraphError, match=match):
            validate_pairs(bad, 4)


def test_connectivity():
    assert connected_components([(0, 1), (3, 2)], 5) == [[0, 1], [2, 3], [4]]
    assert connected_components([(4, 0), (1, 4), (2, 3), (3, 1)], 5) == [[0, 1, 2, 3, 4]]
    with pytest.raises(GraphError, match=r"2 unconnected groups.*\[2, 3\]"):
        validate_pairs([(0, 1), (2, 3)], 4, require_connected=True)
    assert validate_pairs([(0, 1), (1, 2)], 3, require_connected=True) == [(0, 1), (1, 2)]


def test_read_pairs_file(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text("# my pairs\n0 1\n\n  2\t0  # trailing comment\nb.jpg dir/c.jpg\n")
    names = ["dir/a.jpg", "dir/b.jpg", "dir/c.jpg"]
    assert read_pairs_file(p, names) == [(0, 1), (2, 0), (1, 2)]
    with pytest.raises(GraphError, match=r"pairs\.txt:5: 'b\.jpg' is not an integer index"):
        read_pairs_file(p)
    p.write_text("0 1\n0 1 2\n")
    with pytest.raises(GraphError, match=r"pairs\.txt:2: expected two fields"):
        read_pairs_file(p)
    p.write_text("0 zzz.jpg\n")
    with pytest.raises(GraphError, match=r"pairs\.txt:1: 'zzz\.jpg' is not an image name or index"):
        read_pairs_file(p, names)
    with pytest.raises(GraphError, match=r"pairs file not found: .*nope\.txt"):
        read_pairs_file(tmp_path / "nope.txt")
    # a file name shared by two images is ambiguous and only matches by full name
    p.write_text("x/a.jpg y/a.jpg\n")
    assert read_pairs_file(p, ["x/a.jpg", "y/a.jpg"]) == [(0, 1)]
    p.write_text("a.jpg 1\n")
    with pytest.raises(GraphError, match="'a.jpg'"):
        read_pairs_file(p, ["x/a.jpg", "y/a.jpg"])
