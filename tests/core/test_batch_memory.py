"""A batch worker's host memory over many videos: nothing is left behind per video.

The growth measured in a worker that tracks video after video (docs/performance.md,
Batch; ``benchmarks/batch_memory.py``) was CPython's small-object allocator keeping
1 MiB arenas: the skeleton CSV was written and read back as one Python string per cell
(~1.6 million objects for a 150-frame, 5-worm video), and each video left a few
long-lived objects in arenas that peak had opened. The CSV is now written and read in
bounded chunks, so the peak no longer grows with the video's length.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_sam2_worms
from fixtures.plates import write_prompts
from napari_sam2_worms.synthetic import make_plate

SRC = str(Path(napari_sam2_worms.__file__).resolve().parents[1])

# Writes then reads a skeleton CSV of FRAMES x 5 objects x 49 points in a fresh
# interpreter and prints how many pymalloc arenas (1 MiB each) each step opened.
_PEAK_SCRIPT = r"""
import json, os, re, sys, tempfile
import numpy as np
from napari_sam2_worms.skeleton import read_csv, write_csv
from napari_sam2_worms.tracks import FEATURE_NAMES, SkeletonTracks

def highwater():
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode()
    m = re.search(r"# arenas highwater mark\s*=\s*([\d,]+)", text)
    return int(m[1].replace(",", "")) if m else -1  # -1: not pymalloc (mimalloc...)

frames, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
t = SkeletonTracks.empty(frames, [1, 2, 3, 4, 5], 49, fps=15.0, pixel_size=2.5)
t.points[:] = rng.random(t.points.shape, np.float32) * 300
t.widths[:] = rng.random(t.widths.shape, np.float32) * 9
t.good[:] = rng.random(t.good.shape) > 0.2
t.reason[~t.good] = "short"
t.reason[t.good] = ""
for name in FEATURE_NAMES:
    t.features[name][:] = rng.random(t.good.shape, np.float32)
t.flipped[::7] = True
h0 = highwater()
if h0 < 0:
    print(json.dumps({"pymalloc": False}))
    sys.exit(0)
write_csv(t, path)
h1 = highwater()
back = read_csv(path)
h2 = highwater()
same = bool(
    np.array_equal(back.points, t.points)
    and np.array_equal(back.widths, t.widths)
    and np.array_equal(back.good, t.good)
    and (back.reason == t.reason).all()
    and np.array_equal(back.flipped, t.flipped)
    and all(np.array_equal(back.features[n], t.features[n]) for n in FEATURE_NAMES)
)
print(json.dumps({"write": h1 - h0, "read": h2 - h1, "same": same}))
"""


def _pymalloc_in_use() -> bool:
    return (
        sys.implementation.name == "cpython"
        and hasattr(sys, "_debugmallocstats")
        and os.environ.get("PYTHONMALLOC", "pymalloc").startswith("pymalloc")
    )


@pytest.mark.skipif(not _pymalloc_in_use(), reason="needs CPython's pymalloc allocator")
def test_skeleton_csv_small_object_peak_does_not_grow_with_the_video(tmp_path):
    """Writing and reading a 300-frame, 5-worm CSV opens a few arenas, not one per cell batch.

    Before the chunked CSV the write opened ~60 arenas (MiB) and the read ~85 for this
    size (twice as many for twice the frames); each is now bounded by the chunk size.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, "300", str(tmp_path / "skeletons.csv")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    if doc.get("pymalloc") is False:
        pytest.skip("this interpreter's small objects are not in pymalloc arenas")
    assert doc["same"], "the chunked CSV does not round-trip"
    assert doc["write"] <= 16, f"write_csv opened {doc['write']} MiB of pymalloc arenas"
    assert doc["read"] <= 16, f"read_csv opened {doc['read']} MiB of pymalloc arenas"


def _process_state() -> dict:
    import psutil

    proc = psutil.Process()
    return {
        "threads": sorted(t.name for t in threading.enumerate()),
        "tasks": len(os.listdir("/proc/self/task")),
        "fds": sorted(os.listdir("/proc/self/fd")),
        # multiprocessing's resource tracker is one helper per process, started once
        "children": [
            c.pid
            for c in proc.children(recursive=True)
            if c.is_running() and "resource_tracker" not in " ".join(c.cmdline())
        ],
    }


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
@pytest.mark.parametrize("skeleton_workers", [0, 1])
def test_process_video_leaves_no_threads_fds_or_processes(tmp_path, skeleton_workers):
    """Three videos in a row: the same threads, descriptors and child processes after each.

    With a skeleton worker the pool's processes and its ring thread are started for each
    video and must be gone when the video is done.
    """
    from napari_sam2_worms.batch import task

    videos = []
    for i in range(3):
        plate = make_plate(n_frames=6, height=96, width=128, n_worms=2, seed=10 + i)
        path = tmp_path / f"v{i}.tif"
        tifffile.imwrite(path, plate.video)
        prompts = write_prompts(tmp_path / f"v{i}.prompts.json", plate, 0)
        videos.append((path, prompts))
    opts = {"backend": "classic", "points": 25, "skeleton_workers": skeleton_workers}
    states = []
    for path, prompts in videos:
        job = {"key": str(path), "video": str(path), "name": path.stem, "init": "prompts",
               "prompts": str(prompts), "session": None}  # fmt: skip
        res = task.process_video(job, str(tmp_path / "out"), opts)
        assert res["status"] == "done", res.get("error")
        states.append(_process_state())
    assert states[1] == states[0]
    assert states[2] == states[0]
    assert states[0]["children"] == [], "skeleton worker processes outlived their video"
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert names == ["thumbnails", "v0", "v1", "v2"]


