"""What a Dask worker does for one video: a normal run folder, a thumbnail, the figures.

:func:`process_video` never raises: a corrupt video, a bad prompts file, CUDA out of
memory or any other error comes back as ``{"status": "failed", "error": "..."}`` so
that the batch goes on with the other videos. The run folder is the one ``track``
writes (through :func:`~napari_sam2_worms.backends.factory.build_backend`,
:class:`~napari_sam2_worms.engine.session.TrackingSession` and
:func:`~napari_sam2_worms.engine.pipeline.write_run`), made in a hidden folder beside
its final place and renamed onto it when complete, so ``<out>/<name>`` is always either
absent, the previous complete run or the new complete run.

A worker keeps one loaded SAM 2 model between videos (loading it is the slow part of a
short video); everything made for a video (the session, the backend's state, cached
frames) is closed before the next, and each result carries the worker's host and GPU
memory so that leaks show in the manifest.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import socket
import sys
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

THUMBNAILS = "thumbnails"
THUMB_WIDTH = 320

#: (model, checkpoint, device) -> a loaded SAM2VideoPredictor, kept by this process
_PREDICTORS: dict[tuple[str, str, str], Any] = {}


def error_message(exc: BaseException) -> str:
    """One line that says what went wrong (CUDA out of memory named as such)."""
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    name = type(exc).__name__
    if "out of memory" in text.lower() and ("cuda" in text.lower() or "OutOfMemory" in name):
        return (
            first
            if first.lower().startswith("cuda out of memory")
            else f"CUDA out of memory: {first}"
        )
    from ..backends.base import BackendError

    if isinstance(exc, (ValueError, OSError, BackendError, KeyError, IndexError)):
        return first
    return f"{name}: {first}"


def process_video(job: dict[str, Any], out_dir: str, options: dict[str, Any]) -> dict[str, Any]:
    """Track one video of a batch and write its run folder ``<out_dir>/<job["name"]>``.

    Parameters
    ----------
    job : :meth:`VideoJob.to_dict` of the job.
    out_dir : the batch's output folder (shared by all workers).
    options : the batch settings (backend, model, checkpoint, points, ...), see
        :class:`~napari_sam2_worms.batch.runner.BatchOptions`.

    Returns
    -------
    dict
        ``status`` ("done" or "failed"), ``error`` (one line) and ``traceback`` when
        failed, ``metrics`` (frames, objects, good skeletons, flags, frames/s),
        ``timings`` (seconds per stage), ``worker`` (host, pid, GPU, memory).
    """
    started = time.time()
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"key": job["key"], "name": job["name"], "started": started}
    _reset_peak_gpu_memory()
    try:
        result["metrics"] = _run(job, Path(out_dir), options, timings)
        result["status"] = "done"
        result["error"] = None
    except Exception as exc:  # one video's failure never stops the batch
        log.info("%s failed: %s", job["key"], exc)
        result["status"] = "failed"
        result["error"] = error_message(exc)
        result["traceback"] = traceback.format_exc(limit=20)
    finally:
        gc.collect()
        _empty_gpu_cache()
        trim_host_memory()
    result["finished"] = time.time()
    result["seconds"] = round(result["finished"] - started, 3)
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    result["worker"] = worker_info()
    return result


class _Timer:
    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.t0


def _run(job: dict, out: Path, options: dict, timings: dict) -> dict[str, Any]:
    from ..engine.pipeline import write_run
    from ..engine.session import TrackingSession
    from ..engine.session_io import load_session
    from ..export.run_dir import load_run_tracks
    from ..video import open_video

    name = job["name"]
    final = out / name
    tmp = out / f".{name}.partial-{uuid.uuid4().hex[:8]}"
    session = None
    video = None
    refuse_foreign_folder(final)  # before any work: a user's folder is never replaced
    try:
        with _Timer(timings, "open"):
            backend = _backend(options)
            if job["init"] == "session":
                session = load_session(job["session"], backend)
                video = session.video
            else:
                video = open_video(job["video"], fps=options.get("fps"))
                session = TrackingSession(
                    video, backend, fps=options.get("fps"), pixel_size=options.get("pixel_size")
                )
        with _Timer(timings, "prompts"):
            if job["init"] == "prompts":
                _apply_prompts_file(session, job)
            elif job["init"] == "detect":
                _detect_prompts(session, options)
        session.settings.update(
            {
                "backend": getattr(backend, "name", options.get("backend")),
                "model": options.get("model"),
                "device": str(getattr(backend, "device", "cpu")),
                "batch": {"init": job["init"], "source": job["key"]},
            }
        )
        workers = _skeleton_workers(options)
        session.skeleton_workers = workers
        session.skeleton_points = int(options.get("points", 49))
        with _Timer(timings, "track"):
            for _ in session.propagate("both"):
                pass
        with _Timer(timings, "write"):
            write_run(session, tmp, n_points=int(options.get("points", 49)), workers=workers)
            tracks = load_run_tracks(tmp)
        with _Timer(timings, "thumbnail"):
            thumb = write_thumbnail(session, tracks, out / THUMBNAILS / f"{name}.png")
        _replace_dir(tmp, final)
        metrics = run_metrics(session, tracks, timings)
        metrics["thumbnail"] = str(thumb.relative_to(out))
        metrics["output"] = name
        return metrics
    finally:
        if session is not None:
            session.close()
        if video is not None and hasattr(video, "close"):
            with contextlib.suppress(Exception):
                video.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _apply_prompts_file(session, job: dict) -> None:
    from ..engine.prompts import PromptsFileError, apply_prompts, read_prompts_file

    if not job.get("prompts"):
        video = Path(job["video"])
        raise PromptsFileError(
            f"{video.name}: no prompts file: put {video.stem}.prompts.json beside the video "
            "(or in --prompts-dir), or use --init detect"
        )
    store, names = read_prompts_file(
        job["prompts"], n_frames=session.n_frames, size=(session.width, session.height)
    )
    apply_prompts(session, store, names)


def _detect_prompts(session, options: dict) -> None:
    """Make the classic detector's masks on the first frame the objects' prompts.

    Each animal-sized blob (``min_area`` .. ``max_area`` pixels, largest first, at most
    ``max_objects``) gets one object whose painted mask is the blob: SAM 2 gets it as a
    mask prompt, the classic backend uses it as it is.
    """
    from ..backends.base import BadPromptError, ObjectPrompts
    from ..backends.classic import ClassicBackend

    frame = int(options.get("detect_frame") or 0)
    min_area = int(options.get("min_area") or 20)
    max_area = options.get("max_area")
    det = ClassicBackend(min_area=min_area)
    det.open(session.video)
    try:
        points = det.detect(frame, max_objects=options.get("max_objects"))
        found = 0
        for x, y in points:
            obj = found + 1
            res = det.set_prompts(
                frame, obj, ObjectPrompts(np.array([[x, y]], np.float32), np.array([1], np.int32))
            )
            mask = res.masks.get(obj)
            if mask is None or not np.any(mask):
                det.remove_object(obj)
                continue
            area = int(np.count_nonzero(mask))
            if area < min_area or (max_area is not None and area > int(max_area)):
                det.remove_object(obj)
                continue
            session.add_object(object_id=obj)
            session.set_mask(frame, obj, np.asarray(mask, bool))
            found += 1
    finally:
        det.close()
    if not found:
        raise BadPromptError(
            f"--init detect found no animal on frame {frame} (blobs of {min_area}.."
            f"{max_area or 'any'} pixels); give a prompts file for this video instead"
        )


def _skeleton_workers(options: dict) -> int:
    import multiprocessing

    n = int(options.get("skeleton_workers") or 0)
    if n and multiprocessing.current_process().daemon:
        log.info("daemonic worker process: skeletons are made in the worker itself")
        return 0
    return n


def _backend(options: dict):
    """Make a new backend for one video; SAM 2 reuses this process's loaded model."""
    from ..backends.factory import BackendSpec, build_backend
    from ..backends.sam2.checkpoints import DEFAULT_MODEL

    name = options.get("backend", "classic")
    if name == "classic":
        return build_backend(BackendSpec(name="classic"))
    extra: dict[str, Any] = {}
    key = (str(options.get("model")), str(options.get("checkpoint")), str(options.get("device")))
    if options.get("reuse_model", True) and key in _PREDICTORS:
        extra["predictor"] = _PREDICTORS[key]
    backend = build_backend(
        BackendSpec(
            name=name,
            model=options.get("model", DEFAULT_MODEL),
            checkpoint=options.get("checkpoint"),
            device=options.get("device", "auto"),
            download=False,  # the batch resolved the checkpoint before starting the workers
            compile=bool(options.get("compile", False)),
            cuda_graphs=bool(options.get("cuda_graphs", True)),
            options=extra,
        )
    )
    if options.get("reuse_model", True) and getattr(backend, "name", "") == "sam2":
        sam2: Any = backend  # the SAM 2 adapter (by its name): it has load() and predictor
        if getattr(sam2, "predictor", None) is None:
            sam2.load()
        _PREDICTORS[key] = sam2.predictor
    return backend


