"""The shared ring of label frames between a skeleton stream and its workers.

A :class:`FrameRing` is a memory-mapped temporary file (in ``/dev/shm`` where it has
room) holding a fixed number of label frames: the tracking thread copies each written
frame into a slot and the workers read it there (see :mod:`.stream`). Ring files carry
their owner's process id, so those of a killed process are found and removed
(:func:`remove_stale_rings`).
"""

from __future__ import annotations

import logging
import re
import weakref
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


#: bytes of label frames shared with the workers (a ring; see SkeletonStream)
RING_BYTES = 64 * 2**20

#: Linux's madvise option that allocates a mapping's pages at once (kernel 5.14+)
_MADV_POPULATE_WRITE = 23

#: ring files are named ``nsw-skeleton-ring-<pid of the owner>-<random>.u``
RING_PREFIX = "nsw-skeleton-ring-"

#: rings of this process, released at exit (see :func:`.stream.release_all`)
_LIVE_RINGS: weakref.WeakSet = weakref.WeakSet()


def _ring_folders() -> list[str]:
    import tempfile

    return sorted({"/dev/shm", tempfile.gettempdir()})


def _unlink_quietly(path: str) -> None:
    import contextlib
    import os

    with contextlib.suppress(OSError):
        os.unlink(path)


def remove_stale_rings() -> list[str]:
    """Delete ring files whose owning process is gone; return the removed paths.

    The owner was killed before it could remove them (``kill -9``, a crash, a power cut
    of a container). Never raises. Files of live processes, and names without an owner,
    are left.
    """
    import os

    from ..utils import pid_alive

    removed = []
    pattern = re.compile(re.escape(RING_PREFIX) + r"(\d+)-[^/]*\.u$")
    for folder in _ring_folders():
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            m = pattern.match(name)
            if m is None or pid_alive(int(m.group(1))):
                continue
            path = os.path.join(folder, name)
            try:
                os.unlink(path)
            except OSError:
                continue
            removed.append(path)
    if removed:
        log.info("removed %d skeleton ring file(s) left by processes that are gone", len(removed))
    return removed


class FrameRing:
    """A ring of ``size`` label frames in a shared, memory-mapped temporary file.

    The file is in ``/dev/shm`` where it has room, with its pages allocated up front.

    Writing a frame into pages never touched costs a page fault per 4 KiB: 1.7 ms for
    a 640x480 uint16 frame on a virtual machine, most of a 1-worm frame's host time.
    So a pool keeps its ring for the next stream and allocates it before tracking
    (:meth:`SkeletonPool.prepare`), in one ``madvise`` call (writing zeros where the
    system has no such call).
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, size: int) -> None:
        import mmap
        import os
        import tempfile

        self.size = int(size)
        self.frame_shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        nbytes = self.size * int(np.prod(self.frame_shape)) * self.dtype.itemsize
        folder = None  # the system's temporary folder, unless /dev/shm has room (RAM)
        try:
            st = os.statvfs("/dev/shm")
            if st.f_bavail * st.f_frsize > 2 * nbytes:
                folder = "/dev/shm"
        except (OSError, AttributeError):
            pass
        remove_stale_rings()
        fd, path = tempfile.mkstemp(prefix=f"{RING_PREFIX}{os.getpid()}-", suffix=".u", dir=folder)
        try:
            os.ftruncate(fd, nbytes)
            self._mmap = mmap.mmap(fd, nbytes)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        self.path = path
        _LIVE_RINGS.add(self)
        # the file goes with the object too (a pool dropped unclosed), or at exit
        self._unlink = weakref.finalize(self, _unlink_quietly, path)
        shape = (self.size, *self.frame_shape)
        self.frames = np.ndarray(shape, self.dtype, buffer=self._mmap)
        #: what a worker needs to map it: (path, shape, dtype)
        self.msg = (path, shape, self.dtype.str)
        try:
            self._populate()
        except OSError:
            self.release()
            raise

    def _populate(self) -> None:
        """Allocate every page now.

        Where the system has no such call, write zeros; where it has but the memory is not
        there (a full ``/dev/shm``), raise OSError: writing would kill the process (SIGBUS),
        the caller tracks without workers.
        """
        import errno
        import mmap

        try:
            self._mmap.madvise(getattr(mmap, "MADV_POPULATE_WRITE", _MADV_POPULATE_WRITE))
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # the call exists and failed: no room
                raise OSError(exc.errno, f"no memory for the skeleton ring: {exc}") from exc
            self.frames.fill(0)  # a kernel older than 5.14
        except (ValueError, AttributeError):  # no madvise on this system
            self.frames.fill(0)

    def matches(self, shape: tuple[int, ...], dtype: Any, size: int) -> bool:
        """Tell whether the ring holds ``size`` frames of this shape and type."""
        return (
            tuple(shape) == self.frame_shape
            and np.dtype(dtype) == self.dtype
            and int(size) == self.size
        )

    def release(self) -> None:
        """Delete the file (workers still mapping it keep their pages until they let go)."""
        import contextlib

        self.frames = None
        _LIVE_RINGS.discard(self)
        self._unlink()
        with contextlib.suppress(BufferError, ValueError):
            self._mmap.close()  # a frame view still held elsewhere keeps it open


def ring_frames(frame_nbytes: int, ring_bytes: int = RING_BYTES) -> int:
    """Frames in a ring of ``ring_bytes`` (4 to 256)."""
    return int(np.clip(int(ring_bytes) // max(int(frame_nbytes), 1), 4, 256))
