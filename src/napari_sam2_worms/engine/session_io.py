"""Save and open a whole tracking session: JSON plus array files, no pickle.

A session folder (also the run folder ``track`` writes) holds::

    session.json   what the user made and the settings (documented below)
    masks.tif      the label stack (T, H, W), uint8 or uint16, zlib-compressed TIFF
    scores.npy     (T, K) float32 per-frame object scores, NaN where not computed
    painted.npz    painted masks, one bool array per (frame, object): key "f<frame>_o<object>"
    skeletons.csv  (derived, optional) the skeletons of exactly this generation

``session.json`` (``"format": "napari-sam2-worms-session"``, ``"version": 1``, checked
against :data:`~.session_schema.SCHEMA`) has: ``generation`` (how many times the folder
was saved), ``files`` and ``derived`` (size and SHA-256 of each array file and of each
derived file, with the generation it was made from), ``video`` (path, path relative to
the folder, shape, fps, fingerprint: shape, dtype and a hash of a few decoded frames),
``backend``, ``fps``, ``pixel_size``, ``objects`` (id, name, colour), ``prompts`` (the
version-1 prompts dict), ``painted`` (list of {frame, object}), ``flips`` (object,
start, stop), ``score_objects`` (the object id of each column of scores.npy) and
``settings``.

Consistency (see ``docs/architecture.md``, "Run folders"): a save replaces the whole set
at once (:mod:`.run_set`), under the folder's lock (:mod:`.run_lock`); a derived file
not written by the same save is removed by it; a file whose size or hash differs from
what ``session.json`` records is refused by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..run_files import CORE_FILES, DERIVED_FILES, MASKS, PAINTED, SCORES, SESSION
from .prompts import parse_prompts
from .run_lock import hold
from .run_set import commit_files, file_record, recover
from .session import TrackedObject, TrackingSession
from .session_file import check_files, read_session_json, settle
from .session_schema import (
    SESSION_FORMAT,
    SESSION_VERSION,
    SessionFileError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = [
    "CORE_FILES",
    "DERIVED_FILES",
    "SESSION_FORMAT",
    "SESSION_VERSION",
    "SessionFileError",
    "add_derived",
    "autosave",
    "autosave_dir",
    "check_files",
    "check_video",
    "find_session_video",
    "frames_fingerprint",
    "load_session",
    "read_session_json",
    "save_session",
    "settle",
    "video_fingerprint",
]

#: how long a save waits for another save into the same folder (seconds)
LOCK_TIMEOUT = 30.0


def video_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Size and SHA-256 of the first and last MiB of a file (or of a folder's file list).

    The fingerprint of sessions saved before frame fingerprints (still checked when
    such a session is opened); new sessions store :func:`frames_fingerprint`.
    """
    p = Path(path)
    if p.is_dir():
        names = sorted(f.name for f in p.iterdir() if f.is_file())
        h = hashlib.sha256("\n".join(names).encode())
        return {"files": len(names), "sha256_head_tail": h.hexdigest()}
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > (2 << 20):
            fh.seek(size - (1 << 20))
            h.update(fh.read(1 << 20))
    return {"size": size, "sha256_head_tail": h.hexdigest()}


def _fingerprint_frames(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1}) if n > 0 else []


def frames_fingerprint(video, frames: list[int] | None = None) -> dict[str, Any]:
    """Shape, dtype and SHA-256 of a few decoded frames (first, middle, last) of a video.

    Decoded pixels, not file bytes: the same video re-saved elsewhere matches, another
    video of the same size does not.
    """
    shape = [int(s) for s in video.shape]
    frames = _fingerprint_frames(shape[0]) if frames is None else [int(f) for f in frames]
    h = hashlib.sha256()
    for f in frames:
        a = np.ascontiguousarray(np.asarray(video[f]))
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return {
        "shape": shape,
        "dtype": str(np.dtype(getattr(video, "dtype", np.uint8))),
        "frames": frames,
        "frames_sha256": h.hexdigest(),
    }


