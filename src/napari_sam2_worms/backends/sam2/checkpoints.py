"""SAM 2 / SAM 2.1 checkpoints: registry, cache, verified download, safe loading.

The registry :data:`MODELS` names every released SAM 2 and SAM 2.1 Hiera model with
its hydra config (shipped inside the ``sam2`` package), its download address and the
SHA-256 of the file. Downloads stream through :mod:`requests` into :func:`cache_dir`
(one overall deadline besides the per-read timeout), are checked against that hash
(a file that does not match is removed) and appear under their name only once
verified; a killed download's partial file is removed by the next one.

Weights load with ``torch.load(..., weights_only=True)`` (no pickle code runs) and are
checked against the model before use, so a wrong or damaged file gives a
:class:`CheckpointError` that says what to do instead of a stack trace.

torch and sam2 are imported inside the functions that need them: importing this module
is cheap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import BackendError
from .compat import check_sam2_compat

if TYPE_CHECKING:
    import torch
    from sam2.sam2_video_predictor import SAM2VideoPredictor

log = logging.getLogger(__name__)

#: Environment variable that overrides the checkpoint cache folder.
CACHE_ENV = "NAPARI_SAM2_WORMS_CACHE"
DEFAULT_MODEL = "sam2.1_hiera_tiny"

_SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"

ProgressCallback = Callable[[int, int], None]


class CheckpointError(BackendError, OSError):
    """A checkpoint that cannot be found, downloaded or loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """One SAM 2 model.

    Attributes
    ----------
    name : registry name, e.g. ``"sam2.1_hiera_tiny"`` (also the file stem).
    config : hydra config name inside the ``sam2`` package.
    filename : checkpoint file name.
    url : download address.
    sha256 : SHA-256 of the checkpoint file (lower-case hex).
    size : "tiny", "small", "base_plus" or "large".
    family : "sam2.1" or "sam2".
    """

    name: str
    config: str
    filename: str
    url: str
    sha256: str
    size: str
    family: str


def _entry(family: str, size: str, cfg: str, sha256: str) -> ModelInfo:
    name = f"{family}_hiera_{size}"
    base = _SAM21_URL if family == "sam2.1" else _SAM2_URL
    config = f"configs/{family}/{family}_hiera_{cfg}.yaml"
    return ModelInfo(name, config, f"{name}.pt", f"{base}/{name}.pt", sha256, size, family)


#: SHA-256 of the released files (as pinned by projects that verify Meta's downloads).
_SHA256 = {
    "sam2.1_hiera_tiny": "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
    "sam2.1_hiera_small": "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
    "sam2.1_hiera_base_plus": "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
    "sam2.1_hiera_large": "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
    "sam2_hiera_tiny": "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125",
    "sam2_hiera_small": "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3",
    "sam2_hiera_base_plus": "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071",
    "sam2_hiera_large": "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b",
}

#: Every known model, by name.
MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        _entry(family, size, cfg, _SHA256[f"{family}_hiera_{size}"])
        for family in ("sam2.1", "sam2")
        for size, cfg in (("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l"))
    )
}

# (embed_dim, number of Hiera blocks) -> size; used to name the model a file is for.
_TRUNK_SIZES = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}


def register_model(info: ModelInfo) -> None:
    """Add (or replace) a model in :data:`MODELS` (e.g. a fine-tuned checkpoint, or tests)."""
    if not re.fullmatch(r"[0-9a-f]{64}", info.sha256):
        raise ValueError(f"sha256 of {info.name} must be 64 lower-case hex digits")
    MODELS[info.name] = info


def model_info(model: str) -> ModelInfo:
    """Look up the registry entry of ``model``; a clear ValueError for unknown names."""
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(
            f"unknown SAM 2 model {model!r}; choose one of: {', '.join(MODELS)}"
        ) from None


