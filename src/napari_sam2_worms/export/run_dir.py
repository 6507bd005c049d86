"""Load the skeleton tracks of a RUN_DIR (what ``track`` writes, or a saved session).

A run folder holds ``session.json`` (we use ``fps``, ``pixel_size`` and ``objects``:
``[{"id": 1, "name": "worm1"}, ...]``), ``masks.tif`` (the label stack) and usually
``skeletons.csv``. The skeletons are read from ``skeletons.csv`` when it is there,
else computed from ``masks.tif``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..tracks import SkeletonTracks

__all__ = ["RunDirError", "load_run_tracks", "read_session_json"]

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
MASKS_FILE = "masks.tif"
SKELETONS_FILE = "skeletons.csv"


class RunDirError(ValueError):
    """A run folder is missing or lacks what is needed; the message says what."""


def read_session_json(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``session.json`` of a run folder, checked for the keys the exporters use."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(
            f"{run_dir} is not a folder. Give the run folder written by "
            "`napari-sam2-worms track` or a saved session."
        )
    session_path = run_dir / SESSION_FILE
    if not session_path.is_file():
        raise RunDirError(
            f"{run_dir} has no {SESSION_FILE}: it is not a run folder written by "
            "`napari-sam2-worms track` or a saved session."
        )
    try:
        session = json.loads(session_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{session_path} cannot be read as JSON: {exc}") from exc
    if not isinstance(session, dict):
        raise RunDirError(f"{session_path} must hold a JSON object.")
    objects = session.get("objects", [])
    if not isinstance(objects, list) or not all(
        isinstance(o, dict) and isinstance(o.get("id"), int) for o in objects
    ):
        raise RunDirError(
            f"{session_path}: 'objects' must be a list of {{'id': int, 'name': str}}."
        )
    for key in ("fps", "pixel_size"):
        v = session.get(key)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0):
            raise RunDirError(f"{session_path}: {key!r} must be a positive number, got {v!r}.")
    return session


def load_run_tracks(run_dir: str | os.PathLike) -> SkeletonTracks:
    """Skeleton tracks of a run folder.

    Reads ``skeletons.csv`` (``skeleton.read_csv``) when present, else skeletonizes
    ``masks.tif`` (``skeleton.skeletonize_labels``). The fps, pixel size and object
    names of ``session.json`` win over those stored in ``skeletons.csv``.

    Raises
    ------
    RunDirError
        The folder, ``session.json``, or both ``skeletons.csv`` and ``masks.tif`` are
        missing, or ``session.json`` is invalid.
    """
    run_dir = Path(run_dir)
    session = read_session_json(run_dir)
    fps = session.get("fps")
    pixel_size = session.get("pixel_size")
    objects = session.get("objects", [])
    names_by_id = {int(o["id"]): str(o.get("name") or f"worm{o['id']}") for o in objects}
    csv_path = run_dir / SKELETONS_FILE
    masks_path = run_dir / MASKS_FILE
    if csv_path.is_file():
        from ..skeleton import read_csv

        tracks = read_csv(csv_path)
        log.info("Read skeletons from %s", csv_path)
        names = [names_by_id.get(int(i), n) for i, n in zip(tracks.object_ids, tracks.names)]
        return replace(
            tracks,
            names=names,
            fps=float(fps) if fps is not None else tracks.fps,
            pixel_size=float(pixel_size) if pixel_size is not None else tracks.pixel_size,
        )
    if not masks_path.is_file():
        raise RunDirError(
            f"{run_dir} has neither {SKELETONS_FILE} nor {MASKS_FILE}: there is nothing to "
            "export. Run tracking first (or save the session) so that the masks are written."
        )
    from ..skeleton import skeletonize_labels
    from .masks import read_label_tiff

    labels = read_label_tiff(masks_path)
    ids = sorted(names_by_id) if names_by_id else None
    names = [names_by_id[i] for i in ids] if ids else None
    log.info("No %s in %s: skeletonizing %s", SKELETONS_FILE, run_dir, MASKS_FILE)
    kwargs: dict[str, Any] = {"object_ids": ids, "names": names, "pixel_size": pixel_size}
    if fps is not None:
        kwargs["fps"] = float(fps)
    return skeletonize_labels(labels, **kwargs)