def _session_fingerprint(session: TrackingSession) -> dict[str, Any]:
    fp = getattr(session, "video_fingerprint", None)
    if fp is None:  # decoded once per session, not at every autosave
        fp = frames_fingerprint(session.video)
        session.video_fingerprint = fp
    return fp


def _current_generation(folder: Path) -> int:
    try:
        doc = json.loads((folder / SESSION).read_text(encoding="utf-8"))
        g = doc.get("generation", 0) if isinstance(doc, dict) else 0
        return int(g) if isinstance(g, int) else 0
    except (OSError, ValueError):
        return 0


def save_session(
    session: TrackingSession,
    folder: str | os.PathLike,
    *,
    derived: dict[str, Callable[[Path], None]] | None = None,
    purpose: str = "napari-sam2-worms save",
    lock_timeout: float | None = None,
) -> Path:
    """Write ``session`` into ``folder`` (created if needed), as one atomic set.

    Parameters
    ----------
    session : the session.
    folder : the session (run) folder.
    derived : derived files to write in the same set (name -> writer of that file at the
        given path), e.g. ``{"skeletons.csv": ...}``. Derived files not given are removed,
        since they would no longer match the session.
    purpose : shown to another process that finds the folder locked meanwhile.
    lock_timeout : seconds to wait for another writer of the folder (default
        :data:`LOCK_TIMEOUT`).

    Returns
    -------
    The folder.

    Raises
    ------
    RunFolderLockedError
        Another live process is writing into the folder.
    OutputError
        The folder is not writable or the disk is full; nothing was replaced.
    """
    import tifffile

    folder = Path(folder)
    derived = dict(derived or {})
    ids, scores = session.score_table()
    painted = {f"f{f}_o{o}": m for (f, o), m in sorted(session.prompts.masks.items())}
    fingerprint = _session_fingerprint(session)
    timeout = LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    with hold(folder, purpose, timeout=timeout):
        with contextlib.suppress(OSError):  # unwritable: commit_files says so below
            recover(folder)  # an interrupted save first: its generation counts
        generation = _current_generation(folder) + 1

        def write_masks(path: Path) -> None:
            # zlib level 1: label stacks are mostly background; against the default
            # level, 900 frames of 640x480 write in 0.41 vs 0.75 s and read in 0.24 vs
            # 1.11 s, for 3.2 vs 1.4 MB (this machine); every autosave pays it
            tifffile.imwrite(
                path,
                session.labels,
                compression="zlib",
                compressionargs={"level": 1},
                metadata={"axes": "TYX"},
            )

        def write_scores(path: Path) -> None:
            with open(path, "wb") as fh:
                np.save(fh, scores, allow_pickle=False)

        def write_painted(path: Path) -> None:
            with open(path, "wb") as fh:
                # numpy's stub reads the keyword arrays as its allow_pickle flag
                np.savez_compressed(fh, **painted)  # type: ignore[arg-type]

        def write_json(path: Path) -> None:
            doc = _session_doc(session, folder, ids, fingerprint)
            doc["generation"] = generation
            doc["files"] = {n: file_record(path.parent / n) for n in CORE_FILES}
            doc["derived"] = {
                n: {"generation": generation, **file_record(path.parent / n)} for n in derived
            }
            path.write_text(json.dumps(doc, indent=1), encoding="utf-8")

        writers: dict[str, Callable[[Path], None]] = {
            MASKS: write_masks,
            SCORES: write_scores,
            PAINTED: write_painted,
            **derived,
            SESSION: write_json,
        }
        commit_files(folder, writers, remove=[n for n in DERIVED_FILES if n not in derived])
    log.info("session saved to %s (generation %d)", folder, generation)
    return folder


