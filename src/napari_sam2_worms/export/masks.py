"""Label stacks as a compressed TIFF, and per-object mask PNGs.

``write_label_tiff`` writes the (T, H, W) label stack as one zlib-compressed,
ImageJ-compatible hyperstack (axes TYX, frame interval from fps) when the dtype allows
it (uint8/uint16), else a plain compressed TIFF. ``write_mask_pngs`` writes, per object,
a sub-folder of 0/255 PNGs named after the frame number (``00000.png``...), as the
labs' notebooks do; the whole folder appears at once (written aside, then renamed).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..utils import OutputError, atomic_path

__all__ = ["read_label_tiff", "write_label_tiff", "write_mask_pngs"]

log = logging.getLogger(__name__)


def _as_stack(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3:
        raise ValueError(f"A label stack must be (T, H, W) or (H, W); got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"A label stack must hold integers; got {labels.dtype}.")
    return labels


def write_label_tiff(
    labels: np.ndarray, path: str | os.PathLike, *, fps: float | None = None
) -> Path:
    """Write a label stack to a compressed TIFF, atomically.

    Parameters
    ----------
    labels : (T, H, W) or (H, W) integer labels, 0 = background.
    path : target ``.tif`` file; replaced only by a complete new file.
    fps : frames per second, stored as ImageJ's frame interval.

    Returns
    -------
    The written path.
    """
    import tifffile

    stack = _as_stack(labels)
    path = Path(path)
    imagej = stack.dtype in (np.uint8, np.uint16)
    metadata: dict = {"axes": "TYX"}
    if imagej and fps:
        metadata.update(finterval=1.0 / float(fps), unit="pixel")
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            stack,
            imagej=imagej,
            metadata=metadata,
            compression="zlib",
            photometric="minisblack",
        )
    return path


def read_label_tiff(path: str | os.PathLike) -> np.ndarray:
    """Read a label stack written by :func:`write_label_tiff` (or any TIFF stack).

    Returns
    -------
    (T, H, W) integer array.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No label TIFF at {path}.")
    return _as_stack(tifffile.imread(path))


def write_mask_pngs(
    labels: np.ndarray,
    folder: str | os.PathLike,
    object_ids: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> Path:
    """One sub-folder per object with a 0/255 uint8 PNG per frame.

    Parameters
    ----------
    labels : (T, H, W) label stack.
    folder : output folder; ``folder/<name>/00000.png``... It is written next to its
        final place and renamed when complete, so it never holds a partial export; an
        existing folder is replaced.
    object_ids : ids to write (default: every non-zero label in the stack).
    names : sub-folder names, one per id (default ``worm<id>``).

    Returns
    -------
    The folder.
    """
    from PIL import Image

    stack = _as_stack(labels)
    folder = Path(folder)
    if object_ids is None:
        object_ids = [int(i) for i in np.unique(stack) if i != 0]
    ids = [int(i) for i in object_ids]
    names = list(names) if names is not None else [f"worm{i}" for i in ids]
    if len(names) != len(ids):
        raise ValueError(f"{len(names)} names for {len(ids)} object ids.")
    if len(set(names)) != len(names) or any(not n or "/" in n or n in (".", "..") for n in names):
        raise ValueError(f"Object names must be distinct folder names; got {names}.")
    parent = folder.parent if str(folder.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent))
    except OSError as exc:
        raise OutputError(
            f"Cannot write {folder}: the folder {parent} is not writable ({exc.strerror}). "
            "Choose another output folder."
        ) from exc
    old = None
    try:
        width = max(5, len(str(len(stack) - 1)))
        for oid, name in zip(ids, names):
            sub = tmp / name
            sub.mkdir()
            for t, frame in enumerate(stack):
                mask = np.where(frame == oid, 255, 0).astype(np.uint8)
                Image.fromarray(mask).save(sub / f"{t:0{width}d}.png", optimize=False)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            try:
                os.replace(old / folder.name, folder)
            except OSError:
                log.error("The previous %s is kept in %s", folder, old)
                old = None  # keep the backup rather than lose it
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"Could not write {folder}: {exc}. Nothing was replaced.") from exc
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    log.info("Wrote masks of %d objects x %d frames to %s", len(ids), len(stack), folder)
    return folder
