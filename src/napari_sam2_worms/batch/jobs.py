"""Which videos a batch runs, with which prompts, and a fingerprint of each job's inputs.

An input on the command line is one of:

- a video file (any container :func:`~napari_sam2_worms.video.open_video` reads, or a
  TIFF stack);
- a saved session folder (it holds ``session.json``): re-run as it is, with the
  prompts and painted masks the user made in napari;
- a folder: its video files and the session folders directly inside it (not deeper);
  a folder that holds only frame images (PNG/JPEG/BMP) is one video.

The prompts of a video come from ``--prompts-dir`` or from beside the video, under
either name ``<stem>.prompts.json`` or ``<file name>.prompts.json`` (``plate1.prompts.json``
or ``plate1.mp4.prompts.json``); with ``init="detect"`` the classic detector finds the
animals on the first frame instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..run_files import PAINTED, SESSION
from ..video import IMAGE_SUFFIXES, TIFF_SUFFIXES, VIDEO_SUFFIXES

if TYPE_CHECKING:
    import os

#: a folder with these images (not TIFFs: those are videos of their own) is one video
FRAME_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s not in TIFF_SUFFIXES)
PROMPTS_SUFFIX = ".prompts.json"
INITS = ("prompts", "detect")


class BatchInputError(ValueError):
    """A batch input that cannot be used at all (missing path, nothing to run)."""


@dataclass(frozen=True)
class VideoJob:
    """One video of a batch.

    Attributes
    ----------
    key : the resolved path of the input (the manifest's key).
    video : the video to open (for a session, the session folder: it finds its video).
    name : the name of its run folder in the output folder.
    init : ``"prompts"``, ``"detect"`` or ``"session"``.
    prompts : the prompts file (``init == "prompts"``), else None.
    session : the saved session folder (``init == "session"``), else None.
    """

    key: str
    video: str
    name: str
    init: str
    prompts: str | None = None
    session: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the job as a JSON-ready dict."""
        return asdict(self)


def _is_session(path: Path) -> bool:
    return path.is_dir() and (path / SESSION).is_file()


def _is_video_file(path: Path) -> bool:
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in VIDEO_SUFFIXES
    )


def _expand(path: Path, out: Path | None) -> list[Path]:
    """Expand an input into the videos and session folders it stands for."""
    if not path.exists():
        raise BatchInputError(f"{path}: no such file or folder; check the path.")
    if _is_session(path) or path.is_file():
        if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
            raise BatchInputError(
                f"{path} is not a video (known suffixes: {', '.join(VIDEO_SUFFIXES)})"
            )
        return [path]
    if out is not None and path.resolve() == out.resolve():
        return []
    children = sorted(path.iterdir())
    found = [
        c
        for c in children
        if _is_video_file(c)
        or (_is_session(c) and (out is None or c.resolve().parent != out.resolve()))
    ]
    if found:
        return found
    if any(c.is_file() and c.suffix.lower() in FRAME_SUFFIXES for c in children):
        return [path]  # a folder of frames is one video
    return []


def find_prompts(video: Path, prompts_dir: Path | None) -> Path | None:
    """Find the prompts file of ``video`` (``--prompts-dir`` first, then beside it), or None."""
    names = [video.stem + PROMPTS_SUFFIX, video.name + PROMPTS_SUFFIX]
    folders = ([prompts_dir] if prompts_dir is not None else []) + [video.parent]
    for folder in folders:
        for n in names:
            if (folder / n).is_file():
                return folder / n
    return None


def discover(
    inputs: list[str | os.PathLike],
    *,
    init: str = "prompts",
    prompts_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
) -> list[VideoJob]:
    """Make the jobs for the command line's inputs, in order, each video once.

    A video without a prompts file still makes a job (with ``prompts=None``): the
    worker records it as failed with a message that says where to put the file.

    Raises
    ------
    BatchInputError
        An input does not exist, is not a video, or no video was found at all.
    """
    if init not in INITS:
        raise BatchInputError(f"--init must be one of {', '.join(INITS)}, got {init!r}")
    pdir = Path(prompts_dir).expanduser() if prompts_dir is not None else None
    if pdir is not None and not pdir.is_dir():
        raise BatchInputError(f"--prompts-dir {pdir} is not a folder")
    out_path = Path(out).expanduser() if out is not None else None
    paths: list[Path] = []
    seen: set[Path] = set()
    for raw in inputs:
        for p in _expand(Path(raw).expanduser(), out_path):
            r = p.resolve()
            if r not in seen:
                seen.add(r)
                paths.append(r)
    if not paths:
        raise BatchInputError(
            "no video found in "
            + ", ".join(str(i) for i in inputs)
            + f" ({', '.join(VIDEO_SUFFIXES)}, "
            "folders of frames, or saved session folders)"
        )
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    jobs = []
    for p in paths:
        name = p.stem if stems[p.stem] == 1 else f"{p.stem}-{_short_hash(str(p))}"
        if _is_session(p):
            jobs.append(VideoJob(str(p), str(p), name, "session", session=str(p)))
        elif init == "detect":
            jobs.append(VideoJob(str(p), str(p), name, "detect"))
        else:
            prompts = find_prompts(p, pdir)
            jobs.append(VideoJob(str(p), str(p), name, "prompts", prompts=_opt(prompts)))
    return jobs


def _opt(p: Path | None) -> str | None:
    return str(p) if p is not None else None


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a small file's content (prompts files, session JSON)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def job_inputs(job: VideoJob, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything a job's result depends on, as a JSON-able dict, and its digest.

    The video enters by its fingerprint (size and a hash of its first and last MiB),
    prompts files and saved sessions by their content, and the ``settings`` (backend,
    model, checkpoint fingerprint, skeleton points...) as given. Two runs with equal
    ``digest`` give the same run folder, so a done job with the same digest is skipped.

    Raises
    ------
    OSError
        A file cannot be read.
    """
    from ..engine.session_io import video_fingerprint

    doc: dict[str, Any] = {"init": job.init, "settings": settings}
    if job.init == "session":
        folder = Path(job.session or job.video)
        doc["session"] = file_digest(folder / SESSION)
        painted = folder / PAINTED
        doc["painted"] = file_digest(painted) if painted.is_file() else None
        try:
            video_doc = json.loads((folder / SESSION).read_text(encoding="utf-8"))
            doc["fingerprint"] = (video_doc.get("video") or {}).get("fingerprint")
        except (ValueError, AttributeError):
            doc["fingerprint"] = None  # the worker says what is wrong with the file
    else:
        doc["fingerprint"] = video_fingerprint(job.video)
        doc["prompts"] = file_digest(job.prompts) if job.prompts else None
    blob = json.dumps(doc, sort_keys=True, default=str).encode()
    doc["digest"] = hashlib.sha256(blob).hexdigest()
    return doc
