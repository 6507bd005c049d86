"""Pose formats through ``movement``: DeepLabCut, SLEAP analysis, NWB (ndx-pose), netCDF.

Each writer builds a ``movement`` poses dataset (:func:`to_movement_dataset`) and saves
it with ``movement``'s own savers (DeepLabCut, SLEAP), with ``ndx-pose`` (NWB, to hold
several worms and the pixel size in one file: :mod:`.nwb`) or with xarray (netCDF). ``movement``
and ``pynwb`` are imported on first use only.

Keypoints are ``p00``... head first; individuals are the object names.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from .nwb import CONFIDENCE_DEFINITION, REFERENCE_FRAME, SOURCE_SOFTWARE, read_nwb, write_nwb
from .selection import ExportTable, feature_unit, scaled_features

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "SOURCE_SOFTWARE",
    "read_nwb",
    "to_movement_dataset",
    "write_dlc",
    "write_netcdf",
    "write_nwb",
    "write_sleap",
]

log = logging.getLogger(__name__)


def to_movement_dataset(table: ExportTable, *, from_frame_zero: bool = False):
    """Make a ``movement`` poses dataset (xarray) of the table.

    Parameters
    ----------
    table : the prepared export table.
    from_frame_zero : make one row per video frame from frame 0 to the last exported
        frame, NaN where nothing is exported, so that the row number is the video frame
        number (what DeepLabCut and SLEAP files mean). Otherwise one row per exported
        frame, with ``time`` = frame / fps in seconds.

    Returns
    -------
    xarray.Dataset with ``position`` (time, space, keypoints, individuals) and
    ``confidence`` (time, keypoints, individuals), attrs ``fps``, ``source_software``.
    """
    from movement.io import load_poses

    pos = table.points.transpose(0, 3, 2, 1)  # (T, K, N, 2) -> (T, 2, N, K)
    conf = table.confidence.transpose(0, 2, 1)  # (T, K, N) -> (T, N, K)
    frames = np.asarray(table.tracks.frames, dtype=int)
    if from_frame_zero:
        n_rows = int(frames.max()) + 1
        dense_pos = np.full((n_rows, *pos.shape[1:]), np.nan)
        dense_conf = np.full((n_rows, *conf.shape[1:]), np.nan)
        dense_pos[frames] = pos
        dense_conf[frames] = conf
        pos, conf = dense_pos, dense_conf
    ds = load_poses.from_numpy(
        position_array=pos,
        confidence_array=conf,
        individual_names=list(table.tracks.names),
        keypoint_names=table.keypoint_names,
        fps=table.fps,
        source_software=SOURCE_SOFTWARE,
    )
    if not from_frame_zero:
        ds = ds.assign_coords(time=table.times)
    return ds


def _prepare_target(tmp: Path) -> None:
    """Movement's savers refuse an existing file: free the reserved temporary name."""
    tmp.unlink(missing_ok=True)


def write_dlc(table: ExportTable, tmp: Path) -> None:
    """DeepLabCut multi-animal table (.h5 or .csv, by ``tmp``'s suffix).

    Rows are video frames from 0; individuals are the object names. DeepLabCut files
    have no place for units or the pixel size. DeepLabCut's own tools find a table
    next to a video only when its name is ``<video stem>DLC...``: see docs/export.md.
    """
    from movement.io import save_poses

    ds = to_movement_dataset(table, from_frame_zero=True)
    _prepare_target(tmp)
    save_poses.to_dlc_file(ds, tmp, split_individuals=False)


def write_sleap(table: ExportTable, tmp: Path, *, video_path: str | None = None) -> None:
    """SLEAP analysis HDF5 file (frames from 0; no place for units or pixel size).

    movement writes the tracks; the skeleton's edges (``edge_inds``, ``edge_names``: the
    chain p00-p01-...) and ``video_path`` are then filled in, as SLEAP's own export does.
    """
    from movement.io import save_poses

    ds = to_movement_dataset(table, from_frame_zero=True)
    empty = [
        name
        for k, name in enumerate(table.tracks.names)
        if not np.isfinite(table.points[:, k]).any()
    ]
    if empty:
        log.warning(
            "SLEAP analysis files cannot hold a track without any point: %s left out "
            "(no skeleton in the exported frames).",
            ", ".join(empty),
        )
        if len(empty) == len(table.tracks.names):
            from .selection import ExportError

            raise ExportError(
                "No object has a skeleton in the exported frames; nothing to write to a SLEAP file."
            )
    _prepare_target(tmp)
    save_poses.to_sleap_analysis_file(ds, tmp)
    _complete_sleap_file(tmp, table.keypoint_names, video_path)


def _complete_sleap_file(path: Path, nodes: list[str], video_path: str | None) -> None:
    """Write the chain skeleton's edges and the video path into a SLEAP analysis file."""
    import h5py

    inds = np.array([[i, i + 1] for i in range(len(nodes) - 1)], dtype=np.int64).reshape(-1, 2)
    names = np.array(
        [[nodes[i].encode(), nodes[i + 1].encode()] for i in range(len(nodes) - 1)], dtype="S"
    ).reshape(-1, 2)
    with h5py.File(path, "r+") as f:
        for key, value in (
            ("edge_inds", inds),
            ("edge_names", names),
            ("video_path", str(video_path or "")),
        ):
            if key in f:
                del f[key]
            f.create_dataset(key, data=value)


def write_netcdf(table: ExportTable, tmp: Path) -> None:
    """Movement's netCDF dataset plus widths, flags, reasons and features.

    ``time`` is in seconds (frame / fps) with the video frame number as the ``frame``
    coordinate; attrs record ``fps``, ``space_unit``, ``pixel_size_um`` (when known).
    """
    ds = to_movement_dataset(table)
    tr = table.tracks
    ds = ds.assign_coords(
        frame=("time", np.asarray(tr.frames, dtype=np.int64)),
        object_id=("individuals", np.asarray(tr.object_ids, dtype=np.int64)),
    )
    dims_tk = ("time", "individuals")
    ds["width"] = (
        ("time", "keypoints", "individuals"),
        np.asarray(tr.widths, np.float64).transpose(0, 2, 1) * table.scale,
        {"units": table.unit_name, "long_name": "body width at each keypoint"},
    )
    ds["good"] = (dims_tk, np.asarray(tr.good, bool), {"long_name": "skeleton is good"})
    ds["reason"] = (
        dims_tk,
        np.asarray(tr.reason, dtype=str),
        {"long_name": "why the skeleton is not good ('' when good)"},
    )
    for name, values in scaled_features(table).items():
        ds[name] = (dims_tk, values, {"units": feature_unit(name, table.units)})
    ds["position"].attrs.update(units=table.unit_name, reference_frame=REFERENCE_FRAME)
    ds["confidence"].attrs.update(definition=CONFIDENCE_DEFINITION)
    ds.attrs.update(
        space_unit=table.unit_name,
        source_software_version=__version__,
        keypoint_order="head first",
        time_unit="seconds",
        fps=table.fps,
    )
    if table.pixel_size is not None:
        ds.attrs["pixel_size_um"] = table.pixel_size
    _prepare_target(tmp)
    ds.to_netcdf(tmp)