def add_derived(
    folder: str | os.PathLike,
    derived: dict[str, Callable[[Path], None]],
    generation: int,
    *,
    purpose: str = "napari-sam2-worms save",
) -> None:
    """Add derived files (e.g. ``skeletons.csv``) made from a saved generation.

    The files, made from generation ``generation`` of the session in ``folder``, are
    written with their record in ``session.json`` as one atomic set.

    Raises
    ------
    SessionFileError
        The folder was saved again since ``generation``: the files would be stale.
    """
    folder = Path(folder)
    with hold(folder, purpose, timeout=LOCK_TIMEOUT):
        doc = read_session_json(folder)
        if doc.get("generation") != generation:
            raise SessionFileError(
                f"{folder} was saved again (generation {doc.get('generation')}) since "
                f"generation {generation}: {', '.join(derived)} would not match it"
            )

        def write_json(path: Path) -> None:
            records = dict(doc.get("derived") or {})
            for n in derived:
                records[n] = {"generation": generation, **file_record(path.parent / n)}
            path.write_text(json.dumps({**doc, "derived": records}, indent=1), encoding="utf-8")

        commit_files(folder, {**derived, SESSION: write_json})


def _session_doc(
    session: TrackingSession, folder: Path, ids: np.ndarray, fingerprint: dict[str, Any]
) -> dict[str, Any]:
    video_path = getattr(session.video, "path", None)
    video: dict[str, Any] = {"shape": list(session.video.shape), "fps": session.fps}
    if video_path is not None and Path(video_path).exists():
        video["path"] = str(Path(video_path).resolve())
        try:
            video["relative_path"] = os.path.relpath(Path(video_path).resolve(), folder.resolve())
        except ValueError:  # another drive on Windows
            video["relative_path"] = None
    video["fingerprint"] = fingerprint
    return {
        "format": SESSION_FORMAT,
        "version": SESSION_VERSION,
        "video": video,
        "backend": {
            "name": getattr(session.backend, "name", "unknown"),
            **getattr(session.backend, "recorded_settings", {}),
        },
        "fps": session.fps,
        "pixel_size": session.pixel_size,
        "objects": [
            {"id": o.id, "name": o.name, "color": o.color} for o in session.objects.values()
        ],
        "prompts": session.prompts.to_json_dict(),
        "painted": [{"frame": f, "object": o} for (f, o) in sorted(session.prompts.masks)],
        "flips": [{"object": o, "start": a, "stop": b} for o, a, b in session.flips],
        "score_objects": [int(i) for i in ids],
        "settings": session.settings,
    }


def find_session_video(folder: str | os.PathLike, doc: dict[str, Any]) -> Path:
    """Find the session's video: its absolute path, else its path relative to the folder."""
    v = doc.get("video", {})
    candidates = [v.get("path")]
    if v.get("relative_path"):
        candidates.append(str(Path(folder) / v["relative_path"]))
    for c in candidates:
        if c and Path(c).exists():
            return Path(c)
    raise SessionFileError(
        "the session's video was not found (looked for "
        f"{', '.join(str(c) for c in candidates if c)}); "
        "pass the video where it is now (napari: open it first; export: --video)"
    )


def check_video(doc: dict[str, Any], video, folder: str | os.PathLike | None = None) -> None:
    """Refuse a video that is not the one the session was made on.

    Compares the shape, then the stored fingerprint (a hash of a few decoded frames; for
    sessions saved before those, the file's size and head/tail hash). The message names
    both files and how to re-link on purpose.
    """
    v = doc["video"]
    given = getattr(video, "path", None) or "the given video"
    saved = v.get("path") or v.get("relative_path") or "its saved video"
    where = f" (session {folder})" if folder is not None else ""
    relink = (
        "Open the session with its own video, or re-link it to this one on purpose "
        "(load_session(..., relink=True); in napari: Open session, then confirm re-linking)."
    )
    if list(video.shape[:3]) != list(v["shape"][:3]):
        raise SessionFileError(
            f"{given} has shape {tuple(video.shape)}, but the session{where} was made on "
            f"{saved} of shape {tuple(v['shape'])}"
        )
    fp = v.get("fingerprint") or {}
    if "frames_sha256" in fp:
        frames = [f for f in fp.get("frames", []) if isinstance(f, int)]
        if any(f >= video.shape[0] for f in frames):
            frames = _fingerprint_frames(video.shape[0])
        mine = frames_fingerprint(video, frames)
        if mine["frames_sha256"] != fp["frames_sha256"]:
            raise SessionFileError(
                f"{given} is not the video this session{where} was made on ({saved}): the "
                f"same size, but frames {', '.join(map(str, frames))} differ. {relink}"
            )
    elif (
        "sha256_head_tail" in fp
        and getattr(video, "path", None) is not None
        and video_fingerprint(video.path) != fp
    ):
        raise SessionFileError(
            f"{given} is not the video this session{where} was made on ({saved}): its "
            f"content differs. {relink}"
        )


