"""Checks of the command line's options, made before any work starts, and its exit.

:func:`validate_args` runs before a command opens a video, loads a model or tracks a
frame: every output path must be one this process can create or write into, every
numeric option finite and positive (or in its own range), ``--frames`` well formed. A
failure is a :class:`UsageError` (a ``ValueError``), one line on stderr and exit
status 2, instead of a run lost at its end.

:func:`exit_cleanup` wraps a command: SIGTERM ends it as an exception (so atomic writes
remove their temporary files and ``finally`` blocks run), and on every way out the
skeleton workers and their shared-memory rings are released.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .utils import temp_prefix

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator


class UsageError(ValueError):
    """An option the command cannot run with; the message names it."""


#: outputs of each command: attribute -> "dir" (a folder written into) or "file"
OUTPUTS: dict[str, dict[str, str]] = {
    "track": {"out": "dir"},
    "skeletonize": {"out": "file"},
    "export": {"out": "file"},  # a folder format (masks-png): a folder (see _output_kind)
    "batch": {"out": "dir"},
}

#: every float option must be finite and > 0 when given (see check_numbers);
#: int options and their smallest value
INT_MINIMUM = {"points": 2, "stride": 1, "workers": 0, "skeleton_workers": 0, "frames_per_save": 1}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_frames(text: str | None) -> tuple[int | None, int | None]:
    """``START:STOP`` (both inclusive, either may be empty) -> (start, stop).

    Raises
    ------
    UsageError
        Not two integers around one colon, a negative number, or START > STOP.
    """
    if text is None or not str(text).strip():
        return None, None
    parts = str(text).strip().split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a, b = ((int(p) if p.strip() else None) for p in parts)
    except ValueError:
        raise UsageError(
            f"--frames takes START:STOP, two frame numbers (e.g. 0:499, 100: or :99); got {text!r}"
        ) from None
    if (a is not None and a < 0) or (b is not None and b < 0):
        raise UsageError(f"--frames: frame numbers start at 0; got {text!r}")
    if a is not None and b is not None and a > b:
        raise UsageError(f"--frames: START must not be after STOP; got {text!r}")
    return a, b


def parse_objects(text: str) -> list[int]:
    """``"1,3,4"`` -> [1, 3, 4] (object ids are integers >= 1)."""
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        ids = []
    if not ids or min(ids) < 1:
        raise UsageError(f"--objects takes object ids separated by commas (e.g. 1,3); got {text!r}")
    return ids


def check_numbers(args: argparse.Namespace) -> None:
    """Every float option finite and > 0, every known int option in its range."""
    for name, value in sorted(vars(args).items()):
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, float):
            if not math.isfinite(value) or value <= 0:
                raise UsageError(
                    f"{_flag(name)} must be a finite number greater than 0; got {value:g}"
                )
        elif isinstance(value, int) and name in INT_MINIMUM and value < INT_MINIMUM[name]:
            raise UsageError(f"{_flag(name)} must be at least {INT_MINIMUM[name]}; got {value}")


def _probe(folder: Path) -> str | None:
    """Say why files cannot be created in ``folder`` (None: they can).

    Creates and removes one empty file: permission bits alone say nothing for root, a
    read-only mount does.
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied or read-only file system"
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix("nsw-write-check"), dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return None


def check_output(path: str | os.PathLike, kind: str, flag: str = "--out") -> None:
    """Raise :class:`UsageError` unless ``path`` can be written as ``kind``.

    Parameters
    ----------
    path : the output path given.
    kind : ``"dir"`` (a folder the command writes into, created if needed) or
        ``"file"`` (a file, its folders created if needed).
    flag : the option's name, for the message.
    """
    if not str(path).strip():  # before Path(): Path("") is "." (the current folder)
        raise UsageError(f"{flag} is empty; give a path")
    path = Path(path).expanduser()
    if path.exists():
        if kind == "dir" and not path.is_dir():
            raise UsageError(f"{flag} {path} is a file, not a folder; give a folder")
        if kind == "file" and path.is_dir():
            raise UsageError(f"{flag} {path} is a folder; give a file name")
        if kind == "file" and not path.is_file():
            raise UsageError(f"{flag} {path} is not a regular file (a pipe or a device)")
    folder = path if (kind == "dir" and path.is_dir()) else path.parent
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path} cannot be created: {existing} is a file, not a folder")
    why = _probe(existing)
    if why is not None:
        raise UsageError(f"{flag} {path}: cannot write in {existing} ({why}); choose another place")


#: the largest object id (label stacks are uint16 at most, as a session's)
MAX_LABEL_ID = 65535


