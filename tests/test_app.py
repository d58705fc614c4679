"""End-to-end test of the web app in headless Chromium (Playwright), plus its upload checks."""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from spawn_ranks import free_port

gr = pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from pointmap.app import AppLimits, UploadError, check_uploads, scene_graph

CHROMIUM = Path("/usr/bin/chromium")
EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "src" / "pointmap" / "examples" / "room").glob("*.jpg"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
RUN_TIMEOUT_MS = 240_000


def _text_as_jpg(folder: Path) -> Path:
    p = folder / "not_really.jpg"
    p.write_text("this is plain text, not a JPEG\n" * 10)
    return p


def _big_png(folder: Path, megabytes: float) -> Path:
    """A valid PNG of noise larger than ``megabytes``."""
    side = int(np.sqrt(megabytes * 1e6 / 3)) + 64
    arr = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    p = folder / "big.png"
    Image.fromarray(arr).save(p)
    return p


# --------------------------------------------------------------------------- unit checks

def test_check_uploads_by_content(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    limits = AppLimits(max_images=4, max_upload_mb=1.0)
    ok = check_uploads([EXAMPLES[0], EXAMPLES[1]], staging, limits)
    assert [u.kind for u in ok] == ["image", "image"]
    # copies under fresh names, never the upload's name
    assert [u.path.name for u in ok] == ["image_000.jpg", "image_001.jpg"]
    assert all(u.path.parent == staging for u in ok)
    assert ok[0].path.read_bytes() == EXAMPLES[0].read_bytes()
    with pytest.raises(UploadError, match="not_really.jpg.*neither an image nor a video"):
        check_uploads([EXAMPLES[0], _text_as_jpg(tmp_path)], staging, limits)
    with pytest.raises(UploadError, match=r"big.png.*limit is 1 MB"):
        check_uploads([_big_png(tmp_path, 1.5)], staging, limits)
    with pytest.raises(UploadError, match="at most 4"):
        check_uploads(EXAMPLES[:1] * 5, staging, limits)
    with pytest.raises(UploadError, match="no files"):
        check_uploads([], staging, limits)


def _video(folder: Path, n_frames: int = 20, fps: float = 10.0) -> Path:
    import cv2

    p = folder / "clip.avi"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for k in range(n_frames):
        frame = np.full((48, 64, 3), 10 * k, np.uint8)
        w.write(frame)
    w.release()
    return p


def test_video_upload(tmp_path):
    from pointmap.app import _load, estimate_uploads

    staging = tmp_path / "staging"
    staging.mkdir()
    limits = AppLimits(max_images=8, max_upload_mb=5.0)
    clip = _video(tmp_path)  # 20 frames at 10 fps = 2 s
    ups = check_uploads([clip], staging, limits)
    assert [u.kind for u in ups] == ["video"]
    images = _load(ups, 224, 2.0, limits)  # one frame in 5 -> frames 0, 5, 10, 15
    assert len(images) == 4
    assert "about 4 frames" in estimate_uploads([clip], "complete", 2.0, limits)
    assert "**12 pairs**" in estimate_uploads([clip], "complete", 2.0, limits)
    with pytest.raises(UploadError, match="not a mix"):
        check_uploads([clip, EXAMPLES[0]], staging, limits)


def test_scene_graph_strings():
    assert scene_graph("complete", 7) == "complete"
    assert scene_graph("swin", 2) == "swin-2"
    assert scene_graph("oneref", 0) == "oneref-0"


# --------------------------------------------------------------------------- browser test

@pytest.fixture(scope="module")
def app_url():
    if not CHROMIUM.exists():
        pytest.skip("no system Chromium at /usr/bin/chromium")
    from pointmap.app import launch

    port = free_port()
    demo = launch(host="127.0.0.1", port=port, max_images=8, max_upload_mb=0.5, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000}, accept_downloads=True,
        )
        pg = ctx.new_page()
        pg.goto(app_url, wait_until="domcontentloaded", timeout=60_000)
        pg.locator("#run").wait_for(timeout=60_000)
        yield pg
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


def _upload(page, files):
    page.locator("#uploads input[type=file]").set_input_files([str(f) for f in files])
    # wait until the upload shows in the file list
    page.wait_for_function(
        "n => document.querySelectorAll('#uploads tr.file, #uploads .file-preview tr').length >= n",
        arg=len(files), timeout=60_000,
    )


def _wait_until_drawn(page, canvas, timeout_s: float = 60.0) -> None:
    """Wait until ``canvas`` shows a drawn picture: not a flat fill, and the same in two
    successive screenshots (the renderer has settled)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"), dtype=np.float64)
        drawn = shot.std() > 2.0
        if drawn and last is not None and last.shape == shot.shape and np.abs(shot - last).mean() < 0.5:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the 3D view did not finish drawing within {timeout_s:.0f} s "
                                 f"(luminance std {shot.std():.2f})")
        last = shot
        page.wait_for_timeout(250)  # polling interval


def _clear_uploads(page):
    btn = page.locator("#uploads button[aria-label='Clear']")
    if btn.count():
        btn.first.click()


def test_app_end_to_end(page, tmp_path):
    import trimesh

    _upload(page, EXAMPLES[:3])
    sync_api.expect(page.locator("#estimate")).to_contain_text("6 pairs", timeout=20_000)
    page.locator("#run").click()
    sync_api.expect(page.locator("#status")).to_contain_text("Done.", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.locator("#status")).to_contain_text("3/3 images placed")
    # the GLB offered for download parses with 3 cameras
    link = page.locator("#downloads a[href*='scene.glb']").first
    href = link.get_attribute("href")
    assert href
    resp = page.request.get(href if href.startswith("http") else page.url.rstrip("/") + href)
    assert resp.ok
    glb = trimesh.load(io.BytesIO(resp.body()), file_type="glb")
    cams = [n for n in glb.graph.nodes if re.fullmatch(r"camera_\d{3,}", str(n))]
    assert len(cams) == 3
    # the 3D view received a model, the gallery shows depth + confidence per image
    sync_api.expect(page.locator("#view canvas").first).to_be_visible(timeout=30_000)
    view_href = page.locator("#view [data-testid=model3d-download-link]").get_attribute("href")
    assert view_href and view_href.endswith("scene.glb")
    assert page.locator("#maps img").count() == 6  # depth + confidence for each of the 3 images
    _wait_until_drawn(page, page.locator("#view canvas").first)  # software WebGL draws slowly
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    artifacts = os.environ.get("POINTMAP_ARTIFACTS")  # keep the screenshot (CI artifact)
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "app_e2e.png")
    docs = Path(__file__).resolve().parents[1] / "docs"
    if os.environ.get("POINTMAP_UPDATE_SCREENSHOT") and docs.is_dir():
        im = Image.open(shot).convert("RGB")
        im.thumbnail((960, 960))
        im.quantize(colors=128).save(docs / "app_screenshot.png", optimize=True)

    # a display option re-renders from the stored scene (no new reconstruction)
    page.get_by_label("Mesh instead of point cloud").check()
    sync_api.expect(page.locator("#status")).to_contain_text("Updated view", timeout=60_000)
    sync_api.expect(page.locator("#downloads a[href*='render_002']").first).to_be_attached(timeout=30_000)


def test_app_adds_photos_to_the_reconstruction_it_shows(page):
    """Run after the end-to-end test: a fourth photo added to its three (pointmap extend's code)."""
    import trimesh

    page.get_by_text("Add photos to this reconstruction").click()
    page.locator("#add_uploads input[type=file]").set_input_files([str(EXAMPLES[3])])
    page.wait_for_function("() => document.querySelectorAll('#add_uploads tr.file, #add_uploads .file-preview tr')"
                           ".length >= 1", timeout=60_000)
    page.locator("#add").click()
    sync_api.expect(page.locator("#status")).to_contain_text("Added 1 photo", timeout=RUN_TIMEOUT_MS)
    # the new photo with each of the 3 (fewer than 10 old images: all), both ways; all 4 placed
    sync_api.expect(page.locator("#status")).to_contain_text("to 3 (6 new pairs")
    sync_api.expect(page.locator("#status")).to_contain_text("4/4 images placed")
    sync_api.expect(page.locator("#maps img")).to_have_count(8, timeout=30_000)
    href = page.locator("#downloads a[href*='scene.glb']").first.get_attribute("href")
    assert href and "render_001" in href  # the folder the photos were added to
    resp = page.request.get(href if href.startswith("http") else page.url.rstrip("/") + href)
    glb = trimesh.load(io.BytesIO(resp.body()), file_type="glb")
    assert len([n for n in glb.graph.nodes if re.fullmatch(r"camera_\d{3,}", str(n))]) == 4


def test_app_extend_request_builds_on_the_shown_run(tmp_path):
    from pointmap.app import app_extend_request, app_request

    base = app_request([tmp_path / "image_000.jpg"], ["a.jpg"], tmp_path / "render_001", size=224,
                       graph_kind="swin", k=2)
    assert base.store.mode == "on" and base.store.folder is None  # the run keeps its store for additions
    assert "cameras" in base.export.formats and "depth" in base.export.formats
    req = app_extend_request([tmp_path / "added001_000.jpg"], tmp_path / "render_001", base, conf=2.0, mesh=True)
    assert req.inputs.paths == [str(tmp_path / "added001_000.jpg")]
    assert (req.model, req.graph, req.align) == (base.model, base.graph, base.align)
    assert req.export.output == str(tmp_path / "render_001") and req.export.overwrite and req.export.mesh
    assert req.export.formats == base.export.formats and req.post.conf_threshold == 2.0


def test_app_refuses_non_image(page, tmp_path):
    _clear_uploads(page)
    _upload(page, [EXAMPLES[0], _text_as_jpg(tmp_path)])
    page.locator("#run").click()
    sync_api.expect(page.locator("#status")).to_contain_text("neither an image nor a video", timeout=60_000)
    sync_api.expect(page.locator("#status")).to_contain_text("not_really.jpg")


def test_app_refuses_oversized(page, tmp_path):
    _clear_uploads(page)
    _upload(page, [_big_png(tmp_path, 0.8)])
    page.locator("#run").click()
    sync_api.expect(page.locator("#status")).to_contain_text("limit is 0.5 MB", timeout=60_000)
