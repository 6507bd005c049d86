"""Batch tracking of many videos on Dask (``napari-sam2-worms batch``).

No Qt, no napari; Dask is imported only when a batch runs. The parts:

- :mod:`.jobs`: which videos, which prompts, and a fingerprint of each job's inputs;
- :mod:`.task`: what a Dask worker does for one video (a normal run folder, written
  atomically, a thumbnail and the figures of the report);
- :mod:`.cluster`: the embedded ``LocalCluster`` (one worker per GPU, pinned with
  ``CUDA_VISIBLE_DEVICES``), an existing scheduler, or a dask-jobqueue ``SLURMCluster``;
- :mod:`.manifest`: the resumable record in the output folder;
- :mod:`.report`: ``report.csv`` and ``report.html``;
- :mod:`.runner`: :func:`run_batch`, which ties them together.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BatchOptions", "BatchSummary", "run_batch"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)
