"""Retrieval scene graphs: descriptors from the encoder, K nearest, connectivity, auto."""

from __future__ import annotations

import math

import pytest
import torch

from pointmap.errors import GraphError
from pointmap.model import DUSt3R, ModelConfig
from pointmap.pairs import auto_graph, connected_components, make_pairs, retrieval_pairs
from pointmap.retrieval import image_descriptors


def _ring(n: int, perm: list[int]) -> torch.Tensor:
    """Unit descriptors on a circle: image ``k`` sits at angle ``2 pi perm[k] / n``."""
    a = torch.tensor(perm, dtype=torch.float64) * 2 * math.pi / n
    return torch.stack([a.cos(), a.sin()], 1).float()


def test_retrieval_finds_the_true_neighbours_of_a_shuffled_ring():
    n = 40
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    pos = {k: perm[k] for k in range(n)}
    pairs = make_pairs(n, "retrieval-4", descriptors=_ring(n, perm))
    und = {(min(i, j), max(i, j)) for i, j in pairs}
    assert len(pairs) == 2 * len(und) and set(pairs[len(und):]) == {(j, i) for i, j in pairs[:len(und)]}
    for i, j in und:  # every edge joins ring neighbours at distance 1 or 2
        d = abs(pos[i] - pos[j])
        assert min(d, n - d) in (1, 2)
    assert len(und) == 2 * n  # and all of them are found


def test_retrieval_adds_edges_until_connected():
    # two tight clusters far apart: K = 1 alone would leave them unconnected
    d = torch.tensor([[1.0, 0.0, 0.0]] * 5 + [[0.0, 1.0, 0.0]] * 5) + 0.01 * torch.randn(
        10, 3, generator=torch.Generator().manual_seed(1))
    d = torch.nn.functional.normalize(d, dim=-1)
    und = retrieval_pairs(d, 1)
    assert len(connected_components(und, 10)) == 1
    across = [(i, j) for i, j in und if (i < 5) != (j < 5)]
    assert len(across) == 1


def test_combined_and_bad_graphs():
    d = _ring(12, list(range(12)))
    both = make_pairs(12, "retrieval-1+swin-3", descriptors=d)
    assert len(set(both)) == len(both)
    assert set(make_pairs(12, "swin-3")) <= set(both)
    with pytest.raises(GraphError, match="needs image descriptors"):
        make_pairs(12, "retrieval-3")
    with pytest.raises(GraphError, match="invalid scene graph"):
        make_pairs(12, "retrieval-x", descriptors=d)
    assert auto_graph(20) == "complete" and auto_graph(21) == "retrieval-10"
    assert auto_graph(300, video=True) == "logwin-5"


def test_encoder_descriptors_are_unit_and_repeatable():
    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=2, enc_num_heads=2,
                      dec_embed_dim=32, dec_depth=2, dec_num_heads=2, head_type="linear")
    model = DUSt3R(cfg).eval()
    g = torch.Generator().manual_seed(2)
    a, b, c = (torch.rand(3, 96, 128, generator=g) * 2 - 1 for _ in range(3))
    d = image_descriptors(model, [a, b, a, c], device="cpu", max_side=64)
    assert d.shape == (4, 32)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(d[0], d[2])  # the same image, the same descriptor
    assert float(d[0] @ d[2]) > float(d[0] @ d[1])
