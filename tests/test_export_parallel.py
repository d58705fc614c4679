"""Exports on a pool of threads: the same bytes as the plain serial loop (``workers=1``), the
images in order, the first error raised with nothing half-written."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from pointmap.errors import PointmapError
from pointmap.export import FORMATS, export_scene
from pointmap.export import depth as depth_mod
from pointmap.export.common import export_workers, image_colours, image_points, map_images, rgb_uint8

from export_scenes import H, W, make_scene


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("opts", [
    {},  # point clouds, network-resolution depth
    {"as_pointcloud": False, "depth_resolution": "original", "normals": True},
    {"cloud_max_points": 300},  # sampled clouds: the seeds follow the image, not the thread
])
def test_pool_writes_the_same_bytes_as_the_serial_loop(tmp_path, opts):
    scene = make_scene(n=7, placed=[True, True, False, True, True, True, True])
    export_scene(scene, tmp_path / "serial", formats=FORMATS, workers=1, **opts)
    export_scene(scene, tmp_path / "pool", formats=FORMATS, workers=4, **opts)
    serial, pool = _files(tmp_path / "serial"), _files(tmp_path / "pool")
    assert len(serial) > 40 and serial.keys() == pool.keys()
    assert [k for k in serial if serial[k] != pool[k]] == []


def test_map_images_keeps_order_and_uses_threads():
    seen = set()

    def fn(k):
        seen.add(threading.get_ident())
        return k * k

    ticks = []
    assert map_images(fn, 50, workers=4, done=lambda: ticks.append(1)) == [k * k for k in range(50)]
    assert len(ticks) == 50 and threading.get_ident() not in seen
    seen.clear()
    assert map_images(fn, 5, workers=1) == [0, 1, 4, 9, 16] and seen == {threading.get_ident()}
    assert export_workers(3) == 3 and export_workers() >= 1
    with pytest.raises(PointmapError, match="workers must be 1 or more"):
        export_workers(0)


def test_bad_worker_count_is_refused_before_any_work(tmp_path):
    with pytest.raises(PointmapError, match="workers must be 1 or more, got 0"):
        export_scene(make_scene(), tmp_path / "out", workers=0)
    assert list(tmp_path.iterdir()) == []


def test_error_in_one_image_leaves_no_output(tmp_path, monkeypatch):
    scene = make_scene(n=6)
    real = depth_mod._write_image_maps

    def fail_on_four(scene, k, *args):
        if k == 4:
            raise RuntimeError("simulated failure in image 4")
        return real(scene, k, *args)

    monkeypatch.setattr(depth_mod, "_write_image_maps", fail_on_four)
    with pytest.raises(RuntimeError, match="image 4"):
        export_scene(scene, tmp_path / "out", formats=("depth", "ply"), workers=3)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert [p.name for p in tmp_path.iterdir() if p.name != "out"] == []


def test_points_and_colours_of_chosen_pixels_are_those_of_the_whole_image():
    scene = make_scene(n=3)
    idx = np.array([0, 5, 77, H * W - 1])
    for k in range(3):
        assert np.array_equal(image_points(scene, k, idx), image_points(scene, k).reshape(-1, 3)[idx])
        assert np.array_equal(image_colours(scene, k, idx), rgb_uint8(scene.imgs[k]).reshape(-1, 3)[idx])


def test_torch_runs_on_one_thread_per_image_and_gets_its_threads_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert map_images(lambda k: torch.get_num_threads(), 4, workers=2) == [1, 1, 1, 1]
        assert map_images(lambda k: torch.get_num_threads(), 2, workers=1) == [1, 1]
        assert torch.get_num_threads() == 2

        def fail(k):
            raise RuntimeError("simulated failure")

        with pytest.raises(RuntimeError, match="simulated"):
            map_images(fail, 3, workers=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_unchanged_images_are_carried_over_not_written(tmp_path):
    scene = make_scene(n=4)
    out = tmp_path / "out"
    export_scene(scene, out, formats=("depth", "cameras"), workers=2)
    mine = sorted(p.relative_to(out).as_posix() for p in (out / "depth").iterdir() if p.name.startswith(
        scene.names[1]))
    assert len(mine) == 6
    before = {f: (out / f).stat().st_ino for f in mine}
    export_scene(scene, out, formats=("depth", "cameras"), overwrite=True, unchanged=[1])
    assert {f: (out / f).stat().st_ino for f in mine} == before  # the same files, not written again
    fresh = tmp_path / "fresh"
    export_scene(scene, fresh, formats=("depth", "cameras"))
    assert all((out / f).read_bytes() == (fresh / f).read_bytes() for f in [*mine, "depth/depth.json"])
    (out / mine[0]).unlink()
    kept = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(PointmapError, match="to keep"):
        export_scene(scene, out, formats=("depth", "cameras"), overwrite=True, unchanged=[1])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == kept  # nothing half-written
