"""Real sample recordings: pinned address and hash, fetched with pooch into the cache.

No network here: the download is served by a local HTTP server on 127.0.0.1 (the real
file, taken from ../shared/data), and the cache is pre-filled from ../shared/data.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import threading
from dataclasses import replace

import pytest

from conftest import need_shared
from napari_sam2_worms import sample_data
from napari_sam2_worms.backends.sam2.checkpoints import file_sha256
from napari_sam2_worms.sample_data import SAMPLES, SampleDataError, fetch_sample, sample_path

KEY = "tierpsy_single_worm"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_SAM2_WORMS_CACHE", str(folder))
    return folder / "samples"


@pytest.fixture
def shared_clip():
    return need_shared("videos", "tierpsy_single_worm.avi")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines in the test output
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over ``tmp_path / "www"``; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/test.avi"


def _point_to(monkeypatch, url: str) -> None:
    monkeypatch.setitem(SAMPLES, KEY, replace(SAMPLES[KEY], url=url))


def test_pinned_hash_is_that_of_the_shared_copy(shared_clip):
    info = SAMPLES[KEY]
    assert file_sha256(shared_clip) == info.sha256
    assert info.url.startswith("https://raw.githubusercontent.com/ver228/tierpsy-tracker/")
    assert len(info.url.split("/")[5]) == 40  # pinned to a commit, not a branch


def test_download_from_a_local_server_with_progress(cache, server, shared_clip, monkeypatch):
    base, root = server
    shutil.copyfile(shared_clip, root / "test.avi")
    _point_to(monkeypatch, f"{base}/test.avi")
    calls = []
    path = fetch_sample(KEY, progress=lambda done, total: calls.append((done, total)))
    assert path == cache / "tierpsy_single_worm.avi"
    assert file_sha256(path) == SAMPLES[KEY].sha256
    size = shared_clip.stat().st_size
    assert calls and calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert sorted(p.name for p in cache.iterdir()) == ["tierpsy_single_worm.avi"]
    # afterwards the cache serves it: no network needed
    _point_to(monkeypatch, _closed_port_url())
    assert fetch_sample(KEY) == path


def test_cache_prefilled_from_shared_data_needs_no_network(cache, shared_clip, monkeypatch):
    cache.mkdir(parents=True)
    shutil.copyfile(shared_clip, cache / "tierpsy_single_worm.avi")
    _point_to(monkeypatch, _closed_port_url())
    assert sample_path(KEY) == cache / "tierpsy_single_worm.avi"
    assert fetch_sample(KEY) == cache / "tierpsy_single_worm.avi"


def test_offline_message_says_what_to_do(cache, monkeypatch):
    _point_to(monkeypatch, _closed_port_url())
    with pytest.raises(SampleDataError) as info:
        fetch_sample(KEY, timeout=5)
    msg = str(info.value)
    assert "no connection to 127.0.0.1" in msg and "offline" in msg
    assert SAMPLES[KEY].url in msg  # where to get it by hand
    assert str(cache / "tierpsy_single_worm.avi") in msg  # and where to put it
    assert "\n" not in msg
    assert not cache.exists() or list(cache.iterdir()) == []


def test_wrong_file_is_not_kept(cache, server, monkeypatch):
    base, root = server
    (root / "test.avi").write_bytes(b"not the clip" * 1000)
    _point_to(monkeypatch, f"{base}/test.avi")
    with pytest.raises(SampleDataError, match="not the expected file"):
        fetch_sample(KEY)
    assert list(cache.iterdir()) == []


def test_a_damaged_cached_copy_is_replaced(cache, server, shared_clip, monkeypatch):
    cache.mkdir(parents=True)
    (cache / "tierpsy_single_worm.avi").write_bytes(b"truncated")
    assert sample_path(KEY) is None
    base, root = server
    shutil.copyfile(shared_clip, root / "test.avi")
    _point_to(monkeypatch, f"{base}/test.avi")
    assert file_sha256(fetch_sample(KEY)) == SAMPLES[KEY].sha256


def test_server_error_is_named(cache, server, monkeypatch):
    base, _root = server
    _point_to(monkeypatch, f"{base}/missing.avi")
    with pytest.raises(SampleDataError, match="server answered 404"):
        fetch_sample(KEY)


def test_unknown_sample():
    with pytest.raises(ValueError, match="unknown sample 'nope'"):
        sample_data.sample_info("nope")