def cache_dir() -> Path:
    """Folder holding downloaded checkpoints (``$NAPARI_SAM2_WORMS_CACHE`` overrides)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-sam2-worms"))


def cached_checkpoint(model: str) -> Path | None:
    """Path of ``model``'s checkpoint in the cache, or None (not hashed: that is slow)."""
    path = cache_dir() / model_info(model).filename
    return path if path.is_file() and path.stat().st_size > 0 else None


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: seconds a whole download may take by default (a server sending a byte a second
#: never trips the per-read ``timeout``; this ends it)
DOWNLOAD_DEADLINE = 3600.0


class DownloadTimeout(OSError):
    """A download that did not finish within its overall deadline."""


def _fetch(
    url: str,
    fh: Any,
    *,
    timeout: float,
    deadline: float,
    progress: ProgressCallback | None,
) -> str:
    """Stream ``url`` into the open file ``fh``; return the SHA-256 of what was written.

    Raises :class:`DownloadTimeout` past ``deadline`` seconds in all, requests' errors
    for network failures, and OSError for a transfer shorter than announced.
    """
    import time

    import requests

    end = time.monotonic() + float(deadline)
    h = hashlib.sha256()
    done = 0
    with requests.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        total = int(response.headers.get("Content-Length") or 0)
        read1 = getattr(response.raw, "read1", None)  # urllib3 2: one read, what is there
        blocks = (
            iter(lambda: read1(1 << 16, decode_content=True), b"")
            if read1 is not None
            else response.iter_content(chunk_size=1 << 12)
        )
        for block in blocks:
            if time.monotonic() > end:
                raise DownloadTimeout(
                    f"the download took longer than {deadline:g} s "
                    f"({done} of {total or '?'} bytes arrived)"
                )
            if not block:
                continue
            fh.write(block)
            h.update(block)
            done += len(block)
            if progress is not None:
                progress(min(done, total) if total else done, total)
        if time.monotonic() > end:
            raise DownloadTimeout(f"the download took longer than {deadline:g} s")
    if total and done != total:
        raise OSError(f"the transfer stopped after {done} of {total} bytes")
    return h.hexdigest()


def remove_stale_downloads(folder: Path) -> None:
    """Remove what killed downloads left in the cache.

    Our partial files of processes that are gone, and pooch's ``tmp*`` files of older
    versions (empty, or untouched for an hour).
    """
    import time

    from ...utils import remove_stale_temps

    remove_stale_temps(folder)
    try:
        leftovers = list(folder.glob("tmp*"))
    except OSError:
        return
    for leftover in leftovers:
        try:
            st = leftover.stat()
            if leftover.is_file() and (st.st_size == 0 or time.time() - st.st_mtime > 3600):
                leftover.unlink()
        except OSError:
            continue


def download_checkpoint(
    model: str,
    *,
    base_url: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
    deadline: float = DOWNLOAD_DEADLINE,
) -> Path:
    """Download ``model``'s checkpoint into :func:`cache_dir`, verifying its SHA-256.

    The file is written next to its place in the cache under a name that carries this
    process's id, and renamed once complete and verified: an existing copy is replaced
    only by a verified one. A download killed on the way leaves its partial file; the
    next download removes it (:func:`remove_stale_downloads`).

    Parameters
    ----------
    model : registry name.
    base_url : folder URL to fetch from instead of the official one (a mirror).
    progress : ``callback(done_bytes, total_bytes)`` called while downloading.
    timeout : seconds to wait for the server (connecting, and each read).
    deadline : seconds the whole download may take (default one hour).

    Returns
    -------
    Path of the verified file in the cache.

    Raises
    ------
    CheckpointError
        No network (the message names the file, its URL and the folder to put it in),
        an interrupted or too slow transfer, or a file whose hash does not match (it
        is removed).
    """
    import tempfile

    import requests
    from urllib3.exceptions import HTTPError

    from ...utils import temp_prefix

    info = model_info(model)
    url = f"{base_url.rstrip('/')}/{info.filename}" if base_url else info.url
    folder = cache_dir()
    target = folder / info.filename
    log.info("downloading %s from %s into %s", info.filename, url, folder)
    tmp: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_downloads(folder)
        fd, name = tempfile.mkstemp(prefix=temp_prefix(info.filename), suffix=".part", dir=folder)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as fh:
            digest = _fetch(url, fh, timeout=timeout, deadline=deadline, progress=progress)
        if digest != info.sha256:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(
                f"The downloaded {info.filename} is corrupt or not the expected file (its "
                f"SHA-256 does not match {info.sha256}); it was removed. Try again, or "
                f"download it yourself from {url} and put it in {folder}."
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except CheckpointError:
        raise
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if not isinstance(exc, (requests.exceptions.RequestException, HTTPError, OSError)):
            raise  # KeyboardInterrupt, SIGTERM...: the partial file is gone
        if isinstance(exc, DownloadTimeout):
            raise CheckpointError(
                f"Could not download {info.filename} from {url}: {exc}; the connection is "
                "too slow. Try again later or allow more time (download --deadline), or "
                f"download the file yourself and put it in {folder}."
            ) from exc
        raise CheckpointError(
            f"Could not download {info.filename} from {url} ({type(exc).__name__}: {exc}). "
            f"Without internet, download it on another computer and copy it into the folder "
            f"{folder} (or set {CACHE_ENV} to a folder that holds it), or give the file's "
            "path as the checkpoint."
        ) from exc
    return target


def resolve_checkpoint(
    model: str = DEFAULT_MODEL,
    checkpoint: str | os.PathLike | None = None,
    download: bool = True,
    *,
    base_url: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Find the checkpoint file to use for ``model``.

    An explicit local ``checkpoint`` wins; else the cached file; else it is downloaded
    when ``download`` is True.
    """
    info = model_info(model)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(
                f"The checkpoint file {path} does not exist. Check the path, or leave the "
                f"checkpoint empty to use the cached or downloaded {info.filename}."
            )
        return path
    cached = cached_checkpoint(model)
    if cached is not None:
        return cached
    if not download:
        raise CheckpointError(
            f"{info.filename} is not in the cache and downloading is off. Download it from "
            f"{info.url} into {cache_dir()}, or allow downloading."
        )
    return download_checkpoint(model, base_url=base_url, progress=progress)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, then Apple MPS, then CPU; else ``torch.device(device)``."""
    import torch

    if str(device) != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(
                "CUDA was requested but no CUDA GPU is available; use device 'auto' or 'cpu'."
            )
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _guess_model(state: dict[str, Any]) -> str | None:
    """Name the registry model a state dict belongs to (by its trunk shape), or None."""
    w = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is None or not hasattr(w, "shape"):
        return None
    blocks = {k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")}
    size = _TRUNK_SIZES.get((int(w.shape[0]), len(blocks)))
    if size is None:
        return None
    family = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    return f"{family}_hiera_{size}"


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint's state dict safely (``weights_only=True``), or CheckpointError."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a SAM 2 checkpoint (it cannot be read as PyTorch weights: "
            f"{type(exc).__name__}). Download it again or choose the right file."
        ) from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(
            f"{path} is not a SAM 2 checkpoint (expected a dict of tensors under 'model')."
        )
    return state


def build_model(
    model: str, device: str | torch.device = "cpu", *, image_size: int | None = None
) -> SAM2VideoPredictor:
    """Build ``model``'s video predictor with random weights (no checkpoint).

    ``image_size`` overrides the model's input size (1024); only tests and CPU benchmarks
    use it: the released weights were trained at 1024.
    """
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
    return build_sam2_video_predictor(
        model_info(model).config, None, device=str(device), hydra_overrides_extra=overrides
    )


def load_predictor(
    model: str,
    checkpoint_path: str | os.PathLike,
    device: str | torch.device = "auto",
    *,
    image_size: int | None = None,
) -> SAM2VideoPredictor:
    """Build ``model``'s ``SAM2VideoPredictor`` and load ``checkpoint_path`` into it.

    Raises
    ------
    CheckpointError
        The file is not a SAM 2 checkpoint, or it is for another model (the message
        names that model when it can).
    """
    info = model_info(model)
    state = read_state_dict(checkpoint_path)
    guess = _guess_model(state)
    if guess is not None and guess != f"{info.family}_hiera_{info.size}":
        raise CheckpointError(
            f"{checkpoint_path} is a checkpoint for {guess}, not {info.name}. Choose the "
            f"model {guess}, or the {info.filename} checkpoint."
        )
    dev = resolve_device(device)
    predictor = build_model(model, "cpu", image_size=image_size)
    check_sam2_compat(predictor)  # every sam2 name we use is there (compat.py)
    try:
        missing, unexpected = predictor.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(
            f"{checkpoint_path} does not fit {info.name} ({str(exc).splitlines()[0]}). "
            f"Choose the checkpoint of {info.name}."
        ) from exc
    if missing or unexpected:
        what = guess or "another model"
        raise CheckpointError(
            f"{checkpoint_path} is not a {info.name} checkpoint (it looks like {what}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected weights, e.g. "
            f"{(list(missing) + list(unexpected))[:3]}). Choose the {info.filename} file."
        )
    predictor = predictor.to(dev).eval()
    log.info("loaded %s from %s on %s", info.name, checkpoint_path, dev)
    return predictor
