"""Small shared helpers: atomic file writes, temporary files a killed process leaves.

Temporary files are named after the process that writes them
(``.<target>.nsw-<host>-<pid>-<random><suffix>``, see :func:`temp_prefix`): a process
killed with ``kill -9`` cannot remove its own, so the next write of the same target
removes those of processes that are gone (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

#: a folder with less free space than this (bytes) after a failed write is taken as full
FULL_DISK_BYTES = 1 << 20

_TAG = "nsw"


class OutputError(OSError):
    """A file could not be written (read-only folder, full disk...); nothing was replaced."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def temp_prefix(name: str) -> str:
    """Prefix of this process's temporary files for a target called ``name``."""
    return f".{name}.{_TAG}-{_host()}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Tell whether a process ``pid`` runs on this machine (True when it cannot be told)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        try:
            import psutil
        except ImportError:
            return True
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, it is someone else's
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary files (or folders) that dead writers left in ``folder``.

    Those of target ``name`` (any target: None) left by processes of this machine that
    are gone (killed while writing). Returns what was removed; never raises.
    """
    import shutil

    folder = Path(folder)
    target = re.escape(name) if name is not None else r".+"
    pattern = re.compile(r"\." + target + re.escape(f".{_TAG}-{_host()}-") + r"(\d+)-")
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted write in %s", len(removed), folder)
    return removed


def is_disk_full(exc: BaseException | None, folder: str | os.PathLike) -> bool:
    """Tell whether ``exc`` means a full disk.

    True when ``exc`` (or its cause chain) is ENOSPC/EDQUOT, or when ``folder``'s disk
    has less than :data:`FULL_DISK_BYTES` free (libraries such as netCDF report a full
    disk as a generic error).
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < FULL_DISK_BYTES


def disk_full_error(target: str | os.PathLike, folder: str | os.PathLike) -> OutputError:
    """Make the one-line error for a write that failed on a full disk."""
    exc = OutputError(
        f"Could not write {target}: the disk holding {folder} is full (no space left). "
        "Free some space or choose another folder. Nothing was replaced."
    )
    exc.errno = errno.ENOSPC
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(" ,(") if text else type(exc).__name__


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    On any exception (including ``KeyboardInterrupt`` and cancellation) the temporary
    file is removed and ``target`` is left as it was: an existing file is replaced only
    by a complete new one. Errors from an unwritable folder become :class:`OutputError`
    with a message that names the folder; a full disk says so, whatever the library
    that wrote raised. Temporary files of an earlier write of ``target`` killed on
    this machine are removed first (:func:`remove_stale_temps`). A symbolic link is
    written through (its target replaced, the link kept); a ``target`` that exists and
    is not a regular file (a pipe, a device) is refused.

    Parameters
    ----------
    target : final path.
    suffix : suffix of the temporary file (defaults to ``target``'s, so that libraries
        that choose a format by extension still work).
    """
    target = Path(target)
    if target.is_symlink():  # write where the link points; the link stays a link
        target = Path(os.path.realpath(target))
    if target.exists() and not target.is_file():
        raise OutputError(
            f"Cannot write {target}: it is not a regular file (a folder, a pipe or a device); "
            "choose a file name."
        )
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder, target.name)
        fd, tmp = tempfile.mkstemp(
            prefix=temp_prefix(target.name),
            suffix=suffix if suffix is not None else target.suffix,
            dir=folder,
        )
    except OSError as exc:
        if is_disk_full(exc, folder if folder.is_dir() else "."):
            raise disk_full_error(target, folder) from exc
        raise OutputError(
            f"Cannot write {target}: the folder {folder} is not writable ({exc.strerror}). "
            "Choose another output folder."
        ) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give the usual permissions
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    except BaseException as exc:
        full = is_disk_full(exc, folder)  # before the temporary file frees its space
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if full and not (isinstance(exc, OutputError) and exc.errno == errno.ENOSPC):
            raise disk_full_error(target, folder) from exc
        if isinstance(exc, OutputError) or not isinstance(exc, OSError):
            raise
        raise OutputError(
            f"Could not write {target}: {_first_line(exc)}. Nothing was replaced."
        ) from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))
