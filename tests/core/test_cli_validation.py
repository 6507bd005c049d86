"""Every output path and numeric option is checked before any work starts.

The real command runs in a subprocess. A bad option must give one line on stderr and
exit status 2 before the video is opened, the model loaded or a frame tracked.

Read-only folders: CI runs as root, which ignores permission bits, so a read-only
tmpfs is mounted for the test (as root); where mounting is not permitted, a non-root
user gets a ``chmod 555`` folder instead, and root skips with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile

from fixtures.cli import PKG_ROOT, cli_command, cli_env
from fixtures.plates import write_prompts
from tmpfs import mount_tmpfs

if TYPE_CHECKING:
    from pathlib import Path


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``napari-sam2-worms ARGS`` in a fresh interpreter running this checkout's code."""
    env = cli_env(cwd / "cache")
    return subprocess.run(
        cli_command(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Assert exit status 2 and exactly one line on stderr holding ``words``; return it."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write into, root included (a read-only tmpfs mount)."""
    folder = tmp_path / "ro"
    mounted = mount_tmpfs(folder, "ro,size=64k")
    if mounted.returncode == 0:
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], capture_output=True)
        return
    if os.geteuid() == 0:
        pytest.skip(f"root cannot mount a read-only tmpfs here ({mounted.stderr.strip()})")
    folder.chmod(0o555)  # not root: permission bits are enough
    try:
        yield folder
    finally:
        folder.chmod(0o755)


@pytest.fixture
def inputs(tmp_path, small_plate):
    """A 12-frame TIFF video, its prompts, a label stack and a run folder to export."""
    video = tmp_path / "plate.tif"
    tifffile.imwrite(video, small_plate.video)
    prompts = write_prompts(tmp_path / "p.json", small_plate, 0)
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, small_plate.labels)
    (tmp_path / "a_file").write_text("not a folder")
    return {"video": video, "prompts": prompts, "labels": labels}


def _track(inputs, *extra: str) -> list[str]:
    # a checkpoint that does not exist: had the model loaded first, the error would be it
    return [
        "track", str(inputs["video"]), "--prompts", str(inputs["prompts"]),
        "--backend", "sam2", "--checkpoint", "missing.pt", "--no-download", *extra,
    ]  # fmt: skip


def test_track_into_a_read_only_folder_fails_before_tracking(tmp_path, inputs, read_only_dir):
    for out in (read_only_dir, read_only_dir / "run"):
        proc = run_cli(*_track(inputs, "--out", str(out)), cwd=tmp_path)
        line = one_line_error(proc, "--out", "cannot write in", str(read_only_dir))
        assert "missing.pt" not in line and "tracking" not in proc.stderr
    assert os.listdir(read_only_dir) == []


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--out", "a_file"), ("--out a_file is a file, not a folder",)),
        (("--out", "a_file/run"), ("a_file is a file, not a folder",)),
        (("--out", "run", "--pixel-size", "0"), ("--pixel-size", "greater than 0", "got 0")),
        (("--out", "run", "--fps", "nan"), ("--fps", "finite", "nan")),
        (("--out", "run", "--fps=-25"), ("--fps", "greater than 0")),
        (("--out", "run", "--points", "1"), ("--points must be at least 2",)),
        (("--out", "run", "--workers", "-2"), ("--workers must be at least 0",)),
        (("--out", "run", "--frames", "abc"), ("--frames takes START:STOP", "'abc'")),
        (("--out", "run", "--frames", "9:3"), ("--frames", "START must not be after STOP")),
        (("--out", "run", "--fps", "fast"), ("--fps", "invalid float value", "--help")),
    ],
)
def test_track_options_are_checked_first(tmp_path, inputs, extra, words):
    proc = run_cli(*_track(inputs, *extra), cwd=tmp_path)
    line = one_line_error(proc, *words)
    assert "missing.pt" not in line
    assert not (tmp_path / "run").exists()


def test_skeletonize_and_export_options(tmp_path, inputs, read_only_dir, small_plate):
    labels = str(inputs["labels"])
    proc = run_cli("skeletonize", labels, "--out", "s.csv", "--pixel-size", "0", cwd=tmp_path)
    one_line_error(proc, "--pixel-size", "greater than 0")
    (tmp_path / "folder").mkdir()
    proc = run_cli("skeletonize", labels, "--out", "folder", cwd=tmp_path)
    one_line_error(proc, "--out folder is a folder")
    huge = small_plate.labels.astype(np.uint32)
    huge[huge == 2] = 4_000_000_000  # once a MemoryError
    tifffile.imwrite(tmp_path / "huge.tif", huge)
    proc = run_cli("skeletonize", "huge.tif", "--out", "s.csv", cwd=tmp_path)
    one_line_error(proc, "huge.tif holds the label id 4000000000", "65535")
    assert not (tmp_path / "s.csv").exists()
    # export: checked before the run folder is even read (it does not exist here)
    export = ("export", "no_run", "--format")
    proc = run_cli(*export, "masks-png", "--out", "a_file", cwd=tmp_path)
    one_line_error(proc, "--out a_file is a file, not a folder")
    proc = run_cli(*export, "csv", "--out", str(read_only_dir / "t.csv"), cwd=tmp_path)
    one_line_error(proc, "--out", "cannot write in")
    proc = run_cli(*export, "overlay-mp4", "--out", "o.mp4", "--scale", "0", cwd=tmp_path)
    one_line_error(proc, "--scale", "greater than 0")
    proc = run_cli(*export, "csv", "--out", "t.csv", "--objects", "1,x", cwd=tmp_path)
    one_line_error(proc, "--objects", "'1,x'")
    proc = run_cli(*export, "csv", "--out", "t.csv", "--pixel-size", "inf", cwd=tmp_path)
    one_line_error(proc, "--pixel-size", "finite")


def test_download_into_a_read_only_cache(tmp_path, read_only_dir):
    env_cache = read_only_dir / "cache"
    code = (
        "import os, sys; os.environ['NAPARI_SAM2_WORMS_CACHE'] = sys.argv[1]; "
        "from napari_sam2_worms.cli import main; sys.exit(main(['download', '--deadline', '5']))"
    )
    env = dict(os.environ, PYTHONPATH=PKG_ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(env_cache)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    one_line_error(proc, "checkpoint cache", "cannot write in")
    proc = run_cli("download", "--deadline", "0", cwd=tmp_path)
    one_line_error(proc, "--deadline", "greater than 0")