def check_label_ids(labels, path: str | os.PathLike) -> None:
    """Raise :class:`UsageError` for label ids outside 0..:data:`MAX_LABEL_ID`.

    An id of 4e9 would make per-id tables of 4e9 entries.
    """
    import numpy as np

    if labels.size == 0 or labels.dtype.kind == "b":
        return
    lo, hi = int(np.min(labels)), int(np.max(labels))
    if lo < 0 or hi > MAX_LABEL_ID:
        bad = lo if lo < 0 else hi
        raise UsageError(
            f"{path} holds the label id {bad}; ids must be 0 (background) to {MAX_LABEL_ID}. "
            "Relabel the stack (e.g. skimage.segmentation.relabel_sequential)"
        )


def _output_kind(args: argparse.Namespace, name: str, kind: str) -> str:
    if args.command == "export" and name == "out":
        from .export import FORMATS

        fmt = FORMATS.get(getattr(args, "format", None) or "")
        if fmt is not None and fmt.folder:
            return "dir"
    return kind


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_is_not_an_input(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` when ``--out`` would overwrite what the command reads.

    ``track``: the video (or the folder of frames: ``masks.tif`` would become a frame);
    ``skeletonize``: its label stack; ``export``: the run folder, one of its files, or a
    folder holding the run. Links are followed. (The session's video, for ``export``,
    is checked by :func:`check_out_is_not_the_video` once the session is read.)
    """
    out = getattr(args, "out", None)
    if out is None or not str(out).strip():
        return
    o = _real(out)

    def refuse(what: str) -> None:
        raise UsageError(
            f"--out {out} is {what}; an output never replaces an input: choose another path"
        )

    if args.command == "track" and o == _real(args.video):
        refuse("the video being tracked")
    if args.command == "skeletonize" and o == _real(args.masks):
        refuse("the label stack being read")
    if args.command == "export":
        from .run_files import CORE_FILES, DERIVED_FILES, SESSION

        run = _real(args.run_dir)
        if _inside(run, o):
            refuse("the run folder" if o == run else "a folder that holds the run")
        if o.parent == run and o.name in (SESSION, *CORE_FILES, *DERIVED_FILES):
            refuse(f"the run's own {o.name}")


def check_out_is_not_the_video(out: str | os.PathLike, video: str | os.PathLike | None) -> None:
    """Raise :class:`UsageError` when an export's ``out`` is the session's video."""
    if video and _real(out) == _real(video):
        raise UsageError(
            f"--out {out} is the session's video; an output never replaces an input: "
            "choose another path"
        )


def validate_args(args: argparse.Namespace) -> None:
    """Check a parsed command line before the command does any work (see module doc)."""
    check_numbers(args)
    if getattr(args, "frames", None) is not None:
        parse_frames(args.frames)
    objects = getattr(args, "objects", None)
    if isinstance(objects, str):
        parse_objects(objects)
    for name, kind in OUTPUTS.get(args.command, {}).items():
        value = getattr(args, name, None)
        if value is not None:
            check_output(value, _output_kind(args, name, kind), _flag(name))
    check_out_is_not_an_input(args)
    if args.command == "download" and not getattr(args, "list", False):
        from .backends.sam2.checkpoints import cache_dir

        check_output(cache_dir(), "dir", "the checkpoint cache")


class _Terminated(SystemExit):
    """SIGTERM, raised in the main thread so that cleanup runs (exit status 143)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated(128 + signal.SIGTERM)


def interrupt_status(exc: BaseException) -> int | None:
    """Return the exit status of the signal behind ``exc``, or None when there was none.

    A ``KeyboardInterrupt`` (Ctrl-C, 130) or a SIGTERM (143) raised while the main
    thread was inside ``threading`` (starting a thread, waiting on a condition) can leave
    a lock half released; what surfaces then is a ``RuntimeError`` raised while handling
    the signal's exception. This walks the ``__context__`` chain for that exception.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return 130
        if isinstance(cause, _Terminated):
            return 128 + signal.SIGTERM
        seen.add(id(cause))
        cause = cause.__context__
    return None


@contextlib.contextmanager
def exit_cleanup() -> Iterator[None]:
    """Run a command so that every exit path releases what it holds.

    SIGTERM becomes an exception (exit status 143) in the main thread; skeleton workers
    and their ``/dev/shm`` rings are released on the way out, whatever the way.
    """
    old = None
    main = threading.current_thread() is threading.main_thread()
    sigterm = getattr(signal, "SIGTERM", None)
    if main and sigterm is not None and signal.getsignal(sigterm) is not signal.SIG_IGN:
        old = signal.signal(signal.SIGTERM, _on_sigterm)  # an ignored SIGTERM stays ignored
    stream = sys.modules.get("napari_sam2_worms.skeleton.stream")
    before = stream.live_pools() if stream is not None else set()  # not this command's
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        stream = sys.modules.get("napari_sam2_worms.skeleton.stream")
        if stream is not None:
            stream.release_all(keep=before)
