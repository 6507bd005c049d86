"""Load the skeleton tracks of a RUN_DIR (what ``track`` writes, or a saved session).

A run folder holds ``session.json`` (we use ``fps``, ``pixel_size`` and ``objects``:
``[{"id": 1, "name": "worm1"}, ...]``), ``masks.tif`` (the label stack) and usually
``skeletons.csv``. The skeletons are read from ``skeletons.csv`` when it belongs to the
session's current generation (``session.json`` records its generation, size and hash),
else computed from ``masks.tif``: a stale file (an older run, or a session saved since)
is never exported. A damaged file (its size or hash differs from the record, or its
frame count from the session's) is refused with a :class:`RunDirError` naming it.
Folders written by hand (no ``format`` in ``session.json``) get the count checks only.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..run_files import MASKS, SESSION, SKELETONS

if TYPE_CHECKING:
    import os

    from ..tracks import SkeletonTracks

__all__ = [
    "RunDirError",
    "check_run",
    "check_run_video",
    "load_run_tracks",
    "read_run_masks",
    "read_session_json",
]

log = logging.getLogger(__name__)


class RunDirError(ValueError):
    """A run folder is missing or lacks what is needed; the message says what."""


def read_session_json(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read the ``session.json`` of a run folder (also one written by hand), checked.

    The one reader (:func:`~napari_sam2_worms.engine.session_file.read_session_json`)
    with ``hand_written=True``; its errors become :class:`RunDirError`.
    """
    from ..engine.session_file import read_session_json as read
    from ..engine.session_schema import SessionFileError

    try:
        return read(run_dir, hand_written=True)
    except SessionFileError as exc:
        raise RunDirError(str(exc)) from exc


def check_run(run_dir: str | os.PathLike, files: tuple[str, ...] = (MASKS,)) -> dict[str, Any]:
    """Check a run folder before exporting from it; returns its ``session.json``.

    Validates ``session.json`` and checks that ``files`` have the size and hash it
    records (folders saved before records were kept: not checked here).

    Raises
    ------
    RunDirError
        Naming the file that is missing, malformed or damaged.
    """
    from ..engine.session_file import check_files
    from ..engine.session_schema import SessionFileError

    for attempt in range(3):
        session = read_session_json(run_dir)
        try:
            check_files(run_dir, session, files)
        except SessionFileError as exc:
            # a save applied between our reads (an autosave of a running `track`): the
            # records then changed too; a real damage stays
            if attempt < 2 and read_session_json(run_dir).get("generation") != session.get(
                "generation"
            ):
                continue
            raise RunDirError(str(exc)) from exc
        return session
    raise AssertionError("unreachable")  # pragma: no cover


def check_run_video(
    run_dir: str | os.PathLike,
    session: dict[str, Any] | None = None,
    moved_to: str | os.PathLike | None = None,
) -> Path:
    """Find the video of a run folder, checked against the fingerprint in ``session.json``.

    ``moved_to`` is where the video is now, when it has moved since the run (checked the
    same way); by default its saved path, then its path relative to the run folder.

    Raises
    ------
    RunDirError
        The video is not found, or the file at its saved path is another video (the
        message names both).
    """
    from ..engine.session_io import check_video, find_session_video
    from ..engine.session_schema import SessionFileError
    from ..video import open_video

    session = check_run(run_dir) if session is None else session
    try:
        if moved_to is not None:
            path = Path(moved_to)
            if not path.exists():
                raise SessionFileError(f"the video {path} does not exist")
        else:
            path = find_session_video(run_dir, session)
        if (session.get("video") or {}).get("shape"):
            video = open_video(path)
            try:
                check_video(session, video, run_dir)
            finally:
                close = getattr(video, "close", None)
                if close is not None:
                    close()
    except SessionFileError as exc:
        raise RunDirError(str(exc)) from exc
    return path


def read_run_masks(run_dir: str | os.PathLike, session: dict[str, Any] | None = None):
    """Read the label stack of a run folder (``masks.tif``), checked against ``session.json``.

    Raises
    ------
    RunDirError
        ``masks.tif`` is missing, damaged (size, hash, undecodable) or of another shape
        than the session's video.
    """
    from .masks import read_label_tiff

    run_dir = Path(run_dir)
    session = check_run(run_dir) if session is None else session
    path = run_dir / MASKS
    if not path.is_file():
        raise RunDirError(f"{path} is missing: there are no masks to export")
    try:
        labels = read_label_tiff(path)
    except Exception as exc:  # zlib.error, struct.error...: tifffile raises many types
        raise RunDirError(f"{path} is damaged and cannot be read ({exc})") from exc
    shape = (session.get("video") or {}).get("shape") if isinstance(session, dict) else None
    if isinstance(shape, list) and len(shape) >= 3 and list(labels.shape) != list(shape[:3]):
        raise RunDirError(
            f"{path} holds {labels.shape[0]} frames of {labels.shape[1:]}, the session's "
            f"video has {shape[0]} of {tuple(shape[1:3])}: the file is damaged or stale"
        )
    return labels


