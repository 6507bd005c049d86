"""Label stacks as a compressed TIFF, and per-object mask PNGs.

``write_label_tiff`` writes the (T, H, W) label stack as one zlib-compressed,
ImageJ-compatible hyperstack (axes TYX, frame interval from fps) when the dtype allows
it (uint8/uint16), else a plain compressed TIFF. ``write_mask_pngs`` writes, per object,
a sub-folder of 0/255 PNGs named after the frame number (``00000.png``...), as the
labs' notebooks do; the whole folder appears at once (written aside, then renamed), with
the permissions the user's umask gives new folders.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..utils import OutputError, atomic_path, remove_stale_temps, temp_prefix

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "export_run_masks",
    "read_label_tiff",
    "select_labels",
    "write_label_tiff",
    "write_mask_pngs",
]

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


def _make_dir_beside(parent: Path, prefix: str) -> Path:
    """Make a new, empty folder in ``parent`` with the permissions the umask gives.

    ``tempfile.mkdtemp`` would make it 0700, and the rename would keep that.
    """
    for _ in range(100):
        path = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary folder name in {parent}")


def check_replaceable_mask_folder(folder: str | os.PathLike) -> None:
    """Raise :class:`OutputError` unless ``folder`` may be replaced by a masks-png export.

    The export replaces the whole folder, so it must be new, empty, or an earlier
    masks-png export (sub-folders holding only PNG files); a folder holding anything
    else (a run, notes, other results) is refused, never emptied.
    """
    folder = Path(folder)
    if not folder.exists():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise OutputError(f"{folder} exists and is not a folder; choose a new folder name.")
    for entry in sorted(folder.iterdir()):
        ok = (
            entry.is_dir()
            and not entry.is_symlink()
            and all(
                f.is_file() and not f.is_symlink() and f.suffix.lower() == ".png"
                for f in entry.iterdir()
            )
        )
        if not ok:
            raise OutputError(
                f"{folder} holds {entry.name!r}, which is not an earlier mask export; a "
                "masks-png export replaces its whole folder, so choose a new or empty folder."
            )


def write_mask_pngs(
    labels: np.ndarray,
    folder: str | os.PathLike,
    object_ids: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    *,
    first_frame: int = 0,
) -> Path:
    """One sub-folder per object with a 0/255 uint8 PNG per frame.

    Parameters
    ----------
    labels : (T, H, W) label stack.
    folder : output folder; ``folder/<name>/00000.png``... It is written next to its
        final place and renamed when complete, so it never holds a partial export; an
        earlier export there is replaced, any other non-empty folder refused
        (:func:`check_replaceable_mask_folder`).
    object_ids : ids to write (default: every non-zero label in the stack).
    names : sub-folder names, one per id (default ``worm<id>``).
    first_frame : video frame number of ``labels[0]``: the PNG of ``labels[t]`` is
        named ``first_frame + t`` (for a frame range cut out of a longer video).

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
    check_replaceable_mask_folder(folder)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(parent, folder.name)  # of exports killed while writing
        tmp = _make_dir_beside(parent, temp_prefix(folder.name))
    except OSError as exc:
        raise OutputError(
            f"Cannot write {folder}: the folder {parent} is not writable ({exc.strerror}). "
            "Choose another output folder."
        ) from exc
    old = None
    try:
        width = max(5, len(str(first_frame + len(stack) - 1)))
        for oid, name in zip(ids, names):
            sub = tmp / name
            sub.mkdir()
            for t, frame in enumerate(stack):
                mask = np.where(frame == oid, 255, 0).astype(np.uint8)
                name_t = f"{first_frame + t:0{width}d}.png"
                Image.fromarray(mask).save(sub / name_t, optimize=False)
        if folder.exists():
            old = _make_dir_beside(parent, f".{folder.name}.old.")
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


def select_labels(
    labels: np.ndarray,
    object_ids: Sequence[int] | None = None,
    frames: tuple[int | None, int | None] | None = None,
) -> tuple[np.ndarray, list[int], int]:
    """Cut a label stack to some objects and an inclusive frame range.

    Parameters
    ----------
    labels : (T, H, W) label stack.
    object_ids : ids to keep (others become background); None keeps every id present.
    frames : ``(start, stop)`` video frame numbers, both included, either None for the
        first / last frame.

    Returns
    -------
    (stack, ids, first_frame): the cut stack (a view where nothing is removed), the
    kept ids, and the video frame number of ``stack[0]``.

    Raises
    ------
    ValueError
        An id absent from every frame, or a range outside the stack.
    """
    stack = _as_stack(labels)
    n = len(stack)
    start, stop = frames if frames is not None else (None, None)
    start = 0 if start is None else int(start)
    stop = n - 1 if stop is None else int(stop)
    if not 0 <= start <= stop < n:
        raise ValueError(f"The frame range {start}-{stop} is outside the masks' frames 0-{n - 1}.")
    stack = stack[start : stop + 1]
    present = [int(i) for i in np.unique(stack) if i != 0]
    if object_ids is None:
        return stack, present, start
    ids = [int(i) for i in object_ids]
    missing = [i for i in ids if i not in present]
    if missing or not ids:
        raise ValueError(
            f"Object id(s) {missing or ids} have no mask in frames {start}-{stop}; "
            f"the masks there hold ids {present}."
        )
    return np.where(np.isin(stack, ids), stack, 0).astype(stack.dtype), ids, start


def export_run_masks(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str,
    *,
    fps: float | None = None,
    objects: Sequence[int] | None = None,
    frames: tuple[int | None, int | None] | None = None,
) -> Path:
    """Write the masks of a run folder as a label TIFF or a folder of PNGs.

    Parameters
    ----------
    run_dir : a run folder (``masks.tif`` and ``session.json``).
    out : the ``.tif`` file (``fmt="masks-tiff"``) or the folder (``"masks-png"``).
    fmt : "masks-tiff" or "masks-png".
    fps : frames per second for the TIFF's frame interval (default: the session's).
    objects : ids to write, each with a mask in the range (default: every object of the
        session, a folder of empty PNGs for one without masks); in the TIFF other ids
        become background.
    frames : inclusive ``(start, stop)``; the TIFF's first page is frame ``start``, the
        PNGs are named after the video frame number.

    Returns
    -------
    The written path.
    """
    from . import export_formats
    from .run_dir import read_run_masks, read_session_json

    if fmt not in export_formats("masks"):
        raise ValueError(
            f"Unknown mask format {fmt!r}; use {' or '.join(export_formats('masks'))}."
        )
    run_dir = Path(run_dir)
    session = read_session_json(run_dir)
    labels = read_run_masks(run_dir, session)
    stack, ids, first = select_labels(labels, objects, frames)
    if objects is None and session.get("objects"):  # every object, also one without masks
        ids = sorted(int(o["id"]) for o in session["objects"])
    if fmt == "masks-tiff":
        rate = fps if fps is not None else session.get("fps")
        return write_label_tiff(stack, out, fps=rate)
    names_by_id = {
        int(o["id"]): str(o.get("name") or f"worm{o['id']}") for o in session.get("objects", [])
    }
    names = [names_by_id.get(i, f"worm{i}") for i in ids]
    return write_mask_pngs(stack, out, object_ids=ids, names=names, first_frame=first)
