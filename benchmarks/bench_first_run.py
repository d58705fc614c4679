"""Benchmark the first run a user makes: ``import pointmap``, the command line on the bundled example
scene (5 photos, 224, bundled model, every export format) as a separate process, and the export
stage alone (in process, repeated).

Each measure is the best of ``--repeat`` runs (wall time, and CPU time of the process where it
applies); run it on an otherwise idle machine::

    python benchmarks/bench_first_run.py --repeat 3 --json bench_first_run.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "pointmap" / "examples" / "room"


def _timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall and CPU (user + sys of the child) seconds of a subprocess, and its stdout."""
    before = os.times()
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    py = sys.executable
    res: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version()}

    imp = [_timed([py, "-c", "import pointmap"]) for _ in range(args.repeat)]
    res["import_pointmap_s"] = min(w for w, _, _ in imp)

    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu, out = _timed([py, "-m", "pointmap", "reconstruct", str(EXAMPLE), "-o", f"{tmp}/out", "-q"])
        stages = dict(re.findall(r"(\w+) ([\d.]+)s", out.split("time:", 1)[1].splitlines()[0]))
        runs.append({"wall_s": wall, "cpu_s": cpu, **{f"{k}_s": float(v) for k, v in stages.items()}})
    best = min(runs, key=lambda r: r["wall_s"])
    res["reconstruct_process"] = best
    res["reconstruct_process_outside_timed_s"] = best["wall_s"] - best["total_s"]

    import torch

    from pointmap.align import clean_pointcloud
    from pointmap.api import reconstruct
    from pointmap.export import export_scene

    scene = clean_pointcloud(reconstruct(str(EXAMPLE)).scene)
    walls, cpus = [], []
    for _ in range(args.repeat):
        tmp = tempfile.mkdtemp()
        t, c = time.perf_counter(), time.process_time()
        export_scene(scene, Path(tmp) / "out")
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        shutil.rmtree(tmp)
    res["export_in_process"] = {"wall_s": min(walls), "cpu_s": min(cpus), "threads": torch.get_num_threads()}
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