def _skeletons_status(run_dir: Path, session: dict[str, Any]) -> str:
    """Tell whether skeletons.csv is "current", "stale" or "legacy" (no generations).

    Raises
    ------
    RunDirError
        The file differs from its record (damaged).
    """
    if "generation" not in session:
        return "legacy"
    from ..engine.run_set import file_record

    rec = (session.get("derived") or {}).get(SKELETONS)
    if rec is None or rec.get("generation") != session["generation"]:
        return "stale"
    actual = file_record(run_dir / SKELETONS)
    if actual != {"size": rec["size"], "sha256": rec["sha256"]}:
        raise RunDirError(
            f"{run_dir / SKELETONS} is damaged: its "
            f"{'size' if actual['size'] != rec['size'] else 'content'} differs from what "
            f"{SESSION} recorded. Delete it to skeletonize {MASKS} again."
        )
    return "current"


def _check_counts(path: Path, tracks: SkeletonTracks, session: dict[str, Any]) -> None:
    shape = (session.get("video") or {}).get("shape")
    n_frames = shape[0] if isinstance(shape, list) and shape else None
    if n_frames is not None and tracks.n_frames != n_frames:
        raise RunDirError(
            f"{path} has {tracks.n_frames} of the session's {n_frames} frames: it is "
            f"damaged or stale. Delete it to skeletonize {MASKS} again."
        )
    with open(path, "rb") as fh:
        rows = sum(1 for _ in fh) - 1
    expected = tracks.n_frames * tracks.n_objects * tracks.points.shape[2]
    if rows != expected:
        raise RunDirError(
            f"{path} has {rows} rows where {tracks.n_frames} frames of {tracks.n_objects} "
            f"objects need {expected}: it is damaged. Delete it to skeletonize "
            f"{MASKS} again."
        )
    known = {int(o["id"]) for o in session.get("objects", [])}
    extra = sorted(set(int(i) for i in tracks.object_ids) - known) if known else []
    if extra:
        raise RunDirError(
            f"{path} lists objects {extra} that the session does not have: it is stale. "
            f"Delete it to skeletonize {MASKS} again."
        )


def load_run_tracks(run_dir: str | os.PathLike) -> SkeletonTracks:
    """Skeleton tracks of a run folder.

    Reads ``skeletons.csv`` (``skeleton.read_csv``) when it belongs to the session's
    current generation, else skeletonizes ``masks.tif`` (``skeleton.skeletonize_labels``)
    with a logged notice. The fps, pixel size and object names of ``session.json`` win
    over those stored in ``skeletons.csv``.

    Raises
    ------
    RunDirError
        The folder, ``session.json``, or both ``skeletons.csv`` and ``masks.tif`` are
        missing, ``session.json`` is invalid, or a file is damaged (named).
    """
    run_dir = Path(run_dir)
    session = read_session_json(run_dir)
    fps = session.get("fps")
    pixel_size = session.get("pixel_size")
    objects = session.get("objects", [])
    names_by_id = {int(o["id"]): str(o.get("name") or f"worm{o['id']}") for o in objects}
    csv_path = run_dir / SKELETONS
    masks_path = run_dir / MASKS
    status = _skeletons_status(run_dir, session) if csv_path.is_file() else "absent"
    if status == "stale":
        log.warning(
            "%s does not belong to the session's generation %s (it was saved since): "
            "skeletonizing %s instead",
            csv_path,
            session.get("generation"),
            MASKS,
        )
    if status in ("current", "legacy"):
        from ..skeleton import read_csv

        try:
            tracks = read_csv(csv_path)
        except (ValueError, IndexError, KeyError) as exc:
            raise RunDirError(f"{csv_path} is damaged: {exc}") from exc
        _check_counts(csv_path, tracks, session)
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
            f"{run_dir} has neither {SKELETONS} nor {MASKS}: there is nothing to "
            "export. Run tracking first (or save the session) so that the masks are written."
        )
    from ..skeleton import skeletonize_labels

    labels = read_run_masks(run_dir, check_run(run_dir))
    ids = sorted(names_by_id) if names_by_id else None
    mask_names = [names_by_id[i] for i in ids] if ids else None
    log.info("No current %s in %s: skeletonizing %s", SKELETONS, run_dir, MASKS)
    kwargs: dict[str, Any] = {"object_ids": ids, "names": mask_names, "pixel_size": pixel_size}
    if fps is not None:
        kwargs["fps"] = float(fps)
    tracks = skeletonize_labels(labels, **kwargs)
    from ..skeleton import flip_head_tail

    for f in session.get("flips") or []:  # the user's head/tail flips, as the session does
        if isinstance(f, dict) and int(f.get("object", -1)) in names_by_id:
            flip_head_tail(tracks, int(f["object"]), int(f["start"]), int(f["stop"]))
    return tracks
