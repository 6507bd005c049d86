"""Host memory of one process that tracks many videos in a row: where does it grow?

Calls the batch worker's code (:func:`napari_sam2_worms.batch.task.process_video`, or
its stages up to ``--stage``) on ``--videos`` synthetic plates one after the other in
this process (no Dask), and after each video records:

- resident memory (psutil RSS; ``Anonymous`` and ``Private_Dirty`` from
  ``/proc/self/smaps_rollup``),
- glibc's heap (``mallinfo2``: bytes in use ``inuse``, free but kept ``free``, the
  mmapped blocks ``mmap``) and its arena count (``malloc_info``),
- Python's allocated blocks (``sys.getallocatedblocks``), gc objects, threads
  (``threading.enumerate`` and ``/proc/self/task``), open file descriptors and
  ``sys.modules``,

then prints a table and the growth per video over the second half of the run (after
warm-up). A real leak grows ``inuse``; fragmentation grows ``free`` or RSS with
``inuse`` flat; a thread, fd or module leak shows in its count.

Stages (``--stage``, cumulative; the difference between two stages is what the later
one adds): ``open`` (open the video, read every frame, make the session, close),
``prompts``, ``track`` (propagate), ``write`` (the run folder), ``full``
(:func:`process_video` itself: thumbnail, metrics, ``gc``, ``malloc_trim``).
``--dask`` runs ``full`` on one worker of the batch's LocalCluster instead and adds the
sizes of the worker's own records (its profiler history, its logs).

The allocator's knobs are environment variables read at start, so set them on the
command line, e.g. ``MALLOC_ARENA_MAX=2``. ``--child`` repeats the run in a fresh
process per setting and prints one summary line each.

Examples::

    # 40 tiny distinct videos, the whole worker path
    python3 benchmarks/batch_memory.py --videos 40 --frames 20 --size 60x80
    # the batch's case: 20 videos of 150 frames on one Dask worker (Dask's profiler
    # on, as before the fix: add --dask-profile)
    python3 benchmarks/batch_memory.py --dask --videos 20 --frames 150 \\
        --base-frames 30 --size 240x320 --worms 5 -v
    # which stage grows (one line per stage, each in a fresh process)
    python3 benchmarks/batch_memory.py --videos 24 --frames 60 --size 120x160 \\
        --child stages
    # allocator settings (fresh process each)
    python3 benchmarks/batch_memory.py --videos 24 --frames 60 --size 120x160 \\
        --child env
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("open", "prompts", "track", "write", "full")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


LIBC = _libc()


def _arenas() -> int | None:
    """Count glibc's malloc arenas (``malloc_info``'s ``<heap nr=...>`` entries)."""
    if LIBC is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        fp = LIBC.fopen(f.name.encode(), b"w")
        if not fp:
            return None
        LIBC.malloc_info(0, fp)
        LIBC.fclose(fp)
        return len(re.findall(r"<heap nr=", Path(f.name).read_text()))


def pymalloc() -> dict[str, float]:
    """Python's small-object allocator now: its 1 MiB arenas (current, highest) and use.

    From ``sys._debugmallocstats`` (CPython), which writes to the C stderr.
    """
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
        text = f.read().decode(errors="replace")

    def get(key: str) -> int:
        m = re.search(re.escape(key) + r"\s*=\s*([\d,]+)", text)
        return int(m[1].replace(",", "")) if m else -1

    return {
        "py_arenas": get("# arenas allocated current"),
        "py_arenas_max": get("# arenas highwater mark"),
        "py_blocks_mb": get("# bytes in allocated blocks") / 2**20,
    }


def _smaps() -> dict[str, float]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].rstrip(":") in ("Anonymous", "Private_Dirty"):
                out[parts[0].rstrip(":").lower()] = int(parts[1]) / 1024
    return out


def sample() -> dict[str, Any]:
    """Measure this process's memory, heap, threads and descriptors now (MB)."""
    import psutil

    s: dict[str, Any] = {"rss": psutil.Process().memory_info().rss / 2**20}
    s.update(_smaps())
    if LIBC is not None:
        mi = LIBC.mallinfo2()
        s.update(
            inuse=(mi.uordblks) / 2**20,
            free=mi.fordblks / 2**20,
            mmap=mi.hblkhd / 2**20,
            arenas=_arenas(),
        )
    s.update(pymalloc())
    s.update(
        pyblocks=sys.getallocatedblocks(),
        gc_objects=len(gc.get_objects()),
        threads=threading.active_count(),
        tasks=len(os.listdir("/proc/self/task")),
        fds=len(os.listdir("/proc/self/fd")),
        modules=len(sys.modules),
    )
    return s


