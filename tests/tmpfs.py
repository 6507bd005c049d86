"""A small tmpfs for fault-injection tests (a full disk, a read-only folder).

CI runs as root, where ``mount`` works; elsewhere the test skips with the reason.
"""

from __future__ import annotations

import contextlib
import subprocess
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def mount_tmpfs(folder: Path, options: str) -> subprocess.CompletedProcess:
    """Create ``folder`` and mount a tmpfs with ``options`` on it (check returncode)."""
    folder.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]
    return subprocess.run(cmd, capture_output=True, text=True)


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` for the block (skips the test where it cannot be)."""
    mounted = mount_tmpfs(folder, options)
    if mounted.returncode != 0:
        pytest.skip(f"a tmpfs ({options}) cannot be mounted here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
