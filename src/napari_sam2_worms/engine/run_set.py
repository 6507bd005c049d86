"""Replace a set of files in a folder together.

After a crash at any point the folder holds the old set or the new set, whole.

A save writes every new file into a hidden staging folder beside them
(``.napari-sam2-worms-stage-*``) and flushes it to disk; then it writes the commit
record ``.napari-sam2-worms-commit.json`` (atomically: temporary file, flush, rename),
which lists the files to move into place and those to remove. That rename is the
commit point. The moves follow; the record is removed last.

- A crash before the commit record leaves the old files untouched; the staging folder
  is garbage, removed by the next save.
- A crash after it is finished by :func:`recover` (called before every save and
  before every read): the moves are redone (each is an atomic rename, and a file
  already moved is no longer in the staging folder), so the new set is complete.

Callers hold the folder's lock (:mod:`.run_lock`) around :func:`commit_files` and
:func:`recover`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..utils import OutputError
from .faults import fault_point

log = logging.getLogger(__name__)

COMMIT_FILE = ".napari-sam2-worms-commit.json"
STAGE_PREFIX = ".napari-sam2-worms-stage-"

Writer = Callable[[Path], None]


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a file (what session.json records)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # pragma: no cover - directories cannot be opened there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse: the renames are still atomic
        pass
    finally:
        os.close(fd)


def pending(folder: str | os.PathLike) -> bool:
    """Tell whether a commit in ``folder`` is unfinished (a save running, or a crash)."""
    return (Path(folder) / COMMIT_FILE).is_file()


def _apply(folder: Path, record: dict[str, Any]) -> None:
    stage = folder / str(record["stage"])
    for name in record["files"]:
        src = stage / name
        if src.exists():
            os.replace(src, folder / name)
            fault_point("save-rename")
    for name in record.get("remove", []):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    _fsync_dir(folder)
    (folder / COMMIT_FILE).unlink()
    shutil.rmtree(stage, ignore_errors=True)


def recover(folder: str | os.PathLike) -> bool:
    """Finish a commit that a crash interrupted (see the module docstring).

    Returns True when there was one. Raises ``OSError`` when the folder cannot be
    written (the commit then stays pending and the files are left as they are).
    """
    folder = Path(folder)
    path = folder / COMMIT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except ValueError:  # cannot happen (written atomically); never apply half a record
        log.warning("%s is unreadable; the save it belonged to is dropped", path)
        path.unlink()
        return False
    log.warning("%s: finishing a save that was interrupted", folder)
    _apply(folder, record)
    return True


def _remove_stale_stages(folder: Path) -> None:
    for p in folder.glob(STAGE_PREFIX + "*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def commit_files(
    folder: str | os.PathLike, writers: dict[str, Writer], remove: Iterable[str] = ()
) -> None:
    """Replace files of ``folder`` as one set.

    Parameters
    ----------
    folder : the folder (created if needed).
    writers : file name -> function writing that file at the path it is given (a path in
        the staging folder, so a writer can read the files written before it: the dict's
        order is the writing order).
    remove : files to remove in the same commit (those not in ``writers``).

    Raises
    ------
    OutputError
        The folder is not writable or the disk is full; nothing was replaced.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        recover(folder)
        _remove_stale_stages(folder)
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=folder))
    except OSError as exc:
        raise OutputError(
            f"Cannot write into {folder} ({exc.strerror or exc}). Nothing was replaced; "
            "choose another folder."
        ) from exc
    record = {
        "stage": stage.name,
        "files": list(writers),
        "remove": [r for r in remove if r not in writers],
    }
    try:
        for name, write in writers.items():
            path = stage / name
            write(path)
            _fsync_file(path)
            fault_point("save-write")
        _fsync_dir(stage)
        fd, tmp = tempfile.mkstemp(prefix=COMMIT_FILE + ".", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / COMMIT_FILE)  # the commit point
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        with contextlib.suppress(NameError, OSError):
            os.unlink(tmp)  # type: ignore[possibly-undefined]
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(
                f"Could not save into {folder}: {exc}. Nothing was replaced."
            ) from exc
        raise
    _fsync_dir(folder)
    fault_point("save-commit")
    try:
        _apply(folder, record)
    except OSError as exc:  # committed: the next save or read finishes it
        log.warning("%s: the save is committed but not yet in place (%s)", folder, exc)