def _read_arrays(folder: Path, doc: dict[str, Any], shape: tuple[int, int, int]):
    import tifffile

    check_files(folder, doc)
    path = folder / MASKS
    if not path.is_file():
        raise SessionFileError(f"{path} is missing: the session's masks are gone")
    try:
        labels = tifffile.imread(path)
    except Exception as exc:  # zlib.error, struct errors...: tifffile raises many types
        raise SessionFileError(f"{path} is damaged and cannot be read ({exc})") from exc
    if labels.ndim == 2 and shape[0] == 1:
        labels = labels[None]
    if labels.shape != shape or labels.dtype.kind not in "ui":
        raise SessionFileError(
            f"{path} holds {labels.dtype} {labels.shape}; the session needs integer labels "
            f"of shape {shape}"
        )
    path = folder / SCORES
    n_obj = len(doc.get("score_objects", []))
    try:
        scores = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        if n_obj:
            raise SessionFileError(f"{path} is missing: the session's scores are gone") from None
        scores = np.zeros((shape[0], 0), np.float32)
    except Exception as exc:
        raise SessionFileError(f"{path} is damaged and cannot be read ({exc})") from exc
    if scores.shape != (shape[0], n_obj):
        raise SessionFileError(
            f"{path} has shape {scores.shape}; session.json's score_objects need "
            f"{(shape[0], n_obj)}"
        )
    painted: dict[tuple[int, int], np.ndarray] = {}
    if doc.get("painted"):
        path = folder / PAINTED
        try:
            with np.load(path, allow_pickle=False) as npz:
                for i, p in enumerate(doc["painted"]):
                    key = f"f{p['frame']}_o{p['object']}"
                    if key not in npz.files:
                        raise SessionFileError(
                            f"session.json: painted[{i}]: the painted mask of object "
                            f"{p['object']} on frame {p['frame']} is missing from {path}"
                        )
                    m = npz[key]
                    if m.shape != shape[1:]:
                        raise SessionFileError(
                            f"{path}: {key} has shape {m.shape}, the frames are {shape[1:]}"
                        )
                    painted[(int(p["frame"]), int(p["object"]))] = m.astype(bool)
        except SessionFileError:
            raise
        except Exception as exc:
            raise SessionFileError(f"{path} is missing or damaged ({exc})") from exc
    return labels, scores, painted


