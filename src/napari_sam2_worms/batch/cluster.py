"""Where the batch runs: an embedded LocalCluster, a running scheduler, or SLURM.

- :func:`local_cluster`: a ``dask.distributed.LocalCluster`` of worker processes, one
  thread each (one video at a time per worker). With GPUs, worker ``i`` is pinned to
  ``gpus[i % len(gpus)]`` by :class:`PinGpu`, a worker plugin that sets
  ``CUDA_VISIBLE_DEVICES`` in the worker process before its first task (before CUDA
  starts there), so each worker sees one GPU as ``cuda:0``. More workers than GPUs
  share them round-robin.
- ``--scheduler tcp://host:8786``: an existing cluster; its workers are used as they
  are (pin them yourself, e.g. one ``dask worker`` per GPU with
  ``CUDA_VISIBLE_DEVICES`` set, or dask-cuda's ``dask cuda worker``).
- :func:`slurm_cluster`: a dask-jobqueue ``SLURMCluster`` whose jobs each hold one
  GPU and one single-threaded worker (SLURM sets ``CUDA_VISIBLE_DEVICES`` per job).

Worker processes are started non-daemonic so that a worker may start the skeleton
processes of its video (``distributed.worker.daemon: False``), and without Dask's
statistical profiler (``distributed.worker.profile.enabled: False``): it records a call
tree every second, busy or idle, for the last 1,000 seconds
(``distributed.admin.low-level-log-length``), which made a worker's memory grow by
~0.6 MB per 150-frame video for the first quarter hour (``benchmarks/batch_memory.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Any

log = logging.getLogger(__name__)

try:  # a plain base class when distributed is absent, so that this module imports
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - distributed is in the batch extra
    _WorkerPlugin = object  # type: ignore[assignment,misc]


NO_DASK = (
    "the batch command needs Dask: pip install 'napari-sam2-worms[batch]' "
    "(dask[distributed], dask-jobqueue)"
)


def require_distributed() -> None:
    """Raise a one-line ImportError naming the extra to install when Dask is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(NO_DASK) from exc