def run_stages(job: dict, out: Path, options: dict, upto: str) -> None:
    """Run :func:`process_video`'s pieces up to ``upto`` (see the module docstring)."""
    from napari_sam2_worms.batch import task
    from napari_sam2_worms.engine.pipeline import write_run
    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.video import open_video

    if upto == "full":
        res = task.process_video(job, str(out), options)
        if res["status"] != "done":
            raise SystemExit(f"{job['name']}: {res['error']}")
        return
    level = STAGES.index(upto)
    backend = task._backend(options)
    video = open_video(job["video"])
    session = TrackingSession(video, backend)
    try:
        for i in range(session.n_frames):
            video[i]
        if level >= 1:
            task._apply_prompts_file(session, job)
        if level >= 2:
            for _ in session.propagate("both"):
                pass
        if level >= 3:
            write_run(session, out / job["name"], n_points=49, workers=0)
    finally:
        session.close()
        with contextlib.suppress(Exception):
            video.close()
    gc.collect()
    task.trim_host_memory()


def _worker_sample(bench_dir: str, dask_worker=None) -> dict[str, Any]:
    """Run :func:`sample` in a Dask worker, with the sizes of the worker's own records."""
    sys.path.insert(0, bench_dir)
    import batch_memory

    s = batch_memory.sample()
    if dask_worker is not None:
        w = dask_worker
        for name, obj in (
            ("profile_history", w.profile_history),
            ("profile_keys", w.profile_keys),
            ("state_log", w.state.log),
            ("stimulus_log", w.state.stimulus_log),
            ("worker_tasks", w.state.tasks),
            ("digests", getattr(w, "digests_total", {})),
        ):
            s[name] = len(obj)
    return s


def run_dask(args, videos: list[Path], root: Path, options: dict) -> list[dict]:
    """Track the videos one after the other on one LocalCluster worker (the batch's)."""
    from distributed import Client

    from napari_sam2_worms.batch.cluster import local_cluster
    from napari_sam2_worms.batch.task import process_video

    bench_dir = str(Path(__file__).resolve().parent)
    cluster, _ = local_cluster(1, [], dashboard_address=None, profile=args.dask_profile)
    samples = []
    try:
        with Client(cluster) as client:
            samples.append(dict(client.run(_worker_sample, bench_dir).popitem()[1], video=0))
            for i, job in enumerate(_jobs(args, videos, root)):
                fut = client.submit(process_video, job, str(root / "out"), options, pure=False)
                res = fut.result()
                if res["status"] != "done":
                    raise SystemExit(f"{job['name']}: {res['error']}")
                fut.release()
                del fut
                if not args.keep:
                    import shutil

                    shutil.rmtree(root / "out", ignore_errors=True)
                got = client.run(_worker_sample, bench_dir).popitem()[1]
                samples.append(dict(got, video=i + 1))
                if args.verbose:
                    print(_row(samples[-1]), flush=True)
    finally:
        cluster.close()
    return samples


def _jobs(args, videos: list[Path], root: Path):
    n_distinct = len(videos)
    for i in range(args.videos):
        v = videos[i % n_distinct]
        yield {
            "key": str(v),
            "video": str(v),
            "name": f"{v.stem}-{i}",
            "init": "prompts",
            "prompts": str(v.with_suffix(".prompts.json")),
            "session": None,
        }


def slope(values: list[float]) -> float:
    """Least-squares growth per video over ``values``."""
    import numpy as np

    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values)), values, 1)[0])


