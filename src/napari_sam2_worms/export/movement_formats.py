"""Pose formats through ``movement``: DeepLabCut, SLEAP analysis, NWB (ndx-pose), netCDF.

Each writer builds a ``movement`` poses dataset (:func:`to_movement_dataset`) and saves
it with ``movement``'s own savers (DeepLabCut, SLEAP), with ``ndx-pose`` (NWB, to hold
several worms and the pixel size in one file) or with xarray (netCDF). ``movement``
and ``pynwb`` are imported on first use only.

Keypoints are ``p00``... head first; individuals are the object names.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import __version__
from .selection import ExportTable, feature_unit, scaled_features

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

SOURCE_SOFTWARE = "napari-sam2-worms"
REFERENCE_FRAME = (
    "(0, 0) is the top-left corner of the top-left pixel of the video frame; "
    "x grows to the right (columns), y grows downwards (rows)"
)
CONFIDENCE_DEFINITION = (
    "1.0 where the skeleton is good, 0.0 where it is flagged (coiled, touching another "
    "object, at the border, too small...), NaN where there is no skeleton"
)


def to_movement_dataset(table: ExportTable, *, from_frame_zero: bool = False):
    """A ``movement`` poses dataset (xarray) of the table.

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
    """movement's savers refuse an existing file: free the reserved temporary name."""
    tmp.unlink(missing_ok=True)


def write_dlc(table: ExportTable, tmp: Path) -> None:
    """DeepLabCut multi-animal table (.h5 or .csv, by ``tmp``'s suffix).

    Rows are video frames from 0; individuals are the object names. DeepLabCut files
    have no place for units or the pixel size.
    """
    from movement.io import save_poses

    ds = to_movement_dataset(table, from_frame_zero=True)
    _prepare_target(tmp)
    save_poses.to_dlc_file(ds, tmp, split_individuals=False)


def write_sleap(table: ExportTable, tmp: Path) -> None:
    """SLEAP analysis HDF5 file (frames from 0; no place for units or pixel size)."""
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


def write_netcdf(table: ExportTable, tmp: Path) -> None:
    """movement's netCDF dataset plus widths, flags, reasons and features.

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


def _nwb_unit(table: ExportTable) -> tuple[str, float, str]:
    """(unit, conversion, sentence) for NWB: data * conversion is in ``unit``."""
    if table.units == "px":
        if table.pixel_size is None:
            return "pixels", 1.0, "Coordinates in pixels; pixel size unknown."
        return (
            "meters",
            table.pixel_size * 1e-6,
            f"Coordinates in pixels of {table.pixel_size:g} micrometres "
            "(data * conversion = metres).",
        )
    factor = 1e-6 if table.units == "um" else 1e-3
    return "meters", factor, f"Coordinates in {table.unit_name} (data * conversion = metres)."


def write_nwb(table: ExportTable, tmp: Path, *, identifier: str | None = None) -> None:
    """An NWB file with one ndx-pose ``PoseEstimation`` per object.

    With one object, the ``PoseEstimation`` is named ``PoseEstimation`` and the file's
    identifier is the object name, so ``movement.io.load_poses.from_nwb_file(path)``
    loads it as is. With several objects each ``PoseEstimation`` is named after its
    object (``worm1``...): load them with :func:`read_nwb`, or with
    ``from_nwb_file(path, pose_estimation_key="worm1")`` one at a time.
    Timestamps are frame / fps in seconds; the pixel size is the series' ``conversion``.
    """
    import datetime

    import ndx_pose
    import pynwb

    tr = table.tracks
    names = list(tr.names)
    kp = table.keypoint_names
    unit, conversion, unit_sentence = _nwb_unit(table)
    edges = np.array(
        [[i, i + 1] for i in range(len(kp) - 1)], dtype=np.uint8 if len(kp) < 256 else np.uint16
    )
    single = len(names) == 1
    nwbfile = pynwb.NWBFile(
        session_description=f"Skeletons of {', '.join(names)} exported by {SOURCE_SOFTWARE}",
        identifier=names[0] if single else (identifier or "napari-sam2-worms"),
        session_start_time=datetime.datetime.now(datetime.timezone.utc),
        subject=pynwb.file.Subject(
            subject_id=names[0] if single else "plate",
            description=(f"{len(names)} animals tracked in one video: {', '.join(names)}"),
        ),
    )
    module = nwbfile.create_processing_module(
        name="behavior", description="processed behavioral data"
    )
    skeletons = []
    estimations = []
    for k, name in enumerate(names):
        safe = name.replace("/", "_")  # NWB names cannot hold "/"
        skeleton = ndx_pose.Skeleton(
            name=f"skeleton_{safe}", nodes=kp, edges=edges, subject=nwbfile.subject
        )
        skeletons.append(skeleton)
        series: list = []
        for j, kp_name in enumerate(kp):
            series.append(
                ndx_pose.PoseEstimationSeries(
                    name=kp_name,
                    description=f"{kp_name} of {name} (centerline point {j}, head first). "
                    + unit_sentence,
                    data=table.points[:, k, j, :],
                    unit=unit,
                    conversion=conversion,
                    reference_frame=REFERENCE_FRAME,
                    confidence=table.confidence[:, k, j],
                    confidence_definition=CONFIDENCE_DEFINITION,
                    # the first series holds the timestamps, the others link to them
                    timestamps=table.times if j == 0 else series[0],
                )
            )
        estimations.append(
            ndx_pose.PoseEstimation(
                name="PoseEstimation" if single else safe,
                pose_estimation_series=series,
                description=(
                    f"Head-first centerline of {name} ({len(kp)} points). {unit_sentence} "
                    f"fps {table.fps:g}."
                    + (
                        f" pixel_size_um {table.pixel_size:g}."
                        if table.pixel_size is not None
                        else ""
                    )
                ),
                scorer=SOURCE_SOFTWARE,
                source_software=SOURCE_SOFTWARE,
                source_software_version=__version__,
                skeleton=skeleton,
            )
        )
    module.add(ndx_pose.Skeletons(skeletons=skeletons))
    for pe in estimations:
        module.add(pe)
    with pynwb.NWBHDF5IO(str(tmp), mode="w") as io:
        io.write(nwbfile)


def read_nwb(path: str | Path):
    """Load every ``PoseEstimation`` of an NWB file written by :func:`write_nwb`.

    Returns a ``movement`` dataset with one individual per ``PoseEstimation``, named
    after the object, with ``time`` in seconds as stored in the file.
    """
    import pynwb
    import xarray as xr
    from movement.io import load_poses

    with pynwb.NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        module = nwbfile.processing["behavior"]
        keys = [
            k for k, v in module.data_interfaces.items() if type(v).__name__ == "PoseEstimation"
        ]
        parts = []
        for key in keys:
            ds = load_poses.from_nwb_file(nwbfile, pose_estimation_key=key)
            pe = module[key]
            first = next(iter(pe.pose_estimation_series.values()))
            name = nwbfile.identifier if key == "PoseEstimation" else key
            ds = ds.assign_coords(individuals=[name], time=np.asarray(first.timestamps[:]))
            parts.append(ds)
    return xr.concat(parts, dim="individuals")