def visible_gpus() -> list[str]:
    """List the GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries.

    ``CUDA_VISIBLE_DEVICES`` when set (an empty value or ``-1``: none), else the GPUs
    ``nvidia-smi -L`` lists, else none. CUDA is not initialised here.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g.strip() for g in env.split(",") if g.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def parse_gpus(text: str | None) -> list[str]:
    """``"all"`` (every visible GPU), ``"none"`` or ``""`` (CPU), or ``"0,1,..."``."""
    if text is None or text.strip().lower() == "all":
        return visible_gpus()
    if text.strip().lower() in ("", "none", "cpu"):
        return []
    ids = [g.strip() for g in text.split(",") if g.strip()]
    for g in ids:
        if not g.isdigit() and not g.startswith(("GPU-", "MIG-")):
            raise ValueError(f"--gpus takes all, none or GPU indices like 0,1; got {text!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpus lists a GPU twice: {text!r}")
    return ids


def gpu_assignment(n_workers: int, gpus: list[str]) -> dict[str, str]:
    """Worker name -> GPU: round-robin, so workers beyond the GPU count share them."""
    if not gpus:
        return {}
    return {str(i): gpus[i % len(gpus)] for i in range(n_workers)}


class PinGpu(_WorkerPlugin):
    """Worker plugin: set ``CUDA_VISIBLE_DEVICES`` of each named worker to its GPU.

    Registered before any task runs, so CUDA starts in the worker with one GPU visible.
    A worker restarted by its nanny gets the plugin again (and the same GPU).
    """

    name = "napari-sam2-worms-pin-gpu"

    def __init__(self, assignment: dict[str, str]) -> None:
        self.assignment = dict(assignment)

    def setup(self, worker) -> None:
        """Pin ``worker`` to its GPU (sets ``CUDA_VISIBLE_DEVICES`` in its process)."""
        gpu = self.assignment.get(str(worker.name))
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            log.info("worker %s pinned to GPU %s", worker.name, gpu)


def worker_config(profile: bool = False) -> dict[str, bool]:
    """Return the Dask settings of the batch's worker processes (see the module docstring).

    :func:`local_cluster` gives them to its nannies, which set them in every worker
    process they start or restart. A nanny reads ``distributed.worker.daemon`` from its
    own process's configuration at each (re)start, so the process that runs the cluster
    holds these settings for the cluster's lifetime (the batch runner does).
    """
    return {"distributed.worker.daemon": False, "distributed.worker.profile.enabled": profile}


def local_cluster(
    n_workers: int,
    gpus: list[str],
    *,
    threads: int | None = None,
    dashboard_address: str | None = ":8787",
    memory_limit: str | float = "auto",
    profile: bool = False,
) -> tuple[Any, PinGpu | None]:
    """Start a LocalCluster of ``n_workers`` single-threaded worker processes.

    Parameters
    ----------
    n_workers : worker processes (one video at a time each).
    gpus : GPUs to pin the workers to (:func:`gpu_assignment`); empty: CPU workers.
    threads : CPU threads a worker's libraries may use (OpenMP, PyTorch on the CPU);
        default: the machine's cores shared between the workers.
    dashboard_address : where the dashboard listens (None: no dashboard).
    memory_limit : per worker, as for ``LocalCluster``.
    profile : keep Dask's statistical profiler on in the workers (the dashboard's
        Profile page); off by default, see the module docstring.

    Returns
    -------
    (cluster, plugin)
        The cluster and the :class:`PinGpu` plugin to register on its client (None
        without GPUs). Close the cluster when done.
    """
    require_distributed()
    import dask
    from distributed import LocalCluster

    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // max(1, n_workers))
    env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if gpus:
        env.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1")
    config = worker_config(profile)
    with dask.config.set(config):
        cluster = LocalCluster(
            config=config,  # the nannies hand it to every worker process they (re)start
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard_address,
            memory_limit=memory_limit,
            env=env,
            silence_logs=logging.ERROR,
        )
    plugin = PinGpu(gpu_assignment(n_workers, gpus)) if gpus else None
    return cluster, plugin


def slurm_cluster(
    *,
    gpus_per_job: int = 1,
    cpus_per_job: int | None = None,
    memory: str | None = None,
    walltime: str | None = None,
    queue: str | None = None,
    account: str | None = None,
    job_extra_directives: list[str] | tuple[str, ...] = (),
    job_script_prologue: list[str] | tuple[str, ...] = (),
    **kwargs: Any,
):
    """Make a dask-jobqueue ``SLURMCluster`` for batch tracking.

    Each job has one GPU and one single-threaded worker; call ``.scale(jobs=N)`` to
    submit N jobs.

    Anything left None comes from dask-jobqueue's configuration
    (``~/.config/dask/jobqueue.yaml``, section ``jobqueue.slurm``), else from the
    defaults here (8 CPUs and 32 GB per job). ``kwargs`` go to ``SLURMCluster``.

    Each job's worker runs one video at a time (``cores=1``) with ``cpus_per_job`` CPUs
    reserved for its skeleton processes (``job_cpu``), not as a daemon (so it may start
    them), without Dask's profiler (as :func:`local_cluster`) and with the ``GPU=1``
    resource.
    """
    import dask
    from dask_jobqueue import SLURMCluster

    config = dask.config.get("jobqueue.slurm", default={}) or {}
    extra = list(job_extra_directives)
    if gpus_per_job and not any(d.startswith("--gres") for d in extra):
        extra.append(f"--gres=gpu:{int(gpus_per_job)}")
    prologue = [
        "export DASK_DISTRIBUTED__WORKER__DAEMON=False",
        "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False",
        *job_script_prologue,
    ]
    args: dict[str, Any] = {
        "cores": 1,
        "processes": 1,
        "job_cpu": cpus_per_job or config.get("job-cpu") or 8,
        "memory": memory or config.get("memory") or "32GB",
        "job_extra_directives": extra,
        "job_script_prologue": prologue,
        "worker_extra_args": ["--resources", f"GPU={int(gpus_per_job)}"] if gpus_per_job else [],
    }
    for key, value in (("walltime", walltime), ("queue", queue), ("account", account)):
        if value is not None:
            args[key] = value
    args.update(kwargs)
    return SLURMCluster(**args)
