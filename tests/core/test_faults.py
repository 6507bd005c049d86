"""Injected faults: kill -9, SIGTERM, Ctrl-C, a full disk, a server sending a byte a second.

Each test runs the real code in a subprocess and kills or starves it; what it must
leave behind is checked afterwards: no shared-memory ring, no hidden temporary file,
no partial download, and one clear line where the user gets an error.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile

from fixtures.cli import cli_command, cli_env
from fixtures.plates import write_prompts
from tmpfs import tmpfs

if TYPE_CHECKING:
    from pathlib import Path

RING_FOLDERS = sorted({"/dev/shm", tempfile.gettempdir()})


def _cli(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        cli_command(*args),
        cwd=cwd,
        env=cli_env(cwd / "cache"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _wait_for(find, what: str, proc: subprocess.Popen | None = None, timeout: float = 120):
    """Poll ``find()`` until it returns something truthy (a hang guard, not a timing test)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = find()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the process ended (status {proc.returncode}) before {what}: {err}")
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


def rings_of(pid: int) -> list[str]:
    """Skeleton ring files named after process ``pid``."""
    out = []
    for folder in RING_FOLDERS:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        out += [os.path.join(folder, n) for n in names if n.startswith(f"nsw-skeleton-ring-{pid}-")]
    return out


def all_files() -> set[str]:
    """Every file of the folders rings go to."""
    now = set()
    for folder in RING_FOLDERS:
        try:
            now |= {os.path.join(folder, n) for n in os.listdir(folder)}
        except OSError:
            continue
    return now


def leaked_rings(before: set[str]) -> list[str]:
    """Ring files that appeared since ``before`` and belong to no live process (a ring
    name without an owner counts as leaked)."""
    import re

    from napari_sam2_worms.utils import pid_alive

    out = []
    for path in sorted(all_files() - before):
        m = re.match(r"nsw-skeleton-ring-(\d+)-", os.path.basename(path))
        if os.path.basename(path).startswith("nsw-skeleton-ring-") and not (
            m and pid_alive(int(m.group(1)))
        ):
            out.append(path)
    return out


def _one_line(err: str) -> list[str]:
    """The error lines of stderr (progress bars aside)."""
    return [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]


# -- /dev/shm rings ------------------------------------------------------------------------

_RING_OWNER = """
import sys, time
import numpy as np
from napari_sam2_worms.skeleton.stream import SkeletonPool
pool = SkeletonPool(1)
ring = pool.ring((120, 160), np.uint16)
print(ring.path, flush=True)
time.sleep(600)
"""