def load_session(
    folder: str | os.PathLike,
    backend,
    video=None,
    *,
    relink: bool = False,
    check_fingerprint: bool = True,
) -> TrackingSession:
    """Open a saved session.

    Parameters
    ----------
    folder : the session folder.
    backend : the backend to continue with (prompts are handed to it lazily, before
        the next click or propagation, so opening is fast).
    video : the lazy video; by default the saved path is opened.
    relink : use ``video`` even though it is not the video the session was made on
        (same shape needed); the next save records the new video. Without it such a
        video is refused with a message naming both files.
    check_fingerprint : False is the same as ``relink=True`` (kept for old callers).

    Raises
    ------
    SessionFileError
        The folder, ``session.json`` or an array file is missing, malformed or damaged
        (the message names the file and field), or the video is not the session's.
    """
    from ..video import open_video

    folder = Path(folder)
    doc = read_session_json(folder)
    relink = relink or not check_fingerprint
    if video is None:
        video = open_video(find_session_video(folder, doc))
    if relink:
        if list(video.shape[:3]) != list(doc["video"]["shape"][:3]):
            raise SessionFileError(
                f"{getattr(video, 'path', None) or 'the video'} has shape "
                f"{tuple(video.shape)}, the session was made on {tuple(doc['video']['shape'])}"
            )
        log.warning("session %s re-linked to %s", folder, getattr(video, "path", video))
    else:
        check_video(doc, video, folder)
    t, h, w = (int(s) for s in video.shape[:3])
    labels, scores, painted = _read_arrays(folder, doc, (t, h, w))
    prompts = doc.get("prompts") or {"version": 1, "points": [], "boxes": []}
    try:
        store = None
        if prompts.get("points") or prompts.get("boxes"):
            store, _ = parse_prompts(prompts, t)
    except (ValueError, TypeError, KeyError) as exc:
        raise SessionFileError(f"{folder / SESSION}: prompts: {exc}") from exc
    session = TrackingSession(video, backend, fps=doc.get("fps"), pixel_size=doc.get("pixel_size"))
    for o in doc["objects"]:
        oid = int(o["id"])
        try:
            session.add_object(name=o["name"], object_id=oid)
        except ValueError:  # a name another object has (sessions saved before the rule)
            session.add_object(name=f"{o['name']}-{oid}", object_id=oid)
            log.warning(
                "%s: object %d is called %r like another object; opened as %r",
                folder,
                oid,
                o["name"],
                session.objects[oid].name,
            )
        color = o.get("color") or session.objects[oid].color
        session.objects[oid] = TrackedObject(oid, session.objects[oid].name, color)
    session.labels = labels
    for j, o in enumerate(doc.get("score_objects", [])):
        session.scores[o] = scores[:, j].astype(np.float32)
    if store is not None:
        session.prompts.points, session.prompts.boxes = store.points, store.boxes
    session.prompts.masks.update(painted)
    session.flips = [
        (int(f["object"]), int(f["start"]), int(f["stop"])) for f in doc.get("flips", [])
    ]
    session.settings = dict(doc.get("settings", {}))
    if not relink:
        session.video_fingerprint = doc["video"].get("fingerprint") or None
        if not (session.video_fingerprint or {}).get("frames_sha256"):
            session.video_fingerprint = None  # an old fingerprint: make a new one on save
    session._backend_dirty = bool(session.prompts.keys())
    return session


def autosave_dir(session: TrackingSession) -> Path:
    """Return the folder :func:`autosave` writes into.

    The folder the session was last saved to or opened from
    (``session.settings["session_dir"]``), else a per-user folder named after the video
    (``$NAPARI_SAM2_WORMS_AUTOSAVE`` or ``<user cache>/napari-sam2-worms/autosave``).
    """
    if session.settings.get("session_dir"):
        return Path(session.settings["session_dir"])
    root = os.environ.get("NAPARI_SAM2_WORMS_AUTOSAVE")
    if root is None:
        import pooch

        root = str(pooch.os_cache("napari-sam2-worms") / "autosave")
    path = getattr(session.video, "path", None)
    stem = Path(path).stem if path else "untitled"
    key = hashlib.sha256(str(Path(path).resolve() if path else id(session)).encode()).hexdigest()
    return Path(root) / f"{stem}-{key[:10]}"


def autosave(session: TrackingSession) -> Path | None:
    """Save ``session`` to :func:`autosave_dir` after a propagation; never raises.

    A failure (read-only or full disk, a folder another process is writing) is logged
    and returns None: the session in memory is untouched and the user can still save
    elsewhere.
    """
    folder = autosave_dir(session)
    try:
        # a short wait: a folder another process writes (a running `track`) is skipped
        save_session(session, folder, purpose="napari-sam2-worms autosave", lock_timeout=2.0)
    except OSError as exc:
        log.warning("autosave to %s failed: %s", folder, exc)
        return None
    return folder