def refuse_foreign_folder(final: Path) -> None:
    """Raise :class:`~..utils.OutputError` when ``final`` holds something but no run."""
    from ..run_files import SESSION
    from ..utils import OutputError

    if final.is_dir() and not (final / SESSION).exists():
        entries = sorted(p.name for p in final.iterdir())
        if entries:
            raise OutputError(
                f"{final} already exists and holds no run (it holds {entries[0]!r}); it is "
                "not replaced: move it, or choose another --out"
            )


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` onto ``final``; a previous run there is removed after.

    A ``final`` that holds something but no run (a folder of the user's that happens to
    have the video's name) is never replaced: :class:`~..utils.OutputError`.
    """
    old = None
    refuse_foreign_folder(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float32)
    lo, hi = np.nanpercentile(a, [0.5, 99.5]) if a.size else (0.0, 1.0)
    return np.clip((a - lo) / max(float(hi - lo), 1e-6) * 255, 0, 255).astype(np.uint8)


def write_thumbnail(session, tracks, path: Path, width: int = THUMB_WIDTH) -> Path:
    """Draw the first frame with the masks and centerlines (heads marked) as a PNG."""
    from PIL import Image

    from ..export.overlay import render_overlay_frame
    from ..utils import atomic_path

    frame = 0
    image = _to_uint8(session.video[frame])
    colors = {o.id: o.color for o in session.objects.values()}
    skeletons = {int(oid): tracks.points[frame, k] for k, oid in enumerate(tracks.object_ids)}
    names = {o.id: o.name for o in session.objects.values()}
    scale = min(1.0, width / max(1, session.width))
    rgb = render_overlay_frame(
        image, session.labels[frame], colors, skeletons=skeletons, names=names, scale=scale
    )
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return path


def run_metrics(session, tracks, timings: dict[str, float]) -> dict[str, Any]:
    """Sum up one run for the report: frames, objects, good skeletons, flags, speed."""
    good = np.asarray(tracks.good, bool)
    reasons = np.asarray(tracks.reason, object)[~good]
    flags = Counter(str(r) or "unknown" for r in reasons.ravel())
    track_s = timings.get("track", 0.0)
    return {
        "frames": int(session.n_frames),
        "objects": len(session.objects),
        "good_skeletons_pct": round(100.0 * float(good.mean()), 2) if good.size else 0.0,
        "flags": dict(sorted(flags.items())),
        "frames_per_s": round(session.n_frames / track_s, 2) if track_s > 0 else None,
    }


def trim_host_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; else nothing).

    A video's many mid-sized arrays leave free chunks in the C heap that glibc keeps:
    over 20 videos of 150 frames in a row a process settles at 126 MB with this and at
    161 MB without it (flat from the fifth video either way;
    ``benchmarks/batch_memory.py --no-trim``). The per-video growth once measured here
    was CPython's arenas pinned by the skeleton CSV's strings and Dask's profiler (see
    :mod:`napari_sam2_worms.batch.cluster`), not the C heap.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl...)
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_gpu_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def _empty_gpu_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def worker_info() -> dict[str, Any]:
    """Host, process, GPU and memory of this worker process now."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    try:
        from distributed import get_worker

        info["name"] = str(get_worker().name)
    except (ImportError, ValueError):
        pass
    try:
        import psutil

        info["rss_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        info["gpu_reserved_mb"] = round(torch.cuda.memory_reserved() / 2**20, 1)
        info["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return info
