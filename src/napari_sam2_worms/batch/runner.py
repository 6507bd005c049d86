"""Run a batch: discover the jobs, skip those done, track the rest on Dask, report.

The command holds the output folder's lock, keeps the manifest and writes the report;
the Dask workers run :func:`~napari_sam2_worms.batch.task.process_video`, one video
at a time each, and return their results. Nothing here is a scheduler of its own:
Dask places the tasks, its dashboard shows them.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends.sam2.checkpoints import DEFAULT_MODEL
from .jobs import VideoJob, discover, job_inputs
from .manifest import Manifest, output_lock, remove_leftovers

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

__all__ = ["BatchOptions", "BatchSummary", "run_batch"]

MAX_EXIT = 100  # the exit status is the number of failed videos, at most this


@dataclass
class BatchOptions:
    """Settings of a batch (the ``batch`` command's options).

    ``backend``, ``model``, ``checkpoint``, ``points``, ``init`` and the detection
    limits decide the results and enter each job's fingerprint; the others (workers,
    compile, CUDA graphs, ``reuse_model``) only change speed.
    """

    backend: str = "auto"
    model: str = DEFAULT_MODEL
    checkpoint: str | None = None
    download: bool = True
    device: str = "auto"
    init: str = "prompts"
    prompts_dir: str | None = None
    points: int = 49
    fps: float | None = None
    pixel_size: float | None = None
    min_area: int = 20
    max_area: int | None = None
    max_objects: int | None = None
    skeleton_workers: int | None = None
    compile: bool = False
    cuda_graphs: bool = True
    reuse_model: bool = True
    force: bool = False

    def settings(self) -> dict[str, Any]:
        """Describe what the results depend on (enters each job's fingerprint)."""
        s: dict[str, Any] = {
            "backend": self.backend,
            "points": self.points,
            "fps": self.fps,
            "pixel_size": self.pixel_size,
        }
        if self.backend != "classic":
            s["model"] = self.model
            s["checkpoint"] = _checkpoint_fingerprint(self.checkpoint)
        if self.init == "detect":
            s["detect"] = [self.min_area, self.max_area, self.max_objects]
        return s


@dataclass
class BatchSummary:
    """What a batch did; ``exit_code`` is the number of failed videos (at most 100)."""

    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    dashboard: str | None = None
    report_csv: Path | None = None
    report_html: Path | None = None

    @property
    def exit_code(self) -> int:
        """The command's exit status: the number of failed or interrupted videos, capped."""
        return min(len(self.failed) + len(self.interrupted), MAX_EXIT)


def _checkpoint_fingerprint(path: str | None) -> Any:
    if not path:
        return None
    from ..engine.session_io import video_fingerprint

    try:
        return video_fingerprint(path)  # size and hash of the first and last MiB
    except OSError:
        return str(path)


def _resolve_backend(options: BatchOptions, echo: Callable[[str], None]) -> BatchOptions:
    """Decide ``auto`` and find the SAM 2 checkpoint once, before any worker starts."""
    from ..backends.factory import BackendSpec, resolve_spec

    spec, reason = resolve_spec(
        BackendSpec(
            name=options.backend,  # type: ignore[arg-type]  # checked by BackendSpec
            model=options.model,
            checkpoint=options.checkpoint,
            download=options.download,
        )
    )
    if reason is not None:
        echo(f"no SAM 2 checkpoint available ({reason}); using the classic backend for every video")
    return BatchOptions(**{**asdict(options), "backend": spec.name, "checkpoint": spec.checkpoint})


def run_batch(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    options: BatchOptions | None = None,
    *,
    scheduler: Any = None,
    workers: int | None = None,
    gpus: str | Sequence[str] | None = "all",
    dashboard_address: str | None = ":8787",
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Track every video of ``inputs`` into ``out`` on Dask.

    Parameters
    ----------
    inputs : videos, folders of videos, saved session folders (see :mod:`.jobs`).
    out : the output folder: a run folder per video, ``manifest.json``,
        ``report.csv``, ``report.html``, ``thumbnails/``.
    options : :class:`BatchOptions`.
    scheduler : None: start (and stop) a LocalCluster here; a scheduler address
        (``tcp://host:8786``); or a ``distributed`` Cluster (e.g.
        :func:`~napari_sam2_worms.batch.cluster.slurm_cluster`) or Client to use.
    workers : LocalCluster worker processes (default: one per GPU, else one per CPU
        core for the classic backend and one for SAM 2 on the CPU).
    gpus : ``"all"``, ``"none"``, ``"0,1"`` or a list of GPU ids for the LocalCluster.
    dashboard_address : LocalCluster dashboard address (None: none).
    progress : show a progress bar (stderr) over the videos.
    echo : where to say what happens (default: the log).

    Returns
    -------
    BatchSummary
    """
    from .cluster import require_distributed

    require_distributed()
    say = echo or log.info
    options = options or BatchOptions()
    out = Path(out).expanduser()
    jobs = discover(list(inputs), init=options.init, prompts_dir=options.prompts_dir, out=out)
    options = _resolve_backend(options, say)
    summary = BatchSummary(out=out)
    with output_lock(out):
        remove_leftovers(out)
        manifest = Manifest(out)
        settings = options.settings()
        todo: list[VideoJob] = []
        for job in jobs:
            try:
                inputs_doc = job_inputs(job, settings)
            except OSError as exc:
                manifest.update(
                    job.key, **_entry(job), status="failed", error=f"cannot read it: {exc}"
                )
                summary.failed.append((job.name, f"cannot read it: {exc}"))
                continue
            prev = manifest.entries.get(job.key, {})
            if not options.force and manifest.is_done(job.key, inputs_doc["digest"]):
                summary.skipped.append(job.name)
                continue
            job = _keep_name(job, prev, manifest)
            manifest.update(
                job.key, **_entry(job), inputs=inputs_doc, status="queued", error=None,
                traceback=None, metrics=None, output=None,
            )  # fmt: skip
            todo.append(job)
        manifest.save()
        if summary.skipped:
            say(f"skipping {len(summary.skipped)} videos done with the same inputs")
        if todo:
            try:
                _run_jobs(todo, out, options, manifest, summary, scheduler, workers, gpus,
                          dashboard_address, progress, say)  # fmt: skip
            finally:
                manifest.save()
                summary.report_csv, summary.report_html = _report(out, manifest)
        else:
            summary.report_csv, summary.report_html = _report(out, manifest)
    return summary


def _report(out: Path, manifest: Manifest):
    from .report import write_report

    return write_report(out, manifest.entries)


def _entry(job: VideoJob) -> dict[str, Any]:
    return {"video": job.video, "name": job.name, "init": job.init, "prompts": job.prompts}


def _keep_name(job: VideoJob, prev: dict, manifest: Manifest) -> VideoJob:
    """Keep the run folder name a video had in this output folder."""
    name = prev.get("output") or prev.get("name")
    taken = {e.get("name") for k, e in manifest.entries.items() if k != job.key}
    if name and name != job.name and name not in taken:
        return VideoJob(**{**job.to_dict(), "name": name})
    if job.name in taken:  # another input had this name in an earlier batch
        return VideoJob(**{**job.to_dict(), "name": f"{job.name}-{uuid.uuid4().hex[:6]}"})
    return job


def _connect(scheduler, n_jobs, options, workers, gpus, dashboard_address, say):
    """(client, cluster we started or None, skeleton workers per video, own client)."""
    from distributed import Client

    own = True
    from .cluster import gpu_assignment, local_cluster, parse_gpus

    if scheduler is None:
        gpu_list = (
            []
            if options.backend == "classic" or options.device == "cpu"
            else (parse_gpus(gpus) if isinstance(gpus, str) or gpus is None else list(gpus))
        )
        cores = os.cpu_count() or 1
        if workers is None:
            workers = len(gpu_list) if gpu_list else (cores if options.backend == "classic" else 1)
        workers = max(1, min(int(workers), n_jobs))
        cluster, plugin = local_cluster(workers, gpu_list, dashboard_address=dashboard_address)
        client = Client(cluster)
        if plugin is not None:
            client.register_plugin(plugin)
            pins = ", ".join(
                f"worker {w} -> GPU {g}" for w, g in gpu_assignment(workers, gpu_list).items()
            )
            say(f"local Dask workers: {workers} ({pins})")
        else:
            say(f"local Dask workers: {workers} on the CPU ({options.backend} backend)")
        skel = options.skeleton_workers
        if skel is None:
            skel = max(0, min(8, cores // workers - 1)) if gpu_list else 0
        return client, cluster, skel, True
    if isinstance(scheduler, str):
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise OSError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
    elif isinstance(scheduler, Client):
        client = scheduler
        own = False
    else:  # a Cluster object (LocalCluster, SLURMCluster...)
        client = Client(scheduler)
    n = len(client.scheduler_info().get("workers", {}))
    say(f"using the Dask cluster at {client.scheduler.address} ({n} workers now)")
    return client, None, options.skeleton_workers or 0, own


def _worker_options(options: BatchOptions, skeleton_workers: int) -> dict[str, Any]:
    d = asdict(options)
    d["skeleton_workers"] = int(skeleton_workers)
    return d


def _run_jobs(
    todo, out, options, manifest, summary, scheduler, workers, gpus, dashboard_address,
    progress, say,
) -> None:  # fmt: skip
    import dask

    from .cluster import worker_config

    # while the cluster we start runs: its nannies read these at each worker (re)start
    with dask.config.set(worker_config() if scheduler is None else {}):
        _run_on_cluster(
            todo, out, options, manifest, summary, scheduler, workers, gpus,
            dashboard_address, progress, say,
        )  # fmt: skip


def _run_on_cluster(
    todo, out, options, manifest, summary, scheduler, workers, gpus, dashboard_address,
    progress, say,
) -> None:  # fmt: skip
    import dask
    from distributed import as_completed
    from tqdm import tqdm

    from .task import error_message, process_video

    # a video whose worker dies (host out of memory, segfault) is tried on one other
    # worker, then recorded as failed
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        client, cluster, skel, own_client = _connect(
            scheduler, len(todo), options, workers, gpus, dashboard_address, say
        )
    try:
        summary.dashboard = _dashboard(client)
        if summary.dashboard:
            say(f"Dask dashboard: {summary.dashboard}")
        wopts = _worker_options(options, skel)
        futures = {}
        for job in todo:
            fut = client.submit(
                process_video,
                job.to_dict(),
                str(out),
                wopts,
                key=f"napari-sam2-worms-{job.name}-{uuid.uuid4().hex[:8]}",
                pure=False,
            )
            futures[fut] = job
        bar = tqdm(
            total=len(todo), desc="batch", unit="video", file=sys.stderr, disable=not progress,
            dynamic_ncols=True,
        )  # fmt: skip
        pending = dict(futures)
        try:
            for fut in as_completed(list(futures)):
                job = pending.pop(fut)
                try:
                    res = fut.result()
                except Exception as exc:  # the worker died, or the cluster went away
                    res = {"status": "failed", "error": f"the worker died: {error_message(exc)}"}
                _record(manifest, summary, job, res)
                manifest.save()
                futures.pop(fut, None)
                fut.release()  # the worker may forget the result
                bar.set_postfix(failed=len(summary.failed), refresh=False)
                bar.update(1)
        except KeyboardInterrupt:
            client.cancel(list(pending))
            for job in pending.values():
                manifest.update(job.key, status="interrupted", error="interrupted (Ctrl-C)")
                summary.interrupted.append(job.name)
            raise
        finally:
            bar.close()
    finally:
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()


def _record(manifest: Manifest, summary: BatchSummary, job: VideoJob, res: dict) -> None:
    fields = {k: v for k, v in res.items() if k not in ("key", "name")}
    if res.get("status") == "done":
        fields["output"] = job.name
        summary.done.append(job.name)
    else:
        fields.update(output=None, metrics=None)
        summary.failed.append((job.name, str(res.get("error"))))
    manifest.update(job.key, **fields)


def _dashboard(client) -> str | None:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        return None
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None  # started without one
        return str(client.dashboard_link)
    except (KeyError, AttributeError, OSError):
        return None
