"""File > Open Sample > SAM 2 Worm Tracker > Real C. elegans: downloaded from a local
HTTP server (no network here) with napari's progress bar, then served from the cache;
offline, the user gets the one-line message, and no layer."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from dataclasses import replace

import pytest
from _real import TIMEOUT, menu_action

from conftest import need_shared
from napari_sam2_worms.sample_data import SAMPLES, SampleDataError

pytestmark = pytest.mark.gui

KEY = "tierpsy_single_worm"
REAL = ("File", "Open Sample", "SAM 2 Worm Tracker", "Real C. elegans")


@pytest.fixture
def viewer(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SAM2_WORMS_CACHE", str(tmp_path / "cache"))
    return make_napari_viewer(show=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_real_sample_downloads_once_with_progress(viewer, qtbot, tmp_path, monkeypatch):
    from napari.utils import progress

    clip = need_shared("videos", "tierpsy_single_worm.avi")
    root = tmp_path / "www"
    root.mkdir()
    shutil.copyfile(clip, root / "clip.avi")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    bars = []
    real_init = progress.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        bars.append(self)

    monkeypatch.setattr(progress, "__init__", spy)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/clip.avi"
    monkeypatch.setitem(SAMPLES, KEY, replace(SAMPLES[KEY], url=url))
    try:
        menu_action(viewer, *REAL).trigger()
        qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=TIMEOUT)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
    layer = viewer.layers[0]
    assert layer.name == "tierpsy_single_worm"
    assert layer.data.shape[:3] == (563, 96, 128)
    assert layer.metadata["fps"] == pytest.approx(15.0)
    assert "MIT" in layer.metadata["licence"]
    size = clip.stat().st_size
    assert [(b.n, b.total) for b in bars] == [(size, size)]  # one bar, run to the end
    # the server is gone: the second time comes from the cache, without a bar
    viewer.layers.clear()
    menu_action(viewer, *REAL).trigger()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=TIMEOUT)
    assert len(bars) == 1


def test_real_sample_offline_says_what_to_do(viewer, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/clip.avi"
    monkeypatch.setitem(SAMPLES, KEY, replace(SAMPLES[KEY], url=url))
    with pytest.raises(
        SampleDataError,
        match=r"no connection to 127.0.0.1.*offline.*Download http://127.0.0.1.*save it as",
    ):
        viewer.open_sample("napari-sam2-worms", KEY)
    assert len(viewer.layers) == 0
