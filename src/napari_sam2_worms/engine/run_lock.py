"""A lock on a run folder, so that one process at a time writes a session into it.

The lock is ``<folder>/.napari-sam2-worms.lock``, held with an OS file lock
(``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows): the system releases it when
the holder dies, even by ``kill -9``, so a lock is never stale for good. The file holds
who took it (process id, host, command, time); a file left by a process that is gone is
taken over with a logged notice naming that process.

Within one process the lock is re-entrant for the thread that holds it (``track`` holds
it for the whole run, its autosaves take it again); another thread of the same process
waits like another process would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

LOCK_FILE = ".napari-sam2-worms.lock"

__all__ = [
    "LOCK_FILE",
    "RunFolderError",
    "RunFolderExistsError",
    "RunFolderLockedError",
    "RunLock",
    "hold",
]


class RunFolderError(OSError):
    """A run folder that cannot be used as asked; the message says why and what to do."""


class RunFolderExistsError(RunFolderError, FileExistsError):
    """The folder holds a run already.

    Pass ``overwrite=True`` (``--overwrite``) to replace it, or ``resume=True``
    (``--resume``) to continue it.
    """


class RunFolderLockedError(RunFolderError):
    """Another live process (or thread) is writing into the folder."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":
        return True  # os.kill(pid, 0) would end the process there; the OS lock decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _try_os_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # a file system without locks: go on, with a notice
        log.warning("file locks are not supported here (%s); the run folder is not locked", exc)
    return True


def _describe(info: dict[str, Any]) -> str:
    what = info.get("purpose") or "napari-sam2-worms"
    since = info.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"{what} (process {info.get('pid', '?')} on {info.get('host', '?')}{when})"


# held locks of this process: resolved folder -> (RunLock, owner thread id, depth)
_HELD: dict[str, list[Any]] = {}
_HELD_LOCK = threading.Lock()


class RunLock:
    """An exclusive lock on a run folder (see the module docstring).

    Parameters
    ----------
    folder : the run folder (created if needed).
    purpose : what the holder does, shown to whoever finds the folder locked
        (e.g. ``"napari-sam2-worms track"``).
    lasting : the holder keeps the lock for long (a whole ``track`` run): others then
        give up at once instead of waiting for it.
    """

    def __init__(
        self, folder: str | os.PathLike, purpose: str = "napari-sam2-worms", lasting: bool = False
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.purpose = purpose
        self.lasting = lasting
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        """Read what the lock file says about its holder ({} when absent or unreadable)."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def acquire(self, timeout: float = 0.0) -> RunLock:
        """Take the lock, waiting up to ``timeout`` seconds for its holder.

        Raises
        ------
        RunFolderLockedError
            Another live process holds it after ``timeout``.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                from ..utils import OutputError

                err = OutputError(
                    f"Cannot write into {self.folder} ({exc.strerror or exc}). Nothing was "
                    "replaced; choose another folder."
                )
                err.errno = exc.errno  # EACCES, EROFS...: readers tell a read-only folder
                raise err from exc
            if _try_os_lock(fd):
                # the file may have been removed (and a new one locked) by a releasing
                # holder between our open and our lock: then try again on the new file
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
            os.close(fd)
            info = self.holder()
            if time.monotonic() >= deadline or info.get("lasting"):
                raise RunFolderLockedError(
                    f"{self.folder} is in use by {_describe(info)}; wait for it to finish "
                    "or choose another folder"
                )
            time.sleep(0.05)
        previous = self.holder()
        host = socket.gethostname()
        if previous.get("pid") and previous.get("pid") != os.getpid():
            alive = previous.get("host") == host and _pid_alive(int(previous["pid"]))
            log.warning(
                "%s: took over the lock left by %s, which %s",
                self.folder,
                _describe(previous),
                "no longer holds it" if alive else "is no longer running",
            )
        info = {
            "pid": os.getpid(),
            "host": host,
            "purpose": self.purpose,
            "since": time.time(),
            "lasting": self.lasting,
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back and remove the lock file."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            self.path.unlink()  # before unlocking: a waiter then retries on a new file
        os.close(fd)

    def __enter__(self) -> RunLock:
        """Acquire the lock (see :meth:`acquire`)."""
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        """Release the lock."""
        self.release()


@contextlib.contextmanager
def hold(
    folder: str | os.PathLike,
    purpose: str = "napari-sam2-worms",
    timeout: float = 0.0,
    lasting: bool = False,
) -> Iterator[RunLock]:
    """Hold the lock of ``folder`` for a block.

    Re-entrant for the thread that holds it already (e.g. a save inside ``track``), else
    :meth:`RunLock.acquire` with ``timeout`` (``lasting``: see :class:`RunLock`).
    """
    key = str(Path(folder).resolve())
    me = threading.get_ident()
    with _HELD_LOCK:
        entry = _HELD.get(key)
        mine = entry if entry is not None and entry[1] == me else None
        if mine is not None:
            mine[2] += 1
    if mine is not None:
        try:
            yield mine[0]
        finally:
            with _HELD_LOCK:
                mine[2] -= 1
        return
    lock = RunLock(folder, purpose, lasting)
    deadline = time.monotonic() + max(0.0, timeout)
    while True:  # another thread of this process holds it: wait for it like for a process
        with _HELD_LOCK:
            if key not in _HELD:
                _HELD[key] = [lock, me, 1]
                break
        if time.monotonic() >= deadline:
            raise RunFolderLockedError(
                f"{folder} is being written by another task of this program; try again"
            )
        time.sleep(0.05)
    try:
        lock.acquire(max(0.0, deadline - time.monotonic()))
    except BaseException:
        with _HELD_LOCK:
            _HELD.pop(key, None)
        raise
    try:
        yield lock
    finally:
        with _HELD_LOCK:
            _HELD.pop(key, None)
        lock.release()
