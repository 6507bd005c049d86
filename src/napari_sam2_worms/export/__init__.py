"""Export skeleton tracks (csv, DeepLabCut, SLEAP, NWB, netCDF, WCON), masks and overlays.

:data:`FORMATS` is the one registry of every export format (name, suffix, what it is
made from, whether it writes a folder); :func:`export_tracks` writes the skeleton-track
formats, :mod:`.masks` the label stacks and :mod:`.overlay` the overlay video. Every
write is atomic: the target appears complete or not at all. See ``docs/export.md``.

Importing this package is cheap: ``movement``, ``pynwb`` and ``tifffile`` are imported
by the writers that need them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..utils import atomic_path
from .selection import UNITS, ExportError, ExportTable, keypoint_names, prepare, subset_tracks

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable

    from ..tracks import SkeletonTracks
    from .nwb import NwbSubject

__all__ = [
    "FORMATS",
    "UNITS",
    "ExportError",
    "ExportFormat",
    "ExportKind",
    "export_formats",
    "export_tracks",
    "format_for_path",
    "keypoint_names",
    "subset_tracks",
]

log = logging.getLogger(__name__)


#: What an export is made from: skeleton tracks (:func:`export_tracks`), the label
#: stack (:mod:`.masks`) or the video with masks and skeletons (:mod:`.overlay`).
ExportKind = Literal["tracks", "masks", "overlay"]


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes
    ----------
    name : the format's name (a key of :data:`FORMATS`, the ``--format`` value).
    extension : the output's file suffix; empty for a folder.
    description : what it is, for help texts and the export dialog.
    kind : ``"tracks"`` (written by :func:`export_tracks`), ``"masks"`` (the label
        stack: :func:`.masks.write_label_tiff`, :func:`.masks.write_mask_pngs`,
        :func:`.masks.export_run_masks`) or ``"overlay"`` (needs the video:
        :func:`.overlay.write_overlay`, :func:`.overlay.write_overlay_from_run`).
    folder : the output is a folder, not a file.
    """

    name: str
    extension: str
    description: str
    kind: ExportKind = "tracks"
    folder: bool = False

    @property
    def label(self) -> str:
        """Return the text an export dialog lists: the name and the suffix or what it is."""
        if self.kind == "tracks":
            return f"{self.name} ({self.extension})"
        return f"{self.name} ({self.description})"


_FORMATS = (
    ExportFormat(
        "csv", ".csv", "napari-sam2-worms skeleton table (points, widths, flags, features)"
    ),
    ExportFormat("dlc", ".h5", "DeepLabCut multi-animal predictions (HDF5)"),
    ExportFormat("dlc-csv", ".csv", "DeepLabCut multi-animal predictions (CSV)"),
    ExportFormat("sleap", ".h5", "SLEAP analysis file (HDF5)"),
    ExportFormat("nwb", ".nwb", "Neurodata Without Borders with ndx-pose"),
    ExportFormat("nc", ".nc", "movement poses dataset (netCDF) with widths, flags, features"),
    ExportFormat("wcon", ".wcon", "WCON (Worm tracker Commons Object Notation, JSON)"),
    ExportFormat("wcon-zip", ".wcon.zip", "WCON in a zip archive"),
    ExportFormat("masks-tiff", ".tif", "label stack TIFF", "masks"),
    ExportFormat("masks-png", "", "folder of per-object PNG masks", "masks", folder=True),
    ExportFormat(
        "overlay-mp4", ".mp4", "overlay video: masks, skeletons, names (H.264)", "overlay"
    ),
)

#: Format name -> :class:`ExportFormat`: every export, the skeleton-track formats first,
#: then the masks and the overlay video. The command line's ``export --format`` and the
#: export dialog offer these.
FORMATS: dict[str, ExportFormat] = {f.name: f for f in _FORMATS}


def export_formats(kind: ExportKind | None = None) -> dict[str, ExportFormat]:
    """Return the export formats, or those of one kind, in :data:`FORMATS`' order.

    Parameters
    ----------
    kind : ``"tracks"``, ``"masks"`` or ``"overlay"``; None: all.

    Returns
    -------
    dict
        Format name -> :class:`ExportFormat`.
    """
    return {n: f for n, f in FORMATS.items() if kind is None or f.kind == kind}


def _write_csv(table: ExportTable, tmp: Path, final: Path, **opts: Any) -> None:
    from ..skeleton import write_csv

    write_csv(table.tracks, tmp)


def _write_dlc(table: ExportTable, tmp: Path, final: Path, **opts: Any) -> None:
    from .movement_formats import write_dlc

    write_dlc(table, tmp)


def _write_sleap(table: ExportTable, tmp: Path, final: Path, **opts: Any) -> None:
    from .movement_formats import write_sleap

    write_sleap(table, tmp, video_path=opts.get("video_path"))


def _write_nwb(table: ExportTable, tmp: Path, final: Path, **opts: Any) -> None:
    from .nwb import write_nwb

    write_nwb(
        table,
        tmp,
        identifier=final.name.split(".")[0],
        subject=opts.get("subject"),
        video_path=opts.get("video_path"),
        nwb_folder=final.parent,
    )


def _write_nc(table: ExportTable, tmp: Path, final: Path, **opts: Any) -> None:
    from .movement_formats import write_netcdf

    write_netcdf(table, tmp)


def _write_wcon(table: ExportTable, tmp: Path, final: Path, **opts: Any) -> None:
    from .wcon import write_wcon

    write_wcon(table, tmp)


