"""The batch manifest (``<out>/manifest.json``) and the output folder's lock.

``manifest.json`` (``"format": "napari-sam2-worms-batch"``, ``"version": 1``) maps each
input (its resolved path) to an entry::

    {"video": ..., "name": "plate1", "output": "plate1", "init": "prompts",
     "inputs": {"fingerprint": {...}, "prompts": "<sha256>", "settings": {...},
                "digest": "<sha256 of all of it>"},
     "status": "done" | "failed" | "interrupted" | "running",
     "error": null | "one line", "traceback": "...",
     "started": <unix time>, "finished": <unix time>, "seconds": 12.3,
     "timings": {"open": .., "prompts": .., "track": .., "write": .., "thumbnail": ..},
     "metrics": {"frames": .., "objects": .., "good_skeletons_pct": .., "flags": {..},
                 "frames_per_s": .., "thumbnail": "thumbnails/plate1.png"},
     "worker": {"host": .., "pid": .., "name": .., "cuda_visible_devices": ..,
                "rss_mb": .., "gpu_peak_mb": ..}}

It is rewritten atomically after every video, by the command only (workers return
their results to it). A job is skipped when its entry is ``done``, its ``digest`` is
the same and its run folder is still there; anything else runs again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..run_files import SESSION
from ..utils import OutputError, atomic_write_text

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".batch.lock"
FORMAT = "napari-sam2-worms-batch"
VERSION = 1


class Manifest:
    """The entries of ``<out>/manifest.json``, keyed by input path."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / MANIFEST
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise OutputError(
                    f"{self.path} is damaged ({exc}); move it away to start the batch afresh"
                ) from exc
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise OutputError(f"{self.path} is not a napari-sam2-worms batch manifest")
            if doc.get("version") != VERSION:
                raise OutputError(f"{self.path} has version {doc.get('version')}; this reads 1")
            videos = doc.get("videos", {})
            if not isinstance(videos, dict) or not all(
                isinstance(e, dict) for e in videos.values()
            ):
                raise OutputError(
                    f'{self.path} is damaged (its "videos" are not one record per video); '
                    "remove it to start the batch over, or restore it"
                )
            self.entries = dict(videos)

    def is_done(self, key: str, digest: str) -> bool:
        """Tell whether ``key`` was done with inputs ``digest`` and its run folder exists."""
        e = self.entries.get(key)
        if not e or e.get("status") != "done" or e.get("inputs", {}).get("digest") != digest:
            return False
        return (self.out / str(e.get("output", "")) / SESSION).is_file()

    def update(self, key: str, **fields: Any) -> None:
        """Set ``fields`` on the entry of video ``key`` (in memory; :meth:`save` writes)."""
        self.entries.setdefault(key, {}).update(fields)

    def save(self) -> None:
        """Write the manifest atomically."""
        doc = {"format": FORMAT, "version": VERSION, "videos": self.entries}
        atomic_write_text(self.path, json.dumps(doc, indent=1, default=str))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold ``<out>/.batch.lock`` while a batch writes there.

    A second batch into the same folder is refused with a one-line
    :class:`~napari_sam2_worms.utils.OutputError`; the lock of a process that is gone
    (same host) is taken over with a notice.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                other = {}
            pid, host = other.get("pid"), other.get("host")
            if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                log.warning("taking over the lock of batch process %s, which is gone", pid)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise OutputError(
                f"another batch (process {pid} on {host}) is writing to {out}; wait for it to "
                f"end or choose another --out (remove {path} if that batch is gone)"
            ) from None
        except OSError as exc:
            raise OutputError(f"cannot write to {out}: {exc.strerror}") from exc
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:  # pragma: no cover - the stale lock came back between two attempts
        raise OutputError(f"could not take the lock {path}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def remove_leftovers(out: Path) -> None:
    """Remove half-written run folders of an earlier batch that was killed."""
    import shutil

    for p in out.glob(".*.partial-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    for p in out.glob(".*.old-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
