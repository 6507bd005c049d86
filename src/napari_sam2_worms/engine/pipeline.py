"""Headless building blocks shared by the command line and the widget.

:func:`make_backend` builds a backend by name; :func:`write_run` writes what the
``track`` command leaves in its output folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..backends.base import Backend, BackendError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "sam2", "classic")


def make_backend(
    name: str,
    *,
    model: str = "sam2.1_hiera_tiny",
    checkpoint: str | None = None,
    device: str = "auto",
    download: bool = True,
    progress=None,
    **options: Any,
) -> Backend:
    """Build a backend: ``"sam2"`` (SAM 2 video predictor), ``"classic"`` (threshold
    tracker) or ``"auto"`` (SAM 2 when a checkpoint can be had, else classic with a
    logged warning: what an offline first run gets).

    The SAM 2 checkpoint is resolved here (explicit file, then the cache, then a download
    when allowed), so a missing checkpoint fails early with a message that says where to
    put the file, or to use ``--backend classic``.
    """
    if name == "auto":
        try:
            return make_backend(
                "sam2",
                model=model,
                checkpoint=checkpoint,
                device=device,
                download=download,
                progress=progress,
                **options,
            )
        except BackendError as exc:
            log.warning(
                "no SAM 2 checkpoint available (%s); using the classic backend, which needs "
                "no weights (its masks suit dark worms on a plain background). To use SAM 2: "
                "napari-sam2-worms download, or --checkpoint PATH.",
                str(exc).splitlines()[0],
            )
            return make_backend("classic")
    if name == "classic":
        from ..backends.classic import ClassicBackend

        return ClassicBackend(**options)
    if name == "sam2":
        from ..backends.sam2_backend import Sam2Backend
        from ..checkpoints import resolve_checkpoint

        try:
            path = resolve_checkpoint(model, checkpoint, download, progress=progress)
        except BackendError as exc:
            raise BackendError(
                f"{exc}\nWithout a SAM 2 checkpoint you can still track worms on a plain "
                "background with the classic backend (--backend classic)."
            ) from exc
        return Sam2Backend(model, path, device=device, download=False, progress=progress, **options)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def write_run(
    session, out_dir: str | Path, *, n_points: int = 49, progress=None, workers: int = 0
) -> Path:
    """Write a run folder: the saved session (masks.tif, scores.npy, session.json...) and
    ``skeletons.csv`` (``workers`` processes skeletonize). Returns the folder."""
    from ..skeleton import write_csv
    from .session_io import save_session

    out = Path(out_dir)
    save_session(session, out)
    tracks = session.skeletons(n_points=n_points, progress=progress, workers=workers)
    write_csv(tracks, out / "skeletons.csv")
    return out
