"""Read a folder's ``session.json``: the one reader, used by sessions and exports alike.

:func:`read_session_json` finishes or waits for a save in progress (:func:`settle`),
then reads and checks the document: the JSON Schema and the cross-checks of
:func:`~.session_schema.validate_session_doc` for a file this program wrote. An export
may also read a run folder written by hand (a ``session.json`` without ``format``):
then only what the exporters use is checked (``objects``, ``fps``, ``pixel_size``).
:func:`check_files` compares the array files with the records ``session.json`` keeps.
Every failure is a :class:`~.session_schema.SessionFileError` naming the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..run_files import CORE_FILES, SESSION
from .run_lock import hold
from .run_set import file_record, pending, recover
from .session_schema import SessionFileError, validate_session_doc

if TYPE_CHECKING:
    import os

__all__ = ["check_files", "read_session_json", "settle"]

_WHAT = "the run folder written by `napari-sam2-worms track` or a saved session"


def settle(folder: str | os.PathLike, wait: float = 10.0) -> None:
    """Make sure no save is half-applied in ``folder`` before reading it.

    A save running in another process is waited for (up to ``wait`` seconds); a save
    that a crash interrupted after its commit is finished (:func:`.run_set.recover`).

    Raises
    ------
    SessionFileError
        The interrupted save cannot be finished (read-only folder), or another process
        is still saving after ``wait`` seconds.
    """
    folder = Path(folder)
    deadline = time.monotonic() + wait
    while pending(folder) and time.monotonic() < deadline:
        try:
            with hold(folder, "napari-sam2-worms recovery", timeout=0.0):
                recover(folder)
            return
        except OSError as exc:
            if getattr(exc, "errno", None) in (13, 30):  # EACCES, EROFS
                raise SessionFileError(
                    f"a save into {folder} was interrupted and the folder is not writable, "
                    "so it cannot be finished; make the folder writable and open it again"
                ) from exc
            time.sleep(0.05)  # a live writer is applying its save
    if pending(folder):
        raise SessionFileError(f"{folder} is being saved by another process; try again")


def _check_hand_written(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """Check what the exporters use of a ``session.json`` written by hand."""
    objects = doc.get("objects", [])
    if not isinstance(objects, list) or not all(
        isinstance(o, dict) and isinstance(o.get("id"), int) for o in objects
    ):
        raise SessionFileError(f"{path}: 'objects' must be a list of {{'id': int, 'name': str}}.")
    for key in ("fps", "pixel_size"):
        v = doc.get(key)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0):
            raise SessionFileError(f"{path}: {key!r} must be a positive number, got {v!r}.")
    return doc


def read_session_json(folder: str | os.PathLike, *, hand_written: bool = False) -> dict[str, Any]:
    """Read and check the ``session.json`` of a session (run) folder.

    Parameters
    ----------
    folder : the session or run folder.
    hand_written : also accept a ``session.json`` without ``"format"`` (a run folder
        written by hand, for export); only ``objects``, ``fps`` and ``pixel_size`` are
        checked then. A file with ``"format"`` always gets the full checks.

    Returns
    -------
    dict
        The document.

    Raises
    ------
    SessionFileError
        ``folder`` is not a folder, has no ``session.json``, or the file is unreadable,
        not JSON, not an object or fails the checks (the field is named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SessionFileError(f"{folder} is not a folder. Give {_WHAT}.")
    settle(folder)  # a save interrupted after its commit is finished first
    path = folder / SESSION
    if not path.is_file():
        raise SessionFileError(
            f"{folder} is not a session folder: {SESSION} is missing (give {_WHAT})"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SessionFileError(f"{path} cannot be read: {exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionFileError(f"{path} is damaged: it cannot be read as JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise SessionFileError(f"{path} must hold a JSON object, not {type(doc).__name__}")
    if hand_written and "format" not in doc:
        return _check_hand_written(doc, path)
    return validate_session_doc(doc, str(path))


def check_files(
    folder: str | os.PathLike, doc: dict[str, Any], names: tuple[str, ...] = CORE_FILES
) -> None:
    """Check that the files ``session.json`` records have the recorded size and hash.

    Folders saved before records were kept are not checked here (their readers check
    counts).

    Raises
    ------
    SessionFileError
        Naming the first file that is missing or differs.
    """
    folder = Path(folder)
    records = doc.get("files", {})
    for name in names:
        if name not in records:
            continue
        path = folder / name
        if not path.is_file():
            raise SessionFileError(f"{path} is missing; {SESSION} lists it")
        rec = records[name]
        actual = file_record(path)
        if actual["size"] != rec["size"]:
            raise SessionFileError(
                f"{path} is damaged: {actual['size']} bytes, {SESSION} recorded "
                f"{rec['size']} (a truncated copy or a full disk?)"
            )
        if actual["sha256"] != rec["sha256"]:
            raise SessionFileError(
                f"{path} is damaged or was changed outside napari-sam2-worms: its content "
                f"differs from what {SESSION} recorded"
            )
