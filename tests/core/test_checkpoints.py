"""Checkpoint registry, verified download (against a local HTTP server), safe loading."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from napari_sam2_worms.backends.sam2 import checkpoints as ck


@pytest.fixture(scope="session")
def random_ckpt(random_checkpoint):
    """The session's random-weights sam2.1 tiny checkpoint (tests/fixtures/sam2.py)."""
    return random_checkpoint


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        if self.path.startswith("/truncated/"):
            body = b"x" * 1000
            self.send_response(200)
            self.send_header("Content-Length", str(10 * len(body)))  # lies: more than sent
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / 'www'``; yields (base_url, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(www))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(ck.CACHE_ENV, str(folder))
    return folder


def _register(monkeypatch, name: str, sha256: str, url: str, size="tiny", family="sam2.1"):
    info = ck.ModelInfo(
        name, ck.MODELS[f"{family}_hiera_{size}"].config, f"{name}.pt", url, sha256, size, family
    )
    monkeypatch.setitem(ck.MODELS, name, info)
    return info


def test_registry_has_all_models():
    assert len(ck.MODELS) == 8
    for name, info in ck.MODELS.items():
        assert info.filename == f"{name}.pt"
        assert info.url.endswith(info.filename)
        assert ("092824" in info.url) == (info.family == "sam2.1")
        assert len(info.sha256) == 64
        import sam2

        assert (Path(sam2.__file__).parent / info.config).is_file(), info.config
    with pytest.raises(ValueError, match=r"sam2.1_hiera_tiny"):
        ck.model_info("sam3_huge")


def test_cache_dir_env_override(cache):
    assert ck.cache_dir() == cache
    assert ck.cached_checkpoint("sam2.1_hiera_tiny") is None


def test_download_good_file_lands_in_cache(server, cache, monkeypatch):
    url, www = server
    data = b"pretend weights" * 1000
    (www / "fake.pt").write_bytes(data)
    _register(monkeypatch, "fake", hashlib.sha256(data).hexdigest(), f"{url}/fake.pt")
    seen = []
    path = ck.download_checkpoint("fake", progress=lambda done, total: seen.append((done, total)))
    assert path == cache / "fake.pt"
    assert path.read_bytes() == data
    assert seen and seen[-1] == (len(data), len(data))
    assert ck.cached_checkpoint("fake") == path
    assert ck.resolve_checkpoint("fake", download=False) == path  # cache, no network


def test_download_wrong_hash_is_refused(server, cache, monkeypatch):
    url, www = server
    (www / "bad.pt").write_bytes(b"not what you expected")
    _register(monkeypatch, "bad", "0" * 64, f"{url}/bad.pt")
    with pytest.raises(ck.CheckpointError, match=r"corrupt.*removed"):
        ck.download_checkpoint("bad")
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_interrupted_download_leaves_nothing(server, cache, monkeypatch):
    url, _ = server
    _register(monkeypatch, "cut", "1" * 64, "http://unused.invalid/cut.pt")
    with pytest.raises(ck.CheckpointError, match=r"cut.pt"):
        ck.download_checkpoint("cut", base_url=f"{url}/truncated")
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_offline_message_names_file_url_and_folder(cache, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/sam2.1_hiera_tiny.pt"
    with pytest.raises(ck.CheckpointError) as info:
        ck.download_checkpoint("sam2.1_hiera_tiny", base_url=f"http://127.0.0.1:{port}", timeout=5)
    msg = str(info.value)
    assert "sam2.1_hiera_tiny.pt" in msg and url in msg and str(cache) in msg
    with pytest.raises(ck.CheckpointError, match="downloading is off"):
        ck.resolve_checkpoint("sam2.1_hiera_tiny", download=False)


@pytest.mark.slow
def test_random_checkpoint_download_and_load(server, cache, monkeypatch, random_ckpt):
    """The random checkpoint goes through download (hash checked) and load_predictor."""
    url, www = server
    (www / "rnd_tiny.pt").symlink_to(random_ckpt.path)
    _register(monkeypatch, "rnd_tiny", random_ckpt.sha256, f"{url}/rnd_tiny.pt")
    path = ck.resolve_checkpoint("rnd_tiny")
    assert path == cache / "rnd_tiny.pt"
    predictor = ck.load_predictor("rnd_tiny", path, "cpu", image_size=256)
    assert predictor.image_size == 256
    assert not predictor.training


def test_local_file_wins_and_loads(random_ckpt, cache):
    path = ck.resolve_checkpoint("sam2.1_hiera_tiny", random_ckpt.path, download=False)
    assert path == random_ckpt.path
    predictor = ck.load_predictor("sam2.1_hiera_tiny", path, "cpu")
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=True)["model"]
    key = "image_encoder.trunk.patch_embed.proj.weight"
    assert torch.equal(predictor.state_dict()[key], saved[key])
    with pytest.raises(ck.CheckpointError, match="does not exist"):
        ck.resolve_checkpoint("sam2.1_hiera_tiny", cache / "missing.pt")


def test_corrupt_and_wrong_model_refused(tmp_path, random_ckpt):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ck.CheckpointError, match="not a SAM 2 checkpoint"):
        ck.load_predictor("sam2.1_hiera_tiny", junk, "cpu")
    with pytest.raises(ck.CheckpointError, match=r"for sam2.1_hiera_tiny, not sam2.1_hiera_small"):
        ck.load_predictor("sam2.1_hiera_small", random_ckpt.path, "cpu")
    with pytest.raises(ck.CheckpointError, match=r"for sam2.1_hiera_tiny, not sam2_hiera_tiny"):
        ck.load_predictor("sam2_hiera_tiny", random_ckpt.path, "cpu")


def test_resolve_device_cpu():
    import torch

    assert ck.resolve_device("cpu") == torch.device("cpu")
    assert ck.resolve_device("auto").type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available():
        with pytest.raises(ck.BackendError, match="no CUDA"):
            ck.resolve_device("cuda")
