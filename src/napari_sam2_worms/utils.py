"""Small shared helpers: atomic file writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputError(OSError):
    """A file could not be written (read-only folder, full disk...); nothing was replaced."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    On any exception (including ``KeyboardInterrupt`` and cancellation) the temporary
    file is removed and ``target`` is left as it was: an existing file is replaced only
    by a complete new one. Errors from an unwritable folder become :class:`OutputError`
    with a message that names the folder.

    Parameters
    ----------
    target : final path.
    suffix : suffix of the temporary file (defaults to ``target``'s, so that libraries
        that choose a format by extension still work).
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.",
            suffix=suffix if suffix is not None else target.suffix,
            dir=folder,
        )
    except OSError as exc:
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
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"Could not write {target}: {exc}. Nothing was replaced.") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


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