def test_a_killed_sessions_ring_is_removed_by_the_next_start():
    proc = subprocess.Popen(
        [sys.executable, "-c", _RING_OWNER], env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        path = proc.stdout.readline().strip()
        assert path and os.path.exists(path)
        assert f"nsw-skeleton-ring-{proc.pid}-" in path  # the owner is in the name
    finally:
        proc.kill()  # SIGKILL: nothing of the process runs any more
        proc.wait(timeout=30)
    assert os.path.exists(path)  # it could not clean up after itself
    from napari_sam2_worms.skeleton.stream import FrameRing

    ring = FrameRing((8, 8), np.uint8, 4)  # the next start
    try:
        assert not os.path.exists(path)
        assert os.path.exists(ring.path)  # our own (a live process's) is kept
    finally:
        ring.release()
    assert not os.path.exists(ring.path)


@pytest.fixture(scope="module")
def long_plate(tmp_path_factory):
    """A 200-frame plate (a few seconds of classic tracking) as TIFF, with prompts."""
    from napari_sam2_worms.synthetic import make_plate

    folder = tmp_path_factory.mktemp("long_plate")
    plate = make_plate(n_frames=200, height=96, width=128, n_worms=2, seed=3)
    tifffile.imwrite(folder / "plate.tif", plate.video)
    write_prompts(folder / "p.json", plate, 0)
    return folder


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_track_stopped_by_a_signal_releases_its_ring(tmp_path, long_plate, sig):
    out = tmp_path / "run"
    proc = _cli(
        "track", str(long_plate / "plate.tif"), "--prompts", str(long_plate / "p.json"),
        "--out", str(out), "--backend", "classic", "--workers", "1",
        cwd=tmp_path,
    )  # fmt: skip
    try:
        _wait_for(lambda: rings_of(proc.pid), "the session's ring", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err, err
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
    assert rings_of(proc.pid) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ignored_by_the_parent_stays_ignored(tmp_path, long_plate, sig):
    """A track started with SIGINT (or SIGTERM) ignored, as a script's background job is,
    keeps it ignored (as Python does): a Ctrl-C in that terminal does not stop it."""
    out = tmp_path / "run"
    proc = _cli(
        "track", str(long_plate / "plate.tif"), "--prompts", str(long_plate / "p.json"),
        "--out", str(out), "--backend", "classic", "--workers", "1",
        cwd=tmp_path, preexec_fn=lambda: signal.signal(sig, signal.SIG_IGN),
    )  # fmt: skip
    try:
        _wait_for(lambda: rings_of(proc.pid), "the session's ring", proc)  # the guard is up
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "interrupted" not in err
    assert (out / "skeletons.csv").is_file()


def test_a_ctrl_c_during_set_up_waits_for_a_safe_point(tmp_path, long_plate, monkeypatch, capsys):
    """Ctrl-C while the session starts its workers is acted on once they are up, not inside.

    Raised at once, the KeyboardInterrupt can land inside ``threading`` (a thread being
    started) and leave a lock half released: a traceback instead of a clean stop.
    """
    from napari_sam2_worms import cli
    from napari_sam2_worms.engine.session import TrackingSession

    original = TrackingSession.skeleton_workers
    finished = []

    def workers_after_a_ctrl_c(session, n):
        os.kill(os.getpid(), signal.SIGINT)  # handled in this thread, at the next bytecode
        original.fset(session, n)  # starts the pool (processes, the ring's thread)
        finished.append(n)

    monkeypatch.setattr(
        TrackingSession, "skeleton_workers", property(original.fget, workers_after_a_ctrl_c)
    )
    before = all_files()
    out = tmp_path / "run"
    status = cli.main([
        "track", str(long_plate / "plate.tif"), "--prompts", str(long_plate / "p.json"),
        "--out", str(out), "--backend", "classic", "--workers", "1",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 130, err
    assert finished == [1], "the workers' start was cut by the Ctrl-C"
    assert "interrupted before tracking started; nothing was written" in err
    assert "Traceback" not in err
    assert not out.exists()  # a new run folder that got nothing is not left behind
    assert rings_of(os.getpid()) == [] and leaked_rings(before) == []


@pytest.mark.parametrize("signal_exc", ["KeyboardInterrupt", "SIGTERM", None])
def test_an_error_raised_while_a_signal_is_handled_is_that_signal(monkeypatch, capsys, signal_exc):
    """A lock left half released by a signal's exception says "interrupted", not a traceback."""
    from napari_sam2_worms import _cli_checks, cli

    def command(args):
        try:
            if signal_exc == "KeyboardInterrupt":
                raise KeyboardInterrupt
            if signal_exc == "SIGTERM":
                _cli_checks._on_sigterm(signal.SIGTERM, None)
            raise ValueError("not a signal")
        except BaseException:
            raise RuntimeError("release unlocked lock")  # noqa: B904 - as threading does

    monkeypatch.setattr(cli, "cmd_download", command)
    if signal_exc is None:
        with pytest.raises(RuntimeError, match="release unlocked lock"):
            cli.main(["download", "--list"])  # a real bug keeps its traceback
        return
    status = cli.main(["download", "--list"])
    assert status == {"KeyboardInterrupt": 130, "SIGTERM": 143}[signal_exc]
    what = {"KeyboardInterrupt": "interrupted", "SIGTERM": "terminated (SIGTERM)"}[signal_exc]
    assert capsys.readouterr().err.strip() == f"napari-sam2-worms download: {what}"


def test_a_ctrl_c_while_the_command_line_is_built_is_one_line(monkeypatch, capsys):
    from napari_sam2_worms import cli

    def parser_cut_by_ctrl_c():
        raise KeyboardInterrupt  # as while the sub-commands' modules are imported

    monkeypatch.setattr(cli, "build_parser", parser_cut_by_ctrl_c)
    assert cli.main(["download", "--list"]) == 130
    assert capsys.readouterr().err.strip() == "napari-sam2-worms: interrupted"


def test_a_track_that_fails_after_the_session_started_leaves_no_ring(tmp_path, small_plate):
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(small_plate.video):
        Image.fromarray(frame).save(frames / f"f{i:03d}.png")
    good = (frames / "f009.png").read_bytes()
    (frames / "f009.png").write_bytes(good[: len(good) // 2])  # header fine, pixels cut
    write_prompts(tmp_path / "p.json", small_plate, 0)
    before = all_files()
    proc = _cli(
        "track", str(frames), "--prompts", "p.json", "--out", "run",
        "--backend", "classic", "--workers", "1",
        cwd=tmp_path,
    )  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "f009.png" in err and "Traceback" not in err
    assert rings_of(proc.pid) == [] and leaked_rings(before) == []


# -- exports -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, long_plate):
    """A run folder of the 200-frame plate, written by the track command."""
    folder = tmp_path_factory.mktemp("long_run")
    proc = _cli(
        "track", str(long_plate / "plate.tif"), "--prompts", str(long_plate / "p.json"),
        "--out", str(folder / "run"), "--backend", "classic", "--workers", "0",
        cwd=folder,
    )  # fmt: skip
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return folder / "run"


def _hidden(folder: Path, name: str = "") -> list[str]:
    """Hidden files of ``folder`` (the temporary files of target ``name`` only)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}"))


def test_a_killed_export_leaves_no_temporary_file_after_the_next(tmp_path, long_run):
    target = tmp_path / "overlay.mp4"
    export = ("export", str(long_run), "--format", "overlay-mp4", "--out", str(target))
    proc = _cli(*export, cwd=tmp_path)
    try:
        _wait_for(lambda: _hidden(tmp_path, "overlay.mp4"), "the export's temporary file", proc)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    left = _hidden(tmp_path)
    assert left and not target.exists()  # kill -9: the temporary file stays, for now
    assert all(".nsw-" in name and f"-{proc.pid}-" in name for name in left)
    again = _cli(*export, cwd=tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert target.stat().st_size > 0
    assert _hidden(tmp_path) == []  # the dead process's file was removed


def test_sigterm_during_an_export_removes_its_temporary_file(tmp_path, long_run):
    target = tmp_path / "overlay.mp4"
    proc = _cli(
        "export", str(long_run), "--format", "overlay-mp4", "--out", str(target), cwd=tmp_path
    )
    try:
        _wait_for(lambda: _hidden(tmp_path, "overlay.mp4"), "the export's temporary file", proc)
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert _hidden(tmp_path) == [] and not target.exists()


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs (mounted as root): a disk that fills at once."""
    with tmpfs(tmp_path / "full", "size=256k") as folder:
        yield folder


@pytest.mark.parametrize("fmt", ["nc", "csv"])
def test_export_on_a_full_disk_says_the_disk_is_full(tmp_path, long_run, full_disk, fmt):
    ext = fmt
    proc = _cli(
        "export", str(long_run), "--format", fmt, "--out", str(full_disk / f"t.{ext}"), cwd=tmp_path
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    lines = _one_line(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "disk" in lines[0] and "full" in lines[0] and "Nothing was replaced" in lines[0]
    assert os.listdir(full_disk) == []


# -- downloads ---------------------------------------------------------------------------

PAYLOAD = b"pretend weights " * 4096


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.path.startswith("/good/"):
            self.wfile.write(PAYLOAD)
            return
        try:  # one byte a second: never idle long enough for a read timeout
            for i in range(len(PAYLOAD)):
                self.wfile.write(PAYLOAD[i : i + 1])
                self.wfile.flush()
                if self.server.stop.wait(1.0):
                    return
        except OSError:
            return


@pytest.fixture
def http_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.stop = threading.Event()
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.stop.set()
        httpd.shutdown()
        httpd.server_close()


_DOWNLOAD = """
import sys
from napari_sam2_worms.backends.sam2 import checkpoints as ck
url, sha, deadline = sys.argv[1], sys.argv[2], sys.argv[3]
ck.register_model(ck.ModelInfo("slow", ck.MODELS["sam2.1_hiera_tiny"].config, "slow.pt",
                               url + "/slow.pt", sha, "tiny", "sam2.1"))
from napari_sam2_worms.cli import main
sys.exit(main(["download", "slow", "--deadline", deadline]))
"""


def _download(url: str, cache: Path, deadline: str) -> subprocess.Popen:
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    return subprocess.Popen(
        [sys.executable, "-c", _DOWNLOAD, url, sha, deadline],
        env=cli_env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_byte_a_second_download_ends_at_its_deadline(tmp_path, http_server):
    cache = tmp_path / "cache"
    proc = _download(http_server, cache, "3")
    _, err = proc.communicate(timeout=120)  # a hang guard: the deadline is 3 s
    assert proc.returncode == 2, err
    lines = _one_line(err)
    assert len(lines) == 1 and "longer than 3 s" in lines[0] and "slow.pt" in lines[0], err
    assert list(cache.iterdir()) == []


def test_a_killed_download_leaves_no_partial_file_after_the_next(tmp_path, http_server):
    cache = tmp_path / "cache"
    proc = _download(http_server, cache, "600")
    try:
        parts = _wait_for(lambda: list(cache.glob(".slow.pt.*")), "the partial file", proc)
        time.sleep(1.5)  # a byte or two on its way
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert [p.name for p in cache.iterdir()] == [parts[0].name]  # kill -9 left it
    done = _download(http_server + "/good", cache, "60")
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert [p.name for p in cache.iterdir()] == ["slow.pt"]
    assert (cache / "slow.pt").read_bytes() == PAYLOAD
