"""Speed paths of pair inference: static-shape compilation, staged result copies, bf16 heads.

Each fast path is compared against the plain path (the uncompiled float32 model, direct head calls),
and compilation is counted with a recording ``torch.compile`` backend.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from pointmap import inference
from pointmap.inference import _HostSink, infer_pairs, warmup
from pointmap.model import DUSt3R, ModelConfig
from pointmap.model.heads import postprocess

SHAPES = [(32, 48), (48, 64)]  # 6 and 12 tokens: different shapes for every compiled block


def _tiny(head_type: str = "dpt") -> DUSt3R:
    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=2, enc_num_heads=2,
                      dec_embed_dim=32, dec_depth=4, dec_num_heads=2, head_type=head_type,
                      dpt_layer_dims=(8, 16, 16, 32), dpt_feature_dim=16, dpt_last_dim=8)
    return DUSt3R(cfg).eval()


def _scene(n_a: int, n_b: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *SHAPES[0], generator=g) * 2 - 1 for _ in range(n_a)] + \
           [torch.rand(3, *SHAPES[1], generator=g) * 2 - 1 for _ in range(n_b)]


def _flat(p) -> list[torch.Tensor]:
    return [*p.pts3d_1, *p.conf_1, *p.pts3d_2_in_1, *p.conf_2]


def _assert_same(a, b, rtol: float = 0.0, atol: float = 0.0) -> None:
    assert a.pairs == b.pairs
    for x, y in zip(_flat(a), _flat(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype and x.device.type == "cpu"
        assert torch.allclose(x, y, rtol=rtol, atol=atol), (x - y).abs().max()


class _RecordingBackend:
    """A ``torch.compile`` backend that runs graphs eagerly and records every compilation."""

    def __init__(self) -> None:
        self.graphs: list[tuple] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs.append(tuple(tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)))
        return gm.forward


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_scene_compiles_each_shape_once(fresh_dynamo):
    model = _tiny()
    images = _scene(3, 2)
    # symmetrized complete graph: 6 (a,a), 6 (a,b), 6 (b,a), 2 (b,b) pairs; batch 4 leaves ragged
    # last batches in three groups, and 3 + 2 images leave ragged encoder batches
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    ref = infer_pairs(model, images, pairs, batch_size=4)

    backend = _RecordingBackend()
    model.optimize_for_inference(compile=True, channels_last=False, compile_backend=backend)
    assert model.static_shapes
    warmup(model, SHAPES, batch_size=4, encode_batch_size=4)
    # one graph per distinct input: encoder blocks per image shape, decoder blocks per (own, other)
    # shape, heads per image shape; the 2 x 4 decoder blocks and both heads share their graphs
    n = len(SHAPES)
    assert len(backend.graphs) == n + n * n + n, backend.graphs
    assert len(set(backend.graphs)) == len(backend.graphs)

    got = infer_pairs(model, images, pairs, batch_size=4, encode_batch_size=4)
    assert len(backend.graphs) == n + n * n + n  # nothing recompiled
    _assert_same(got, ref, rtol=1e-6, atol=1e-6)

    # another scene with other ragged sizes, one shape group only, pairs out of order
    images2 = _scene(5, 0, seed=1)
    pairs2 = [(4, 0), (0, 1), (2, 3), (3, 4), (1, 4)]
    got2 = infer_pairs(model, images2, pairs2, batch_size=4, encode_batch_size=4)
    assert len(backend.graphs) == n + n * n + n
    model_ref = _tiny()
    _assert_same(got2, infer_pairs(model_ref, images2, pairs2, batch_size=2), rtol=1e-6, atol=1e-6)


def test_compiled_many_shapes_stay_within_cache(fresh_dynamo):
    """Three image shapes and two batch sizes need more than dynamo's default 8 cache entries per
    code object (all blocks share ``Module._call_impl``): they must all stay compiled."""
    model = _tiny(head_type="linear")
    backend = _RecordingBackend()
    model.optimize_for_inference(compile=True, channels_last=False, compile_backend=backend)
    shapes = [(32, 32), (32, 48), (48, 64)]
    for bs in (2, 3):
        warmup(model, shapes, batch_size=bs, encode_batch_size=2)
    compiled = len(backend.graphs)
    assert compiled == 3 + 2 * 9 + 2 * 3  # encoder per shape; decoders, heads per batch size
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, *shapes[k % 3], generator=g) for k in range(7)]
    pairs = [(i, j) for i in range(7) for j in range(7) if i != j]
    for bs in (2, 3):
        infer_pairs(model, images, pairs, batch_size=bs, encode_batch_size=2)
    assert len(backend.graphs) == compiled


def test_batches_pad_and_count():
    got = list(inference._batches([1, 2, 3, 4, 5], 2, pad=True))
    assert got == [([1, 2], 2), ([3, 4], 2), ([5, 5], 1)]
    assert list(inference._batches([1, 2, 3], 2)) == [([1, 2], 2), ([3], 1)]


def test_staged_sink_delivers_rows_in_order_and_reuses_buffers():
    g = torch.Generator().manual_seed(0)
    sink = _HostSink(torch.device("cpu"), torch.float32, rows=4, depth=2, staged=True)
    sent, received = [], []
    for real in (4, 3, 4, 1, 2):
        a = torch.randn(4, 5, 6, generator=g, dtype=torch.float64)
        b = torch.randn(4, 7, generator=g).t().contiguous().t()  # non-contiguous rows
        sent.append((a[:real].float(), b[:real]))
        sink.put((a, b), real, received.append)
        assert len(sink.pending) <= 2
    sink.close()
    assert len(received) == len(sent)
    for (a, b), (x, y) in zip(sent, received):
        assert torch.equal(x, a) and torch.equal(y, b) and x.dtype == torch.float32
    # delivered tensors own their memory: later batches did not overwrite them
    assert sum(len(v) for v in sink.free.values()) <= 3


def test_staged_copies_give_identical_scene_results(monkeypatch):
    model, images = _tiny(), _scene(2, 2)
    pairs = [(0, 1), (1, 0), (2, 3), (0, 2), (3, 1), (2, 0), (1, 3)]
    ref = infer_pairs(model, images, pairs, batch_size=2)

    class Staged(_HostSink):
        def __init__(self, *args, **kw) -> None:
            super().__init__(*args, **kw, depth=2, staged=True)

    monkeypatch.setattr(inference, "_HostSink", Staged)
    _assert_same(infer_pairs(model, images, pairs, batch_size=2), ref)
    half = infer_pairs(model, images, pairs, batch_size=2, storage_dtype=torch.float16)
    assert all(t.dtype == torch.float16 for t in _flat(half))
    for x, y in zip(_flat(half), _flat(ref)):
        assert torch.equal(x, y.half())


@pytest.mark.parametrize("head_type", ["dpt", "linear"])
def test_heads_default_is_plain_float32_twin(head_type):
    """``model.heads`` equals calling the head modules and ``postprocess`` directly, bitwise."""
    model = _tiny(head_type)
    img = torch.rand(2, 3, *SHAPES[1], generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        enc = model.encode(img)
        t1, t2 = model.decode(*(type(enc)(enc.tokens[k : k + 1], enc.shape) for k in (0, 1)))
        p1, p2 = model.heads(t1, t2, enc.shape, enc.shape)
        c = model.config
        r1 = postprocess(model.downstream_head1(t1, enc.shape), c.depth_mode, c.conf_mode)
        r2 = postprocess(model.downstream_head2(t2, enc.shape), c.depth_mode, c.conf_mode)
    assert torch.equal(p1["pts3d"], r1[0]) and torch.equal(p1["conf"], r1[1])
    assert torch.equal(p2["pts3d_in_other_view"], r2[0]) and torch.equal(p2["conf"], r2[1])


def test_bf16_heads_option():
    model = _tiny()
    images = _scene(2, 1)
    pairs = [(0, 1), (1, 2), (2, 0), (1, 0)]
    ref = infer_pairs(model, images, pairs, batch_size=2)

    same = copy.deepcopy(model).optimize_for_inference(compile=False, channels_last=True)
    assert next(same.downstream_head1.parameters()).dtype == torch.float32
    _assert_same(infer_pairs(same, images, pairs, batch_size=2), ref, rtol=1e-5, atol=1e-6)

    fast = copy.deepcopy(model).optimize_for_inference(compile=False, channels_last=True,
                                                       head_dtype=torch.bfloat16)
    assert next(fast.downstream_head2.parameters()).dtype == torch.bfloat16
    got = infer_pairs(fast, images, pairs, batch_size=2)
    for x, y in zip(_flat(got), _flat(ref)):
        assert x.dtype == torch.float32 and x.shape == y.shape
        rel = ((x - y).abs() / y.abs().clamp(min=1e-6)).median()
        assert 0 < rel < 2e-2  # bf16 rounding: different, but close
    # the head runs in bf16, its post-processing in float32 (not on bf16-rounded maps)
    img = images[0][None]
    with torch.no_grad():
        enc = fast.encode(img)
        t1, t2 = fast.decode(enc, enc)
        p1, _ = fast.heads(t1, t2, enc.shape, enc.shape)
        out = fast.downstream_head1([t.bfloat16() for t in t1], enc.shape)
    c = fast.config
    assert out.dtype == torch.bfloat16
    pts, conf = postprocess(out.float(), c.depth_mode, c.conf_mode)
    assert torch.equal(p1["pts3d"], pts) and torch.equal(p1["conf"], conf)
    assert not torch.equal(conf, postprocess(out, c.depth_mode, c.conf_mode)[1].float())


def test_inference_imports_need_no_optional_packages():
    """The inference stack (what benchmarks import) loads without PIL, tqdm, roma, trimesh,
    scipy or OpenCV."""
    code = (
        "import sys\n"
        "for m in ('PIL', 'tqdm', 'roma', 'trimesh', 'scipy', 'cv2'):\n"
        "    sys.modules[m] = None\n"
        "import pointmap.inference, pointmap.model, pointmap.testing.refill, pointmap.pairs\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
