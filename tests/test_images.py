"""Image loading: reference preprocessing parity, formats and modes, geometry, errors."""

from __future__ import annotations

import re
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import pointmap.images as images_mod
from pointmap.errors import ImageLoadError
from pointmap.images import load_image_arrays, load_images, preprocess_image


def _norm(v: float) -> float:
    """The reference normalisation of an 8-bit value, in float32."""
    return float((torch.tensor(v, dtype=torch.float32) / 255 - 0.5) / 0.5)


def _save(path, arr, mode=None, **kw):
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    im.save(path, **kw)
    return path


def _spec_preprocess(img: Image.Image, size: int, square_ok: bool = False) -> torch.Tensor:
    """A literal transcription of the reference preprocessing rules (patch 16)."""
    W1, H1 = img.size
    L = round(size * max(W1 / H1, H1 / W1)) if size == 224 else size
    S = max(img.size)
    interp = Image.LANCZOS if S > L else Image.BICUBIC
    img = img.resize(tuple(int(round(x * L / S)) for x in img.size), interp)
    W, H = img.size
    cx, cy = W // 2, H // 2
    if size == 224:
        half = min(cx, cy)
        img = img.crop((cx - half, cy - half, cx + half, cy + half))
    else:
        halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
        if not square_ok and W == H:
            halfh = 3 * halfw / 4
        img = img.crop((cx - halfw, cy - halfh, cx + halfw, cy + halfh))
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    return (t - 0.5) / 0.5


# ------------------------------------------------------------------ parity with the reference


@pytest.mark.parametrize("cfg", ["tiny_224_linear", "tiny_512_dpt"])
def test_parity_vectors(parity_or_subset_dir, cfg):
    """The reference's preprocessed images, bit for bit: the full vectors when ``../shared`` is
    there, else the shipped subset (whose images are kept as SHA-256 digests of the tensors)."""
    from parity_checks import image_sha256

    ref = torch.load(parity_or_subset_dir / cfg / "vectors.pt", weights_only=True)
    loaded = load_images(parity_or_subset_dir / "images", size=int(ref["size"]))
    assert [im.meta.path.replace("\\", "/").rsplit("/", 1)[-1] for im in loaded] == list(
        ref["files"]
    )
    for got, exp in zip(loaded, ref["images"], strict=True):
        assert got.img.dtype == torch.float32
        assert got.true_shape == tuple(int(v) for v in exp["true_shape"])
        if "img" in exp:
            assert torch.equal(got.img, exp["img"]), exp["name"]
        else:
            assert image_sha256(got.img) == exp["img_sha256"], exp["name"]
    if int(ref["size"]) == 512:
        rot = loaded[list(ref["files"]).index("d_exif_rot.jpg")]  # stored landscape, EXIF orientation 6
        assert rot.true_shape[0] > rot.true_shape[1]
        assert rot.meta.original_size[1] > rot.meta.original_size[0]


@pytest.mark.parametrize(
    "wh", [(640, 480), (1000, 700), (333, 517), (97, 53), (300, 300), (40, 41), (1234, 50)]
)
@pytest.mark.parametrize("size", [224, 512])
def test_matches_spec_transcription(tmp_path, wh, size):
    rng = np.random.default_rng(sum(wh) + size)
    arr = rng.integers(0, 256, size=(wh[1], wh[0], 3), dtype=np.uint8)
    p = _save(tmp_path / "x.png", arr)
    (got,) = load_images(p, size=size)
    exp = _spec_preprocess(Image.open(p).convert("RGB"), size)
    assert torch.equal(got.img, exp)
    assert got.true_shape == tuple(exp.shape[1:])


def test_square_ok_keeps_square(tmp_path):
    p = _save(tmp_path / "sq.png", np.zeros((300, 300, 3), np.uint8))
    assert load_images(p, size=512)[0].true_shape == (384, 512)
    assert load_images(p, size=512, square_ok=True)[0].true_shape == (512, 512)


# ------------------------------------------------------------------ geometry and meta


@pytest.mark.parametrize(
    "wh, size, true_shape, resized, box",
    [
        ((1920, 1080), 512, (288, 512), (512, 288), (0, 0, 512, 288)),
        ((3024, 4032), 512, (512, 384), (384, 512), (0, 0, 384, 512)),
        ((1000, 700), 512, (352, 512), (512, 358), (0, 3, 512, 355)),
        ((640, 480), 224, (224, 224), (299, 224), (37, 0, 261, 224)),
        ((200, 200), 512, (384, 512), (512, 512), (0, 64, 512, 448)),
    ],
)
def test_crop_geometry(wh, size, true_shape, resized, box):
    (im,) = load_image_arrays([np.zeros((wh[1], wh[0], 3), np.uint8)], size=size)
    assert im.true_shape == true_shape
    assert tuple(im.img.shape) == (3, *true_shape)
    assert im.meta.original_size == wh
    assert im.meta.resized_size == resized
    assert im.meta.crop_box == box
    assert im.meta.size == (true_shape[1], true_shape[0])
    assert im.meta.path is None