def test_benchmark_loop_reports_the_allocators(tmp_path):
    """``benchmarks/batch_memory.py`` runs and records RSS, heap and arena counts per video."""
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "batch_memory.py"
    if not bench.is_file():
        pytest.skip("benchmarks/ is not part of this installation")
    out = tmp_path / "m.json"
    subprocess.run(
        [sys.executable, str(bench), "--videos", "3", "--frames", "6", "--size", "60x80",
         "--data", str(tmp_path / "d"), "--json", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    doc = json.loads(out.read_text())
    assert [s["video"] for s in doc["samples"]] == [0, 1, 2, 3]
    last = doc["samples"][-1]
    assert last["rss"] > 0 and last["fds"] > 0 and last["threads"] >= 1
    if _pymalloc_in_use():
        assert last["py_arenas"] >= 1 and last["py_arenas_max"] >= last["py_arenas"]
    assert re.fullmatch(r"[\d.]+", str(doc["seconds"]))
    assert np.isfinite(doc["growth_per_video_second_half"]["rss"])


def test_batch_workers_run_without_dask_profile_history():
    """The batch's LocalCluster workers keep no profiler history (it grew ~160 KB a second).

    Dask's statistical profiler keeps a call tree per second of work for 1,000 seconds:
    a worker tracking videos grew by ~0.6 MB per 150-frame video until then. The SLURM
    recipe's jobs start their workers with the profiler off too.
    """
    pytest.importorskip("distributed", reason="the batch extra is not installed")
    import time

    from distributed import Client

    from napari_sam2_worms.batch.cluster import local_cluster

    cluster, _ = local_cluster(1, [], dashboard_address=None)
    with cluster, Client(cluster) as client:
        client.submit(time.sleep, 2.5, pure=False).result()  # over two profile cycles
        kept = client.run(lambda dask_worker: len(dask_worker.profile_history))
        assert list(kept.values()) == [0]
    cluster, _ = local_cluster(1, [], dashboard_address=None, profile=True)
    with cluster, Client(cluster) as client:  # the switch is what makes the difference
        client.submit(time.sleep, 2.5, pure=False).result()
        kept = client.run(lambda dask_worker: len(dask_worker.profile_history))
        assert next(iter(kept.values())) >= 1
    if importlib.util.find_spec("dask_jobqueue") is not None:
        from napari_sam2_worms.batch.cluster import slurm_cluster

        slurm = slurm_cluster(queue="gpu", walltime="01:00:00", memory="8GB")
        try:
            script = slurm.job_script()
        finally:
            slurm.close()
        assert "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False" in script.splitlines()


def test_restarted_batch_workers_keep_their_settings(monkeypatch):
    """A worker the nanny restarts (over its memory limit, after a crash) comes back
    non-daemonic and without the profiler, as the batch runner holds the settings (before:
    daemonic, so no skeleton processes, and with the profiler on again)."""
    pytest.importorskip("distributed", reason="the batch extra is not installed")
    import multiprocessing

    import dask
    from distributed import Client

    from napari_sam2_worms.batch.cluster import local_cluster, worker_config

    def probe(dask_worker):
        return multiprocessing.current_process().daemon, "profile" in dask_worker.periodic_callbacks

    with dask.config.set(worker_config()):  # as batch.runner does for its own cluster
        cluster, _ = local_cluster(1, [], dashboard_address=None)
        with cluster, Client(cluster) as client:
            assert list(client.run(probe).values()) == [(False, False)]
            client.restart()
            assert list(client.run(probe).values()) == [(False, False)]
    # and the runner holds them while its own cluster runs (not around a --scheduler's)
    from napari_sam2_worms.batch import runner

    seen = []

    def capture(*args, **kwargs):
        seen.append(
            (
                dask.config.get("distributed.worker.daemon"),
                dask.config.get("distributed.worker.profile.enabled"),
            )
        )

    monkeypatch.setattr(runner, "_run_on_cluster", capture)
    for scheduler in (None, "tcp://127.0.0.1:1"):
        runner._run_jobs([], "out", None, None, None, scheduler, 1, "none", None, False, print)
    assert seen[0] == (False, False)
    assert seen[1] == (
        dask.config.get("distributed.worker.daemon", True),
        dask.config.get("distributed.worker.profile.enabled"),
    )
