"""The predictions store: float16 shards on disk, store-backed PairPredictions, resume, refusal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pointmap.errors import InputError, PointmapError
from pointmap.inference import infer_pairs
from pointmap.model import DUSt3R, ModelConfig
from pointmap.model.checkpoint import bundled_model_path
from pointmap.predictions import PairPredictions
from pointmap.store import STORE_DIRNAME, PredictionStore, StoreMismatchError, read_image_descriptors, store_identity

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "pointmap" / "examples" / "room"
REPO = Path(__file__).resolve().parents[1]


def _tiny_model() -> DUSt3R:
    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=2, enc_num_heads=2,
                      dec_embed_dim=32, dec_depth=2, dec_num_heads=2, head_type="linear")
    return DUSt3R(cfg).eval()


def _images(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shapes = [(48, 64), (64, 48)]
    return [torch.rand(3, *shapes[k % 2], generator=g) * 2 - 1 for k in range(n)]


def _ident(model, imgs, size=64):
    return store_identity("tiny", model, imgs, [f"im{k}.png" for k in range(len(imgs))], {"size": size})


def test_store_backed_predictions_match_in_memory_to_float16(tmp_path):
    model, imgs = _tiny_model(), _images()
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    ref = infer_pairs(model, imgs, pairs, batch_size=3, device="cpu")
    store = PredictionStore.open(tmp_path / "s", _ident(model, imgs))
    got = infer_pairs(model, imgs, pairs, batch_size=3, device="cpu", store=store)
    assert got.lazy and got.pairs == pairs and got.image_shapes == ref.image_shapes
    for name in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2"):
        for a, b in zip(getattr(got, name), getattr(ref, name)):
            assert a.dtype == torch.float16 and a.shape == b.shape
            torch.testing.assert_close(a.float(), b.half().float(), rtol=0, atol=0)
    # a subset by index is lazy too, and reads the same data
    sub = got.pts3d_1.take([5, 0])
    torch.testing.assert_close(sub[0], got.pts3d_1[5])
    # in memory on request
    mem = got.to(dtype=torch.float32)
    assert not mem.lazy and mem.pts3d_1[3].dtype == torch.float32


def test_store_holds_mast3r_descriptors_when_asked(tmp_path):
    """A MASt3R network's descriptors go into the store beside the points (float16, read on
    access) when kept, and are absent when not; matching from the store gives the in-memory
    matches of the float16 descriptors."""
    from pointmap.matching import match_pair

    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 64), enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32,
                      dec_depth=4, dec_num_heads=2, head_type="catmlp+dpt", output_mode="pts3d+desc24",
                      two_confs=True, dpt_layer_dims=(8, 16, 16, 32), dpt_feature_dim=16, dpt_last_dim=16)
    model, imgs = DUSt3R(cfg).eval(), _images(3)
    pairs = [(0, 1), (1, 0), (1, 2), (2, 1)]
    ref = infer_pairs(model, imgs, pairs, batch_size=3, device="cpu", desc_dtype=torch.float16)
    got = infer_pairs(model, imgs, pairs, batch_size=3, device="cpu",
                      store=PredictionStore.open(tmp_path / "d", _ident(model, imgs)))
    assert got.lazy and got.has_descriptors and ref.has_descriptors
    for name in ("desc_1", "desc_conf_1", "desc_2", "desc_conf_2"):
        for a, b in zip(getattr(got, name), getattr(ref, name)):
            assert a.dtype == torch.float16 and a.shape == b.shape
            torch.testing.assert_close(a, b.half(), rtol=0, atol=0)
    assert got.desc_1[0].shape == (*imgs[0].shape[1:], 24)
    for e in range(len(pairs)):
        for x, y in zip(match_pair(got, e, 4), match_pair(ref, e, 4)):
            torch.testing.assert_close(x, y)
    # reopened (a resumed run) the descriptors are still there; without asking, none are stored
    again = PredictionStore.open(tmp_path / "d", _ident(model, imgs)).predictions(pairs, n_images=3)
    assert again.has_descriptors
    plain = infer_pairs(model, imgs, pairs, batch_size=3, device="cpu", descriptors=False,
                        store=PredictionStore.open(tmp_path / "p", _ident(model, imgs)))
    assert not plain.has_descriptors


def test_resume_skips_stored_pairs_and_ignores_unfinished_shards(tmp_path):
    model, imgs = _tiny_model(), _images()
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    store = PredictionStore.open(tmp_path / "s", _ident(model, imgs))
    infer_pairs(model, imgs, pairs[:5], batch_size=2, device="cpu", store=store)
    # a crash while writing: a shard without its index line and a torn index line
    (tmp_path / "s" / "r0-000099.safetensors").write_bytes(b"partial")
    with open(tmp_path / "s" / "index-0.jsonl", "a") as f:
        f.write('{"shard": "r0-000099.safetensors", "pai')
    reopened = PredictionStore.open(tmp_path / "s", _ident(model, imgs))
    assert reopened.done() == set(pairs[:5])
    calls = []
    orig = model.forward_encoded
    model.forward_encoded = lambda e1, e2: (calls.append(len(e1.tokens)), orig(e1, e2))[1]
    got = infer_pairs(model, imgs, pairs, batch_size=2, device="cpu", store=reopened)
    assert sum(calls) == len(pairs) - 5  # only the missing pairs ran
    ref = infer_pairs(_tiny_model(), imgs, pairs, batch_size=2, device="cpu")
    for a, b in zip(got.conf_2, ref.conf_2):
        torch.testing.assert_close(a.float(), b.half().float(), rtol=0, atol=0)


def test_store_refuses_other_images_model_or_settings(tmp_path):
    model, imgs = _tiny_model(), _images()
    PredictionStore.open(tmp_path / "s", _ident(model, imgs))
    with pytest.raises(StoreMismatchError, match="image 2 is a different image 'im2.png'"):
        PredictionStore.open(tmp_path / "s", _ident(model, imgs[:2] + imgs[:2]))
    with pytest.raises(StoreMismatchError, match="made from 4 images and this run has 3"):
        PredictionStore.open(tmp_path / "s", _ident(model, imgs[:3]))
    with pytest.raises(StoreMismatchError, match=r"size=64 and this run uses size=224 \(--size on the command line\)"):
        PredictionStore.open(tmp_path / "s", _ident(model, imgs, size=224))
    other = _tiny_model()
    with torch.no_grad():
        next(other.parameters()).add_(1)
    with pytest.raises(StoreMismatchError, match="different weights"):
        PredictionStore.open(tmp_path / "s", _ident(other, imgs))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(PointmapError, match="not a predictions store"):
        PredictionStore.open(tmp_path / "junk", _ident(model, imgs))


def test_image_descriptors_are_read_back_only_for_the_same_model_and_settings(tmp_path):
    """Descriptors kept by one run are read back by digest; a run of another model or other
    settings, or one with an image the file lacks, gets none (it computes its own)."""
    model, imgs = _tiny_model(), _images()
    ident = _ident(model, imgs)
    digests = [im["digest"] for im in ident["images"]]
    desc = torch.randn(4, 32)
    PredictionStore.open(tmp_path / "s", ident).write_image_descriptors(digests, desc)
    assert torch.equal(read_image_descriptors(tmp_path / "s", digests[::-1], ident), desc.flip(0))
    assert read_image_descriptors(tmp_path / "s", digests, _ident(model, imgs, size=224)) is None
    other = _tiny_model()
    with torch.no_grad():
        next(other.parameters()).add_(1)
    assert read_image_descriptors(tmp_path / "s", digests, _ident(other, imgs)) is None
    assert read_image_descriptors(tmp_path / "s", digests[:2] + ["0" * 64], ident) is None
    assert read_image_descriptors(tmp_path / "nothing", digests, ident) is None


def test_model_digest_reads_bfloat16_weights_of_any_layout():
    """A bfloat16 network (``--fast``) may hold a weight whose last dimension has size 1 and a
    stride other than 1 (contiguous for torch): its digest is that of the same values laid out
    plainly, and a changed value changes it."""
    from pointmap.store import model_digest

    odd = torch.randn(1, 64).to(torch.bfloat16).t()  # (64, 1), strides (1, 64)
    assert odd.is_contiguous() and odd.stride(-1) != 1
    a, b = torch.nn.Module(), torch.nn.Module()
    a.register_buffer("w", odd)
    b.register_buffer("w", odd.reshape(-1).clone().reshape(64, 1))
    assert model_digest(a) == model_digest(b)
    b.w[3, 0] += 1
    assert model_digest(a) != model_digest(b)


def test_predictions_missing_from_store_are_named(tmp_path):
    model, imgs = _tiny_model(), _images()
    store = PredictionStore.open(tmp_path / "s", _ident(model, imgs))
    with pytest.raises(PointmapError, match="lacks 1 of the pairs"):
        store.predictions([(0, 1)], n_images=4)


def test_lazy_fields_check_shapes_without_reading():
    from pointmap.predictions import LazyTensors

    class Fake(LazyTensors):
        def __init__(self, shapes):
            self.shapes = shapes

        def load(self, k):
            raise AssertionError("read")

    with pytest.raises(InputError, match="appears with two shapes"):
        PairPredictions([(0, 1), (1, 0)], Fake([(4, 5, 3), (4, 7, 3)]), Fake([(4, 5), (4, 7)]),
                        Fake([(4, 6, 3), (4, 5, 3)]), Fake([(4, 6), (4, 5)]))
    p = PairPredictions([(0, 1)], Fake([(4, 5, 3)]), Fake([(4, 5)]), Fake([(2, 3, 3)]), Fake([(2, 3)]))
    assert p.image_shapes == [(4, 5), (2, 3)]


# ---------------------------------------------------------------------------- the command line

needs_model = pytest.mark.skipif(not bundled_model_path().is_file(), reason="bundled model not present")

_SCRIPT = """
import sys, time
slow = sys.argv[1] == "slow"
from pointmap.align.reduced import StreamedReductions
_open = StreamedReductions.open.__func__
# the reductions' state is saved after every batch (not once a minute), so a kill loses little
StreamedReductions.open = classmethod(lambda cls, *a, **k: _open(cls, *a, **{**k, "save_every_s": 0.0}))
if slow:  # each decoder batch takes a while, so the run can be killed mid-way
    from pointmap.model.network import DUSt3R
    orig = DUSt3R.forward_encoded
    def forward_encoded(self, e1, e2):
        time.sleep(0.3)
        return orig(self, e1, e2)
    DUSt3R.forward_encoded = forward_encoded