def test_centre_maps_to_original_centre():
    # 1000x700 -> 512x358, crop rows 3..355: the geometric centre must map to the original centre
    (im,) = load_image_arrays([np.zeros((700, 1000, 3), np.uint8)], size=512)
    H, W = im.true_shape
    centre = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=torch.float64)
    assert torch.allclose(
        im.meta.to_original_pixels(centre), torch.tensor([499.5, 349.5], dtype=torch.float64)
    )
    # hand computation for pixel (0, 0): x = 0.5 * 1000/512 - 0.5, y = 3.5 * 700/358 - 0.5
    corner = im.meta.to_original_pixels(torch.tensor([0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(
        corner, torch.tensor([0.5 * 1000 / 512 - 0.5, 3.5 * 700 / 358 - 0.5], dtype=torch.float64)
    )


def test_feature_maps_back_to_original_pixel():
    # 2048x1480 -> 512x370 (x4 downscale), crop rows 1..369. A bright square centred on original
    # pixel (1001.5, 601.5) must land, via to_original_pixels, back at that pixel.
    arr = np.full((1480, 2048, 3), 128, np.uint8)
    arr[598:606, 998:1006] = 255
    (im,) = load_image_arrays([arr], size=512)
    assert im.meta.crop_box == (0, 1, 512, 369)
    w = (im.img[0].double() - _norm(128)).clamp(min=0)
    v, u = torch.meshgrid(torch.arange(w.shape[0]), torch.arange(w.shape[1]), indexing="ij")
    uv = torch.stack([(w * u).sum() / w.sum(), (w * v).sum() / w.sum()])
    back = im.meta.to_original_pixels(uv)
    assert torch.allclose(back, torch.tensor([1001.5, 601.5], dtype=torch.float64), atol=0.5)


def test_intrinsics_to_original_consistent_with_pixels():
    (im,) = load_image_arrays([np.zeros((700, 1000, 3), np.uint8)], size=512)
    H, W = im.true_shape
    K = torch.tensor([[400.0, 0, W / 2], [0, 400.0, H / 2], [0, 0, 1]], dtype=torch.float64)
    X = torch.tensor([[0.3, -0.2, 2.0], [-1.0, 0.5, 3.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    uv_net = (X @ K.T)[:, :2] / X[:, 2:]
    K0 = im.meta.intrinsics_to_original(K)
    uv_orig = (X @ K0.T)[:, :2] / X[:, 2:]
    assert torch.allclose(im.meta.to_original_pixels(uv_net), uv_orig)
    assert torch.allclose(K0[0, 0], torch.tensor(400.0 * 1000 / 512, dtype=torch.float64))


def test_intrinsics_mapping_with_skew_matches_pixels_both_ways():
    """Projection with mapped intrinsics lands on the mapped pixels, skew included, both ways;
    arrays stay arrays and tensors stay tensors."""
    (im,) = load_image_arrays([np.zeros((480, 900, 3), np.uint8)], size=224)
    K0 = torch.tensor([[500.0, 3.0, 440.0], [0, 520.0, 250.0], [0, 0, 1]], dtype=torch.float64)
    X = torch.tensor([[0.3, -0.2, 2.0], [-1.0, 0.5, 3.0], [0.2, 0.1, 1.0]], dtype=torch.float64)
    Kn = im.meta.intrinsics_to_network(K0)
    uv_net = (X @ Kn.T)[:, :2] / X[:, 2:]
    uv_orig = (X @ K0.T)[:, :2] / X[:, 2:]
    assert torch.allclose(im.meta.to_original_pixels(uv_net), uv_orig)
    assert torch.allclose(im.meta.intrinsics_to_original(Kn), K0)
    Kn_np = im.meta.intrinsics_to_network(K0.numpy())
    assert isinstance(Kn_np, np.ndarray) and np.allclose(Kn_np, Kn.numpy())


# ------------------------------------------------------------------ formats and modes


def test_exif_orientation_loads_portrait(tmp_path):
    arr = np.zeros((64, 128, 3), np.uint8)  # stored landscape 128x64
    arr[:, :64] = (255, 0, 0)  # left half red, right half blue
    arr[:, 64:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW for display: stored left column becomes the top row
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, quality=95, exif=exif)
    (im,) = load_images(p, size=512)
    assert im.meta.original_size == (64, 128)
    assert im.true_shape == (512, 256)
    rgb = im.rgb
    assert rgb[:200, :, 0].mean() > 0.9 and rgb[:200, :, 2].mean() < 0.1  # top: red
    assert rgb[-200:, :, 2].mean() > 0.9 and rgb[-200:, :, 0].mean() < 0.1  # bottom: blue


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "tif", "webp", "jpg", "jpeg"])
def test_formats(tmp_path, ext):
    arr = np.zeros((384, 512, 3), np.uint8)  # already at network size: no resampling
    arr[...] = (200, 100, 50)
    kw = {"lossless": True} if ext == "webp" else {"quality": 100} if ext.startswith("jp") else {}
    p = _save(tmp_path / f"img.{ext.upper()}", arr, **kw)
    (im,) = load_images(tmp_path)  # folder: upper-case extension accepted
    assert im.true_shape == (384, 512)
    assert im.img.min() >= -1 and im.img.max() <= 1
    tol = 0 if ext in ("png", "bmp", "tiff", "tif", "webp") else 2 / 255 * 2
    exp = torch.tensor([_norm(200), _norm(100), _norm(50)]).view(3, 1, 1)
    assert (im.img - exp).abs().max() <= tol + 1e-7
    assert im.meta.path == str(p)


@pytest.mark.parametrize(
    "make, expected_rgb",
    [
        (lambda: Image.new("L", (512, 384), 77), (77, 77, 77)),
        (lambda: Image.new("1", (512, 384), 1), (255, 255, 255)),
        (lambda: Image.new("LA", (512, 384), (90, 0)), (90, 90, 90)),  # alpha dropped
        (lambda: Image.new("RGBA", (512, 384), (10, 20, 30, 0)), (10, 20, 30)),  # alpha dropped
        (lambda: Image.new("CMYK", (512, 384), (255, 0, 0, 0)), (0, 255, 255)),  # cyan
        (lambda: Image.new("CMYK", (512, 384), (0, 0, 0, 0)), (255, 255, 255)),
        (lambda: Image.new("I;16", (512, 384), 65535), (255, 255, 255)),  # scaled, not clipped
        (lambda: Image.new("I;16", (512, 384), 257 * 40), (40, 40, 40)),
        (lambda: Image.new("I", (512, 384), 257 * 100), (100, 100, 100)),
        (lambda: Image.new("F", (512, 384), 0.5), (128, 128, 128)),
    ],
    ids=["L", "1", "LA", "RGBA", "CMYK-cyan", "CMYK-white", "I16-max", "I16-40", "I32", "F"],
)
def test_modes(tmp_path, make, expected_rgb):
    img = make()
    ext = "tiff" if img.mode in ("CMYK", "I", "F") else "png"
    p = tmp_path / f"m.{ext}"
    img.save(p)
    assert Image.open(p).mode == img.mode
    (im,) = load_images(p)
    assert im.true_shape == (384, 512)
    exp = torch.tensor([_norm(c) for c in expected_rgb]).view(3, 1, 1)
    assert torch.equal(im.img, exp.expand_as(im.img))


def test_sixteen_bit_gradient_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 512).round().astype(np.uint16)
    p = tmp_path / "ramp16.png"
    Image.fromarray(np.tile(ramp, (384, 1))).save(p)
    assert Image.open(p).mode.startswith("I;16")
    (im,) = load_images(p)
    row = im.img[0, 0]
    assert row[0] == -1 and row[-1] == 1
    assert torch.all(row[1:] >= row[:-1])  # monotonic, spread over the full range
    assert abs(float(row[256])) < 0.02


def test_palette_images(tmp_path):
    img = Image.new("P", (512, 384))
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.paste(1, (0, 0, 512, 384))
    img.save(tmp_path / "pal.png", transparency=1)
    img.save(tmp_path / "pal.gif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (im,) = load_images(tmp_path / "pal.png")
        (gif,) = load_images([tmp_path / "pal.gif"])  # explicit path: any format Pillow reads
    exp = torch.tensor([_norm(10), _norm(200), _norm(30)]).view(3, 1, 1)
    assert torch.equal(im.img, exp.expand_as(im.img))
    assert torch.equal(gif.img, im.img)


def test_heic_without_pillow_heif(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(images_mod, "_HEIF_REGISTERED", False)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails
    (tmp_path / "a.heic").write_bytes(b"not really heic")
    _save(tmp_path / "b.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ImageLoadError, match=r"a\.heic.*pillow-heif"):
        load_images([tmp_path / "a.heic"])
    with caplog.at_level("WARNING", logger="pointmap"):
        loaded = load_images(tmp_path)
    assert re.search(r"a\.heic.*pillow-heif", caplog.text)
    assert len(loaded) == 1


def test_heic_opener_registered_lazily(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("pillow_heif")
    fake.register_heif_opener = lambda: calls.append(1)
    monkeypatch.setattr(images_mod, "_HEIF_REGISTERED", False)
    monkeypatch.setitem(sys.modules, "pillow_heif", fake)
    (tmp_path / "a.HEIF").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    assert [p.name for p in images_mod.list_image_files(tmp_path)] == ["a.HEIF", "b.png"]
    images_mod.list_image_files(tmp_path)
    assert calls == [1]


# ------------------------------------------------------------------ inputs and ordering


def test_folder_sorted_and_filtered(tmp_path):
    for name in ["b.png", "a.jpg", "C.PNG", "notes.txt", ".hidden.png", "z.json"]:
        (tmp_path / name).write_bytes(b"")
    for name in ["b.png", "C.PNG"]:
        _save(tmp_path / name, np.zeros((32, 32, 3), np.uint8))
    _save(tmp_path / "a.jpg", np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "sub.png").mkdir()
    loaded = load_images(tmp_path, size=224)
    assert [im.meta.path.rsplit("/", 1)[-1].rsplit("\\", 1)[-1] for im in loaded] == [
        "C.PNG",
        "a.jpg",
        "b.png",
    ]


def test_list_order_kept_and_single_path(tmp_path):
    a = _save(tmp_path / "a.png", np.zeros((40, 60, 3), np.uint8))
    b = _save(tmp_path / "b.png", np.zeros((60, 40, 3), np.uint8))
    loaded = load_images([str(b), a], size=512)
    assert [im.meta.path for im in loaded] == [str(b), str(a)]
    assert [im.true_shape for im in loaded] == [(512, 336), (336, 512)]
    assert len(load_images(str(a))) == 1


def test_verbose_prints(tmp_path, capsys):
    a = _save(tmp_path / "a.png", np.zeros((480, 640, 3), np.uint8))
    load_images(a, verbose=True)
    out = capsys.readouterr().out
    assert "a.png" in out and "640x480 -> 512x384" in out


def test_arrays_match_files(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(300, 410, 3), dtype=np.uint8)
    p = _save(tmp_path / "a.png", arr)
    (from_file,) = load_images(p)
    gray = arr[..., 0]
    out = load_image_arrays(
        [
            arr,
            Image.fromarray(arr),
            arr.astype(np.float32) / 255,
            (arr.astype(np.uint16) * 257),
            np.dstack([arr, np.full(arr.shape[:2], 7, np.uint8)]),
            gray[..., None],
        ]
    )
    for im in out[:5]:
        assert torch.equal(im.img, from_file.img)
    (gray_file,) = load_images(_save(tmp_path / "g.png", gray))
    assert torch.equal(out[5].img, gray_file.img)


@pytest.mark.parametrize(
    "bad, msg",
    [
        (np.zeros((4, 4, 2), np.uint8), r"#0 has shape"),
        (np.zeros((4,), np.uint8), r"#0 has shape"),
        (np.zeros((4, 4, 3), np.int64), r"#0 has dtype"),
        (torch.zeros(3, 4, 4), r"#0 is a torch.Tensor"),
    ],
)
def test_arrays_errors(bad, msg):
    with pytest.raises(ImageLoadError, match=msg):
        load_image_arrays([bad])
    with pytest.raises(ImageLoadError, match="empty"):
        load_image_arrays([])


# ------------------------------------------------------------------ errors


def test_error_corrupt_and_non_image(tmp_path):
    (tmp_path / "rand.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    (tmp_path / "text.png").write_text("hello, I am not a PNG")
    (tmp_path / "notes.txt").write_text("hello")
    for name in ["rand.jpg", "text.png", "notes.txt"]:
        with pytest.raises(ImageLoadError, match=rf"{name}.*(not an image format|corrupt)"):
            load_images(tmp_path / name)


def test_error_truncated(tmp_path):
    p = _save(
        tmp_path / "full.png", np.random.default_rng(1).integers(0, 256, (200, 200, 3), np.uint8)
    )
    data = p.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.png.*(corrupt|truncated)"):
        load_images(tmp_path / "cut.png")


def test_error_missing_and_empty(tmp_path):
    with pytest.raises(ImageLoadError, match=r"not found.*nope\.jpg"):
        load_images(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match=r"not found.*nope\.jpg"):
        load_images([tmp_path / "nope.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageLoadError, match=r"no images found in folder .*empty"):
        load_images(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("x")
    with pytest.raises(ImageLoadError, match=r"no images found"):
        load_images(tmp_path / "text")
    with pytest.raises(ImageLoadError, match=r"empty"):
        load_images([])
    with pytest.raises(ImageLoadError, match=r"is a folder"):
        load_images([tmp_path / "text"])


@pytest.mark.parametrize("wh", [(40, 40), (100, 100)])  # Pillow's warning band (1-2x), error band (>2x)
def test_error_decompression_bomb(tmp_path, monkeypatch, wh):
    p = _save(tmp_path / "bomb.png", np.zeros((wh[1], wh[0], 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            ImageLoadError, match=rf"bomb\.png: {wh[0] * wh[1]} pixels.*limit of 1000.*--max-pixels"
        ):
            load_images(p, max_pixels=1000)
    # pointmap's bound, not Pillow's global guard, decides; and Pillow's is left as it was
    big = _save(tmp_path / "big.png", np.zeros((400, 400, 3), np.uint8))  # 160000 > 2 x 60000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60000)
    assert load_images(big, size=224)[0].meta.original_size == (400, 400)
    assert Image.MAX_IMAGE_PIXELS == 60000


@pytest.mark.parametrize("orientation", [1, 2, 6, 7])
def test_large_jpeg_decoded_reduced_keeps_the_original_geometry(tmp_path, monkeypatch, orientation):
    """A JPEG above the reduced-decode threshold (lowered here) gives the same meta (original
    size, resize, crop) as a full decode and nearly the same pixels, whatever its EXIF orientation;
    1603 x 1201 is not a multiple of the decoder's 8-pixel scale, so the last reduced pixel is
    partial and must not shift the picture."""
    from pointmap import images as images_mod

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1201, 0:1603]
    arr = np.stack([(xx * 255 // 1602), (yy * 255 // 1200), ((xx // 100 + yy // 100) % 2) * 255], -1)
    arr = np.clip(arr + rng.integers(-3, 4, arr.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "big.jpg"
    Image.fromarray(arr).save(path, quality=95, exif=exif.tobytes())
    full = load_images(path, size=224)[0]
    monkeypatch.setattr(images_mod, "REDUCED_DECODE_ABOVE", 1000)
    reduced = load_images(path, size=224)[0]
    assert reduced.meta == full.meta
    assert reduced.meta.original_size == ((1201, 1603) if orientation in (6, 7) else (1603, 1201))
    diff = (reduced.img - full.img).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.5


def test_error_too_small(tmp_path):
    thin = _save(tmp_path / "thin.png", np.zeros((10, 2000, 3), np.uint8))  # -> 512x3
    with pytest.raises(ImageLoadError, match=r"thin\.png \(2000x10 pixels\) is too small"):
        load_images(thin)
    needle = _save(tmp_path / "needle.png", np.zeros((3000, 1, 3), np.uint8))  # -> 0x512
    with pytest.raises(ImageLoadError, match=r"needle\.png.*too small"):
        load_images(needle)
    with pytest.raises(ImageLoadError, match="image size"):
        load_images(thin, size=8)


def test_skip_bad(tmp_path, caplog):
    good = _save(tmp_path / "good.png", np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    with caplog.at_level("WARNING", logger="pointmap"):
        loaded = load_images([tmp_path / "bad.jpg", good, tmp_path / "missing.png"], skip_bad=True)
    assert [im.meta.path for im in loaded] == [str(good)]
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert re.match(r"skipping .*bad\.jpg", msgs[0]) and re.match(
        r"skipping .*missing\.png", msgs[1]
    )
    with pytest.raises(ImageLoadError, match="none of the 1"):
        load_images([tmp_path / "bad.jpg"], skip_bad=True)
    with pytest.raises(ImageLoadError, match=r"bad\.jpg"):
        load_images(tmp_path)


def test_preprocess_image_direct():
    out = preprocess_image(Image.new("RGB", (64, 48), (255, 0, 0)), size=224, path="x")
    assert out.true_shape == (224, 224) and out.meta.path == "x"
    assert torch.equal(out.img[0], torch.ones(224, 224)) and torch.equal(
        out.img[1], -torch.ones(224, 224)
    )