def _write_wcon_zip(table: ExportTable, tmp: Path, final: Path, **opts: Any) -> None:
    from .wcon import write_wcon

    inner = final.name[: -len(".zip")] if final.name.endswith(".zip") else final.name
    if not inner.endswith(".wcon"):
        inner += ".wcon"
    write_wcon(table, tmp, zipped=True, inner_name=inner)


#: Format name -> writer(table, temporary path, final path).
_WRITERS: dict[str, Callable[..., None]] = {
    "csv": _write_csv,
    "dlc": _write_dlc,
    "dlc-csv": _write_dlc,
    "sleap": _write_sleap,
    "nwb": _write_nwb,
    "nc": _write_nc,
    "wcon": _write_wcon,
    "wcon-zip": _write_wcon_zip,
    # "overlay-mp4" is written by .overlay (it needs the video, not only the tracks).
}


def format_for_path(path: str | os.PathLike) -> str:
    """Guess a format name from a file name (``.h5`` means DeepLabCut)."""
    name = Path(path).name.lower()
    if name.endswith(".wcon.zip"):
        return "wcon-zip"
    if name.endswith(".analysis.h5") or name.endswith(".slp.h5"):
        return "sleap"
    for fmt in ("dlc", "nwb", "nc", "wcon", "csv"):
        if name.endswith(FORMATS[fmt].extension):
            return fmt
    raise ExportError(
        f"Cannot tell the export format of {Path(path).name}; give one of "
        f"{sorted(export_formats('tracks'))}."
    )


def export_tracks(
    tracks: SkeletonTracks,
    path: str | os.PathLike,
    fmt: str,
    *,
    pixel_size: float | None = None,
    fps: float | None = None,
    objects: Iterable[int] | None = None,
    frames: tuple[int, int] | None = None,
    units: str = "px",
    include_flagged: bool = False,
    subject: NwbSubject | None = None,
    video_path: str | os.PathLike | None = None,
) -> Path:
    """Write skeleton tracks to ``path`` in format ``fmt``, atomically.

    Parameters
    ----------
    tracks : the skeleton tracks.
    path : output file. Its extension should be the format's (see :data:`FORMATS`);
        DeepLabCut and SLEAP need ``.h5`` / ``.csv``, the others are written as given.
    fmt : a ``"tracks"`` format of :data:`FORMATS`.
    pixel_size : micrometres per pixel; overrides ``tracks.pixel_size``.
    fps : frames per second; overrides ``tracks.fps``.
    objects : object ids to export (default all).
    frames : ``(start, stop)`` video frame numbers, both included (default all).
    units : coordinate units, "px" (default), "um" or "mm" (these two need the pixel
        size). WCON uses millimetres whenever the pixel size is known (the WCON
        recommendation) unless "um" is asked.
    include_flagged : also write the coordinates of skeletons that are not good
        (confidence 0.0). By default they are NaN, like frames without a skeleton.
    subject : NWB only: species, age and sex (:class:`.nwb.NwbSubject`); the defaults
        say "an animal of unknown species, age and sex" in NWB's forms.
    video_path : the tracked video, recorded in NWB (``original_videos``) and SLEAP
        (``video_path``) files.

    Returns
    -------
    The written path.

    Raises
    ------
    ExportError
        Unknown format, object, frame range or units, units without a pixel size, or a
        subject NWB cannot take.
    napari_sam2_worms.utils.OutputError
        The file cannot be written (read-only folder...). Nothing is replaced.
    """
    if fmt not in _WRITERS:
        raise ExportError(
            f"Unknown export format {fmt!r}; choose one of {sorted(export_formats('tracks'))}."
            + (
                f" ({fmt} is written from the masks or the video, not the tracks.)"
                if fmt in FORMATS
                else ""
            )
        )
    path = Path(path)
    px = pixel_size if pixel_size is not None else tracks.pixel_size
    if fmt in ("wcon", "wcon-zip") and units == "px" and px is not None:
        units = "mm"
    if fmt in ("dlc", "dlc-csv", "sleap") and path.suffix.lower() not in (
        (".csv",) if fmt == "dlc-csv" else (".h5",)
    ):
        raise ExportError(f"A {fmt} file must end in {FORMATS[fmt].extension}; got {path.name}.")
    if fmt == "nwb":
        from .nwb import NwbSubject

        subject = (subject or NwbSubject()).resolved()  # a bad subject fails before any write
    if fmt == "dlc" and "DLC" not in path.name:
        log.warning(
            "DeepLabCut's own tools find a table next to its video only when the name is "
            "<video stem>DLC...h5 (e.g. %sDLC_napari-sam2-worms.h5); %s is read by movement "
            "and pandas as is.",
            Path(video_path).stem if video_path else "plate1",
            path.name,
        )
    if fmt == "csv" and units != "px":
        raise ExportError(
            "The csv table is always in pixels (with the pixel size); use units='px'."
        )
    table = prepare(
        tracks,
        pixel_size=pixel_size,
        fps=fps,
        objects=objects,
        frames=frames,
        units=units,
        include_flagged=include_flagged,
    )
    if fmt in ("dlc", "dlc-csv", "sleap") and units != "px":
        log.warning(
            "%s files have no place for units: the file does not say it is in %s.", fmt, units
        )
    writer = _WRITERS[fmt]
    opts = {"subject": subject, "video_path": None if video_path is None else str(video_path)}
    with atomic_path(path) as tmp:
        writer(table, tmp, path, **opts)
    log.info(
        "Exported %d objects x %d frames to %s (%s)",
        table.tracks.n_objects,
        table.tracks.n_frames,
        path,
        fmt,
    )
    return path
