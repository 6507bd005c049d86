"""NWB files with ndx-pose: one ``PoseEstimation`` per object, a subject, regular time.

The file passes ``nwbinspector`` without a CRITICAL or BEST_PRACTICE_VIOLATION message
with the defaults of :class:`NwbSubject` (an animal of unknown species, age and sex is
described as such, in the forms NWB asks for). Time is stored as ``rate`` and
``starting_time`` when the exported frames are evenly spaced (the usual case), else as
timestamps. ``pynwb`` and ``ndx_pose`` are imported on first use.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .selection import ExportError, ExportTable

__all__ = [
    "REFERENCE_FRAME",
    "UNKNOWN_AGE",
    "UNKNOWN_SPECIES",
    "NwbSubject",
    "read_nwb",
    "write_nwb",
]

log = logging.getLogger(__name__)

SOURCE_SOFTWARE = "napari-sam2-worms"

#: Where (0, 0) is. Our coordinates are those of scikit-image and napari: the centre of a
#: pixel is at integer coordinates.
REFERENCE_FRAME = (
    "(0, 0) is the centre of the top-left pixel of the video frame (pixel centres are at "
    "integer coordinates, so the top-left corner of the frame is at (-0.5, -0.5) pixel); "
    "x grows to the right (columns), y grows downwards (rows)"
)
CONFIDENCE_DEFINITION = (
    "1.0 where the skeleton is good, 0.0 where it is flagged (coiled, touching another "
    "object, at the border, too small...), NaN where there is no skeleton"
)

#: NCBI taxonomy term of Metazoa (animals): what we know of a subject nobody described.
UNKNOWN_SPECIES = "http://purl.obolibrary.org/obo/NCBITaxon_33208"
#: ISO 8601 duration range "zero days or older": an unknown age, in NWB's form.
UNKNOWN_AGE = "P0D/"

#: Short spellings people type -> the Latin binomial NWB asks for.
_SPECIES_ALIASES = {
    "c. elegans": "Caenorhabditis elegans",
    "c.elegans": "Caenorhabditis elegans",
    "d. melanogaster": "Drosophila melanogaster",
    "m. musculus": "Mus musculus",
    "r. norvegicus": "Rattus norvegicus",
}
_SPECIES_FORM = re.compile(r"([A-Z][a-z]* [a-z]+)|(http://purl\.obolibrary\.org/obo/NCBITaxon_\d+)")
_DURATION = re.compile(
    r"P(?!$)(\d+(\.\d+)?Y)?(\d+(\.\d+)?M)?(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?"
    r"(T(?=\d)(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?"
)
_SEXES = {"M", "F", "O", "U", "XX", "XO"}
_C_ELEGANS = "Caenorhabditis elegans"


def _valid_age(age: str) -> bool:
    if _DURATION.fullmatch(age):
        return True
    if age.count("/") == 1:
        low, high = age.split("/")
        return bool(low or high) and all(not p or _DURATION.fullmatch(p) for p in (low, high))
    return False


@dataclass(frozen=True)
class NwbSubject:
    """Who was recorded, in the forms NWB asks for.

    Attributes
    ----------
    species : Latin binomial ("Caenorhabditis elegans"; "C. elegans", "D. melanogaster",
        "M. musculus" are expanded) or an NCBI taxonomy IRI. Default: Metazoa's IRI, i.e. an
        animal of unrecorded species.
    age : ISO 8601 duration ("P3D" = 3 days) or range ("P2D/P4D", "P1D/" = at least a
        day). Default "P0D/" (unknown: zero days or older).
    sex : "M", "F", "O" (other), "U" (unknown); for C. elegans "XX" (hermaphrodite) or
        "XO" (male). Default "U"; C. elegans has no default (NWB asks XX or XO).
    """

    species: str | None = None
    age: str | None = None
    sex: str | None = None

    def resolved(self) -> NwbSubject:
        """Return the subject with defaults filled in and spellings checked.

        Raises
        ------
        ExportError
            A species, age or sex NWB cannot take, or C. elegans without XX/XO.
        """
        species = (self.species or "").strip() or UNKNOWN_SPECIES
        species = _SPECIES_ALIASES.get(species.lower(), species)
        if not _SPECIES_FORM.fullmatch(species):
            raise ExportError(
                f"NWB wants the species as a Latin binomial (e.g. 'Caenorhabditis elegans') "
                f"or an NCBI taxonomy IRI; got {self.species!r}."
            )
        age = (self.age or "").strip() or UNKNOWN_AGE
        if not _valid_age(age):
            raise ExportError(
                f"NWB wants the age as an ISO 8601 duration, e.g. 'P3D' (3 days), 'P2D/P4D' "
                f"(2 to 4 days) or 'P1D/' (a day or more); got {self.age!r}."
            )
        sex = (self.sex or "").strip().upper()
        if not sex:
            if species == _C_ELEGANS:
                raise ExportError(
                    "For C. elegans NWB asks the sex as XX (hermaphrodite) or XO (male): "
                    "give one (--sex XX or --sex XO)."
                )
            sex = "U"
        if sex not in _SEXES:
            raise ExportError(
                f"Sex must be one of M, F, O (other), U (unknown), or for C. elegans XX / XO; "
                f"got {self.sex!r}."
            )
        if species == _C_ELEGANS and sex not in ("XX", "XO"):
            log.warning(
                "C. elegans with sex %s: NWB's best practice is XX (hermaphrodite) or XO "
                "(male); nwbinspector will report it.",
                sex,
            )
        return NwbSubject(species=species, age=age, sex=sex)


def _unit(table: ExportTable) -> tuple[str, float, str]:
    """Return (unit, conversion, sentence) for NWB: data * conversion is in ``unit``."""
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


def _timing(table: ExportTable) -> dict:
    """``rate`` + ``starting_time`` for evenly spaced frames, else ``timestamps``."""
    frames = np.asarray(table.tracks.frames, dtype=np.int64)
    steps = np.unique(np.diff(frames))
    if len(frames) == 1 or (len(steps) == 1 and steps[0] > 0):
        step = int(steps[0]) if len(frames) > 1 else 1
        return {"rate": float(table.fps) / step, "starting_time": float(frames[0]) / table.fps}
    return {"timestamps": np.asarray(table.times, np.float64)}


def write_nwb(
    table: ExportTable,
    tmp: Path,
    *,
    identifier: str | None = None,
    subject: NwbSubject | None = None,
    video_path: str | None = None,
    nwb_folder: str | Path | None = None,
) -> None:
    """Write an NWB file with one ndx-pose ``PoseEstimation`` per object.

    With one object, the ``PoseEstimation`` is named ``PoseEstimation`` and the file's
    identifier is the object name, so ``movement.io.load_poses.from_nwb_file(path)``
    loads it as is. With several objects each ``PoseEstimation`` is named after its
    object (``worm1``...): load them with :func:`read_nwb`, or with
    ``from_nwb_file(path, pose_estimation_key="worm1")`` one at a time.

    Parameters
    ----------
    table : the prepared export table.
    tmp : file to write.
    identifier : file identifier with several objects (default "napari-sam2-worms").
    subject : species, age, sex (defaults: see :class:`NwbSubject`).
    video_path : the tracked video, recorded as each ``PoseEstimation``'s
        ``original_videos`` (the field older readers know) and, when the file exists,
        as ``source_video``: an external-file ``ImageSeries`` named "video" in
        ``acquisition``, its path relative to ``nwb_folder`` (NWB's best practice).
    nwb_folder : the folder the NWB file will live in (default: ``tmp``'s).
    """
    import ndx_pose
    import pynwb

    who = (subject or NwbSubject()).resolved()
    tr = table.tracks
    names = list(tr.names)
    kp = table.keypoint_names
    unit, conversion, unit_sentence = _unit(table)
    edges = np.array(
        [[i, i + 1] for i in range(len(kp) - 1)], dtype=np.uint8 if len(kp) < 256 else np.uint16
    )
    single = len(names) == 1
    animals = "1 animal" if single else f"{len(names)} animals"
    nwbfile = pynwb.NWBFile(
        session_description=f"Skeletons of {', '.join(names)} exported by {SOURCE_SOFTWARE}",
        identifier=names[0] if single else (identifier or SOURCE_SOFTWARE),
        session_start_time=datetime.datetime.now(datetime.timezone.utc),
        subject=pynwb.file.Subject(
            subject_id=names[0] if single else "plate",
            description=f"{animals} tracked in one video: {', '.join(names)}",
            species=who.species,
            age=who.age,
            sex=who.sex,
        ),
    )
    module = nwbfile.create_processing_module(
        name="behavior", description="processed behavioral data"
    )
    timing = _timing(table)
    videos = [str(video_path)] if video_path else None
    source = _source_video(nwbfile, video_path, nwb_folder or Path(tmp).parent, table.fps)
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
            when = dict(timing)
            if "timestamps" in when and j > 0:
                when["timestamps"] = series[0]  # the first series holds them, others link
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
                    **when,
                )
            )
        with warnings.catch_warnings():
            # original_videos is deprecated in ndx-pose 0.2+ (source_video replaces it) but
            # is still what older readers look for: we write both, on purpose.
            warnings.simplefilter("ignore", DeprecationWarning)
            pe = ndx_pose.PoseEstimation(
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
                original_videos=videos,
                source_video=source,
                scorer=SOURCE_SOFTWARE,
                source_software=SOURCE_SOFTWARE,
                source_software_version=__version__,
                skeleton=skeleton,
            )
        estimations.append(pe)
    module.add(ndx_pose.Skeletons(skeletons=skeletons))
    for pe in estimations:
        module.add(pe)
    with pynwb.NWBHDF5IO(str(tmp), mode="w") as io:
        io.write(nwbfile)


def _source_video(nwbfile, video_path: str | None, folder: str | Path, fps: float):
    """Make an external-file ImageSeries of the video (path relative to the file), or None."""
    import pynwb

    if not video_path or not Path(video_path).is_file():
        return None
    try:
        rel = os.path.relpath(Path(video_path).resolve(), Path(folder).resolve())
    except ValueError:  # another drive (Windows): no relative path
        return None
    try:
        from ..video import open_video

        video = open_video(video_path)
        n_frames = len(video)
        getattr(video, "close", lambda: None)()
    except Exception as exc:  # an unreadable video is only not linked
        log.warning("The video %s is not linked in the NWB file: %s", video_path, exc)
        return None
    series = pynwb.image.ImageSeries(
        name="video",
        description="the tracked video (external file, path relative to this NWB file)",
        external_file=[rel],
        format="external",
        starting_frame=[0],
        num_samples=n_frames,
        rate=float(fps),
        starting_time=0.0,
        unit="n.a.",
    )
    nwbfile.add_acquisition(series)
    return series


def _series_times(series) -> np.ndarray:
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], np.float64)
    n = len(series.data)
    return float(series.starting_time or 0.0) + np.arange(n) / float(series.rate)


def read_nwb(path: str | Path):
    """Load every ``PoseEstimation`` of an NWB file written by :func:`write_nwb`.

    Returns a ``movement`` dataset with one individual per ``PoseEstimation``, named
    after the object, with ``time`` in seconds as stored in the file (timestamps, or
    starting time + row / rate).
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
            ds = ds.assign_coords(individuals=[name], time=_series_times(first))
            parts.append(ds)
    return xr.concat(parts, dim="individuals")
