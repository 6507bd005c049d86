"""Real sample recordings, fetched on first use into the cache (no Qt, no napari).

Each :class:`Sample` names a public file at an address pinned to one commit, with the
SHA-256 of that file. :func:`fetch_sample` downloads it with :mod:`pooch` into
``<cache>/samples`` (the cache of :func:`napari_sam2_worms.backends.sam2.checkpoints.cache_dir`,
``$NAPARI_SAM2_WORMS_CACHE`` overrides), checks the hash, and afterwards serves the
cached copy without any network. See ``docs/sample_data.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SAMPLES",
    "Sample",
    "SampleDataError",
    "fetch_sample",
    "sample_cache",
    "sample_info",
    "sample_path",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


class SampleDataError(OSError):
    """A sample that cannot be fetched; the message says what to do instead."""


@dataclass(frozen=True)
class Sample:
    """One sample recording.

    Attributes
    ----------
    key : registry name (also the napari sample key).
    title : what File > Open Sample shows.
    filename : name of the file in the cache.
    url : download address, pinned to one commit of the upstream repository.
    sha256 : SHA-256 of the file (lower-case hex).
    fps : frames per second of the recording.
    licence : the licence of the file, and ``licence_url`` where to read it.
    description : what the recording shows.
    """

    key: str
    title: str
    filename: str
    url: str
    sha256: str
    fps: float
    licence: str
    licence_url: str
    description: str


_TIERPSY_COMMIT = "1298df878ff57987f382e53fe1dd25b0ace076c6"

#: Every sample, by key.
SAMPLES: dict[str, Sample] = {
    "tierpsy_single_worm": Sample(
        key="tierpsy_single_worm",
        title="Real C. elegans, one worm (Tierpsy Tracker test clip, 0.6 MB)",
        filename="tierpsy_single_worm.avi",
        url=(
            f"https://raw.githubusercontent.com/ver228/tierpsy-tracker/{_TIERPSY_COMMIT}/"
            "_old/create_binaries/_test/test.avi"
        ),
        sha256="90ec282f21499df3be1dd1d6dbc5fcb3c704c3062bb8b42a3df9611464d82deb",
        fps=15.0,
        licence="MIT (Copyright (c) 2017 Medical Research Council)",
        licence_url=f"https://github.com/ver228/tierpsy-tracker/blob/{_TIERPSY_COMMIT}/LICENSE",
        description=(
            "One crawling C. elegans on agar, background masked, 128x96 px, 15 fps, 563 "
            "frames (MPEG-2 in AVI)."
        ),
    ),
}


def sample_info(key: str) -> Sample:
    """Look up the registry entry of ``key``; a clear ValueError for unknown keys."""
    try:
        return SAMPLES[key]
    except KeyError:
        raise ValueError(f"unknown sample {key!r}; choose one of: {', '.join(SAMPLES)}") from None


def sample_cache() -> Path:
    """Folder holding the downloaded samples: ``<cache>/samples``."""
    from .backends.sam2.checkpoints import cache_dir

    return cache_dir() / "samples"


def sample_path(key: str) -> Path | None:
    """Find the cached copy of sample ``key`` when its SHA-256 is the pinned one, else None."""
    from .backends.sam2.checkpoints import file_sha256

    info = sample_info(key)
    path = sample_cache() / info.filename
    try:
        return path if path.is_file() and file_sha256(path) == info.sha256 else None
    except OSError:
        return None


class _PoochProgress:
    """pooch's progress-bar protocol (total, update, reset, close) -> callback(done, total)."""

    def __init__(self, callback: ProgressCallback) -> None:
        self.callback = callback
        self.total = 0
        self.done = 0

    def update(self, n: int) -> None:
        self.done += int(n)
        self.callback(min(self.done, self.total) if self.total else self.done, self.total)

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        pass


def fetch_sample(
    key: str,
    *,
    base_url: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> Path:
    """Return the path of sample ``key``, downloaded and verified on first use.

    A cached copy with the pinned SHA-256 is returned without touching the network. A
    download goes to a temporary file beside its place and is renamed only once its
    hash matches (pooch), so the cache never holds a partial or wrong file.

    Parameters
    ----------
    key : a key of :data:`SAMPLES`.
    base_url : folder URL to fetch the file from instead of the upstream address
        (a mirror; the file name is appended).
    progress : ``callback(done_bytes, total_bytes)`` while downloading.
    timeout : seconds to wait for the server.

    Raises
    ------
    SampleDataError
        No network (the message names the address and the file to put in the cache
        instead), a server error, or a file whose hash does not match.
    """
    import pooch
    import requests

    info = sample_info(key)
    cached = sample_path(key)
    if cached is not None:
        return cached
    folder = sample_cache()
    url = f"{base_url.rstrip('/')}/{info.filename}" if base_url else info.url
    by_hand = (
        f"Download {info.url} yourself and save it as {folder / info.filename} "
        f"(or set ${_cache_env()} to a folder whose samples/ holds it)."
    )
    downloader = pooch.HTTPDownloader(
        progressbar=_PoochProgress(progress) if progress else False, timeout=timeout
    )
    log.info("Downloading sample %s from %s into %s", info.filename, url, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = pooch.retrieve(
            url,
            known_hash=f"sha256:{info.sha256}",
            fname=info.filename,
            path=folder,
            downloader=downloader,
            progressbar=False,
        )
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise SampleDataError(
            f"Cannot download the sample {info.filename}: no connection to "
            f"{_host(url)} (offline?). {by_hand}"
        ) from exc
    except requests.HTTPError as exc:
        raise SampleDataError(
            f"Cannot download the sample {info.filename}: the server answered {exc}. {by_hand}"
        ) from exc
    except ValueError as exc:  # pooch: the hash does not match (the file is removed)
        raise SampleDataError(
            f"The downloaded {info.filename} is not the expected file (its SHA-256 differs "
            f"from {info.sha256}); nothing was kept. {by_hand}"
        ) from exc
    except OSError as exc:
        raise SampleDataError(
            f"Cannot save the sample {info.filename} in {folder}: {exc}. {by_hand}"
        ) from exc
    return Path(path)


def _cache_env() -> str:
    from .backends.sam2.checkpoints import CACHE_ENV

    return CACHE_ENV


def _host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).netloc or url