def run(args) -> dict[str, Any]:
    """Track the videos in a row in this process; return the samples and growth."""
    from batch_bench import make_videos

    h, w = (int(v) for v in args.size.lower().split("x"))
    root = Path(args.data or tempfile.mkdtemp(prefix="batch-memory-"))
    n_distinct = 1 if args.same else args.videos
    videos = make_videos(
        root / "videos", n_distinct, args.frames, args.base_frames, h, w, args.worms
    )
    options = {"backend": "classic", "points": 49, "skeleton_workers": 0}
    if args.no_trim:
        from napari_sam2_worms.batch import task

        task.trim_host_memory = lambda: None  # this process only (not with --dask)
    t0 = time.perf_counter()
    if args.dask:
        samples = run_dask(args, videos, root, options)
    else:
        samples = [dict(sample(), video=0)]
        for job in _jobs(args, videos, root):
            run_stages(job, root / "out", options, args.stage)
            if not args.keep:
                import shutil

                shutil.rmtree(root / "out", ignore_errors=True)
            samples.append(dict(sample(), video=len(samples)))
            if args.verbose:
                print(_row(samples[-1]), flush=True)
    half = samples[len(samples) // 2 :]
    growth = {
        k: round(slope([s[k] for s in half]), 4)
        for k in (
            "rss",
            "anonymous",
            "inuse",
            "free",
            "mmap",
            "py_arenas",
            "py_blocks_mb",
            "pyblocks",
            "threads",
            "fds",
        )
        if k in samples[0]
    }
    env = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "PYTHONMALLOC"))}
    return {
        "stage": "dask" if args.dask else args.stage,
        "env": env,
        "videos": args.videos,
        "same": args.same,
        "seconds": round(time.perf_counter() - t0, 1),
        "growth_per_video_second_half": growth,
        "samples": samples,
    }


COLS = (
    "video",
    "rss",
    "anonymous",
    "inuse",
    "free",
    "mmap",
    "arenas",
    "py_arenas",
    "py_arenas_max",
    "py_blocks_mb",
    "tasks",
    "fds",
    "profile_history",
    "stimulus_log",
)


def _row(s: dict) -> str:
    return " ".join(
        f"{s.get(c, ''):>9.1f}" if isinstance(s.get(c), float) else f"{s.get(c, '')!s:>9}"
        for c in COLS
    )


def _children(args) -> None:
    """Repeat the run in a fresh process per stage or allocator setting."""
    if args.child == "stages":
        runs = [({}, ["--stage", s]) for s in STAGES]
    else:
        runs = [
            ({}, []),
            ({"MALLOC_ARENA_MAX": "1"}, []),
            ({"MALLOC_ARENA_MAX": "2"}, []),
            ({"MALLOC_MMAP_THRESHOLD_": "65536"}, []),
            ({"MALLOC_TRIM_THRESHOLD_": "0"}, []),
            ({"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "65536"}, []),
            ({"PYTHONMALLOC": "malloc"}, []),
        ]
    base = [a for a in sys.argv[1:] if a not in ("--child", args.child)]
    for env, extra in runs:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [sys.executable, __file__, *base, *extra, "--json", f.name]
            subprocess.run(cmd, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
            doc = json.loads(Path(f.name).read_text())
        first, last = doc["samples"][1], doc["samples"][-1]
        g = doc["growth_per_video_second_half"]
        print(
            f"{doc['stage']:>8} {json.dumps(doc['env']):<58} rss {first['rss']:.1f}->"
            f"{last['rss']:.1f} MB, per video: rss {g['rss']:+.3f} inuse {g.get('inuse', 0):+.3f}"
            f" free {g.get('free', 0):+.3f} MB, threads {g['threads']:+.2f} fds {g['fds']:+.2f}"
            f" ({doc['seconds']} s)",
            flush=True,
        )


def main() -> int:
    """Parse the arguments, run, print the table and the growth."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--base-frames", type=int, default=10, help="distinct frames per plate")
    p.add_argument("--size", default="60x80", help="HEIGHTxWIDTH")
    p.add_argument("--worms", type=int, default=2)
    p.add_argument("--stage", default="full", choices=STAGES)
    p.add_argument("--same", action="store_true", help="one video tracked --videos times")
    p.add_argument("--data", help="folder for the videos (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the run folders")
    p.add_argument("--no-trim", action="store_true", help="no malloc_trim after each video")
    p.add_argument("--dask", action="store_true", help="on one LocalCluster worker")
    p.add_argument(
        "--dask-profile",
        action="store_true",
        help="with --dask: Dask's statistical profiler on (the batch turns it off)",
    )
    p.add_argument("--child", choices=["stages", "env"], help="a fresh process per setting")
    p.add_argument("--json", help="write the samples here")
    p.add_argument("-v", "--verbose", action="store_true", help="a row per video")
    args = p.parse_args()
    if args.child:
        _children(args)
        return 0
    if args.verbose:
        print(" ".join(f"{c:>9}" for c in COLS), flush=True)
    doc = run(args)
    if not args.verbose:
        print(" ".join(f"{c:>9}" for c in COLS))
        for s in doc["samples"][:: max(1, len(doc["samples"]) // 12)] + doc["samples"][-1:]:
            print(_row(s))
    print("growth per video (second half):", json.dumps(doc["growth_per_video_second_half"]))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