from pointmap.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _cli(out: Path, slow: bool, extra=(), full: bool = True) -> subprocess.Popen:
    imgs = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    args = [sys.executable, "-c", _SCRIPT, "slow" if slow else "fast", "reconstruct", *imgs, "-o",
            str(out), "-q", "--store", "on", *(["--store-full"] if full else []), "--batch-size", "1",
            "--export", "cameras", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _index_pairs(out: Path) -> list:
    pairs = []
    for f in (out / STORE_DIRNAME).glob("index-*.jsonl"):
        for line in f.read_text().splitlines():
            pairs += json.loads(line)["pairs"]
    return pairs


def _kill_after(proc: subprocess.Popen, out: Path, shards: int) -> None:
    """Kill ``proc`` (SIGKILL) once its store indexes ``shards`` shards."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        idx = out / STORE_DIRNAME / "index-0.jsonl"
        if idx.is_file() and len(idx.read_text().splitlines()) >= shards:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@needs_model
def test_killed_reconstruct_resumes_to_the_uninterrupted_result(tmp_path):
    """``--store-full``: the full pairs, none run twice."""
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _cli(killed, slow=True)
    _kill_after(proc, killed, 3)
    n_before = len(_index_pairs(killed))
    assert 3 <= n_before < 20  # 5 images, complete graph: 20 ordered pairs
    # a rerun with other settings is refused with a message naming them, and nothing is touched
    bad = _cli(killed, slow=False, extra=["--dtype", "bfloat16"])
    _, err = bad.communicate()
    assert bad.returncode == 2
    assert "does not belong to this run" in err and "dtype='float32'" in err and "bfloat16" in err
    assert len(_index_pairs(killed)) == n_before
    resumed = _cli(killed, slow=False)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert f"resuming: {n_before} pair predictions already" in err
    pairs = _index_pairs(killed)
    assert len(pairs) == 20 and len({tuple(p) for p in pairs}) == 20  # none recomputed
    ref = _cli(clean, slow=False)
    _, err = ref.communicate()
    assert ref.returncode == 0, err
    a = json.loads((killed / "cameras.json").read_text())
    b = json.loads((clean / "cameras.json").read_text())
    assert a == b


@needs_model
def test_killed_reduced_reconstruct_resumes_and_refuses_other_runs(tmp_path):
    """The default store (streamed reductions): a killed run resumes to the uninterrupted
    cameras; a rerun asking for the full pairs or another scene graph is refused in one line."""
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _cli(killed, slow=True, full=False)
    _kill_after(proc, killed, 4)
    n_before = len(_index_pairs(killed))
    assert 4 <= n_before < 20
    assert "reductions" in json.loads((killed / STORE_DIRNAME / "store.json").read_text())["identity"]
    for extra, full, named in (((), True, "--store-full"), (("--graph", "swin-2"), False, "--graph")):
        bad = _cli(killed, slow=False, extra=extra, full=full)
        _, err = bad.communicate()
        errors = [ln for ln in err.splitlines() if ln.startswith("pointmap: error")]
        assert bad.returncode == 2 and len(errors) == 1 and "Traceback" not in err, err
        assert "does not belong to this run" in errors[0] and named in errors[0], err
    assert len(_index_pairs(killed)) == n_before
    resumed = _cli(killed, slow=False, full=False)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    done = int(err.split("resuming: ")[1].split(" of 20 pairs already reduced")[0])
    assert n_before - 1 <= done <= n_before  # a kill between a shard and the state's save loses that one
    assert len(_index_pairs(killed)) == n_before + 20 - done
    ref = _cli(clean, slow=False, full=False)
    _, err = ref.communicate()
    assert ref.returncode == 0, err
    a = json.loads((killed / "cameras.json").read_text())
    b = json.loads((clean / "cameras.json").read_text())
    assert a == b
