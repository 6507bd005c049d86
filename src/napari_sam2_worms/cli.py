"""The ``napari-sam2-worms`` command: demo, track, skeletonize, export, download.

Errors a user can cause (bad file, bad prompt, no checkpoint, unwritable folder) are
printed as one clear line on stderr with exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import numpy as np

from ._cli_track import _Bar, cmd_track

log = logging.getLogger("napari_sam2_worms")


def _frames(text: str | None) -> tuple[int | None, int | None]:
    """Parse START:STOP (both inclusive, either may be empty); UsageError otherwise."""
    from ._cli_checks import parse_frames

    return parse_frames(text)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_skeletonize(args: argparse.Namespace) -> int:
    """Write the centerlines of a label-stack TIFF as a skeleton table (``skeletonize``)."""
    import tifffile

    from .skeleton import skeletonize_labels, write_csv

    path = Path(args.masks)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        labels = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for bad files
        raise ValueError(f"{path} is not a readable TIFF label stack: {exc}") from exc
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3 or labels.dtype.kind not in "iub":
        raise ValueError(
            f"{path} must hold an integer label stack (T, H, W); got {labels.dtype} {labels.shape}"
        )
    from ._cli_checks import check_label_ids

    check_label_ids(labels, path)
    bar = _Bar("skeletons")
    try:
        tracks = skeletonize_labels(
            labels.astype(np.uint16) if labels.dtype.kind == "b" else labels,
            n_points=args.points,
            fps=args.fps,
            pixel_size=args.pixel_size,
            progress=bar,
        )
    finally:
        bar.close()
    write_csv(tracks, args.out)
    print(f"wrote {args.out}: {tracks.n_objects} objects, {tracks.n_frames} frames")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run folder in one of :data:`~.export.FORMATS` (``export``)."""
    from ._cli_checks import check_out_is_not_the_video
    from .export import FORMATS, export_tracks
    from .export.run_dir import check_run, load_run_tracks

    run = Path(args.run_dir)
    doc = check_run(run)  # session.json valid, masks.tif as it records (else: named, exit 2)
    saved = doc.get("video") or {}
    for video in (
        args.video,
        saved.get("path"),
        saved.get("relative_path") and run / saved["relative_path"],
    ):
        check_out_is_not_the_video(args.out, video)
    _say_if_unfinished(run, doc)
    objects = _objects(args.objects)
    kind = FORMATS[args.format].kind
    if kind == "masks":
        from .export.masks import export_run_masks

        out = export_run_masks(
            run, args.out, args.format, fps=args.fps, objects=objects, frames=_frames(args.frames)
        )
        print(f"wrote {out}")
        return 0
    if kind == "overlay":
        from .export.overlay import write_overlay_from_run

        a, b = _frames(args.frames)
        write_overlay_from_run(
            run,
            args.out,
            start=a,
            stop=b,
            scale=args.scale,
            stride=args.stride,
            session=doc,
            moved_video=args.video,
        )
        print(f"wrote {args.out}")
        return 0
    from .export.nwb import NwbSubject

    tracks = load_run_tracks(run)
    video_path = (doc.get("video") or {}).get("path")
    a, b = _frames(args.frames)
    frames = None
    if a is not None or b is not None:
        frames = (a if a is not None else 0, b if b is not None else tracks.n_frames - 1)
    out = export_tracks(
        tracks,
        args.out,
        args.format,
        pixel_size=args.pixel_size,
        fps=args.fps,
        objects=objects,
        frames=frames,
        units=args.units,
        include_flagged=args.include_flagged,
        subject=NwbSubject(species=args.species, age=args.age, sex=args.sex),
        video_path=video_path,
    )
    print(f"wrote {out}")
    return 0


def _say_if_unfinished(run: Path, doc: dict) -> None:
    """Tell on stderr when the run exported is not finished (the rest is empty)."""
    import socket

    from .engine.pipeline import TrackPlan
    from .engine.run_lock import RunLock
    from .utils import pid_alive

    track = (doc.get("settings") or {}).get("track")
    if not track:
        return  # a session saved from napari: no plan to check
    try:
        plan = TrackPlan.from_json(track)
    except ValueError:
        return
    if plan.complete:
        return
    running = RunLock(run).holder()
    pid = running.get("pid")
    alive = isinstance(pid, int) and (running.get("host") != socket.gethostname() or pid_alive(pid))
    how = (
        f"{running.get('purpose') or 'a track'} (process {pid}) is still running in it: "
        "this is its last autosave"
        if running and alive
        else "continue it with `track VIDEO --out RUN --resume`"
    )
    print(
        f"note: {run} is unfinished: {sum(plan.done)} of {plan.total} frames tracked "
        f"(the others have no masks); {how}",
        file=sys.stderr,
    )


def _objects(text: str | None) -> list[int] | None:
    """Parse --objects 1,3 (None when not given)."""
    if not text:
        return None
    try:
        return [int(o) for o in text.replace(" ", "").split(",") if o]
    except ValueError:
        raise ValueError(
            f"--objects takes object ids separated by commas (e.g. 1,3), got {text!r}"
        ) from None


def cmd_download(args: argparse.Namespace) -> int:
    """Download a SAM 2 checkpoint into the cache, or list the models (``download``)."""
    from .backends.sam2.checkpoints import MODELS, download_checkpoint

    if args.list:
        for name, info in MODELS.items():
            print(f"{name:26s} {info.url}")
        return 0
    bar = _Bar(args.model)
    bar.bar.unit = "B"
    try:
        path = download_checkpoint(args.model, progress=bar, deadline=args.deadline)
    finally:
        bar.close()
    print(f"checkpoint ready: {path}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """Track many videos on Dask (``batch``)."""
    from .batch.command import run_batch_command

    return run_batch_command(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """Open napari with the synthetic plate and the tracker widget (``demo``)."""
    from .napari._demo import run_demo

    run_demo(backend=args.backend, run=not args.no_run)
    return 0


def _input_size(text: str) -> int | str | None:
    """Argparse type of ``--input-size``: auto, 1024, 768 or 512."""
    from .backends.sam2.input_size import check_input_size

    try:
        return check_input_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of every subcommand (``track``, ``export``, ``batch``...)."""
    from . import __version__
    from .backends.factory import BACKENDS, DEVICES
    from .backends.sam2.checkpoints import DEFAULT_MODEL

    p = _Parser(
        prog="napari-sam2-worms",
        description=(
            "Track and skeletonize worms (and other animals) with SAM 2 or a classic tracker."
        ),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="open napari with the synthetic plate and the tracker widget")
    d.add_argument("--backend", default="auto", choices=BACKENDS)
    d.add_argument("--no-run", action="store_true", help=argparse.SUPPRESS)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("track", help="track the prompted animals through a video")
    t.add_argument("video", help="mp4/avi/mov/mkv, a TIFF stack or a folder of frames")
    t.add_argument("--prompts", help="prompts file (JSON, version 1); not needed with --resume")
    t.add_argument("--out", required=True, help="output (run) folder")
    t.add_argument(
        "--overwrite", action="store_true", help="replace the run the --out folder holds"
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last autosave",
    )
    t.add_argument(
        "--autosave",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="save the session into --out every SECONDS while tracking (default 60; the "
        "interval grows so that saving takes at most ~5%% of the time)",
    )
    t.add_argument(
        "--frames-per-save",
        type=int,
        metavar="N",
        help="also save the session after every N tracked frames",
    )
    t.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="auto (default): SAM 2 when a checkpoint is available, else classic with a notice",
    )
    t.add_argument("--model", default=DEFAULT_MODEL)
    t.add_argument("--checkpoint", help="a local SAM 2 checkpoint file (.pt)")
    t.add_argument("--no-download", action="store_true", help="never download a checkpoint")
    t.add_argument("--device", default="auto", choices=DEVICES)
    t.add_argument("--frames", help="START:STOP, frames to track (inclusive)")
    t.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile SAM 2 on CUDA: faster after a ~1 min warm-up (long videos)",
    )
    t.add_argument(
        "--input-size",
        default="auto",
        type=_input_size,
        help="SAM 2's input size: auto (default: 1024 on a GPU; on the CPU the smallest of "
        "1024, 768, 512 covering the video), 1024 (the size it was trained at), 768, 512 "
        "(faster; check the masks of thin animals)",
    )
    t.add_argument(
        "--no-cuda-graphs", action="store_true", help="SAM 2 on CUDA: do not replay CUDA graphs"
    )
    t.add_argument(
        "--no-fast-attention",
        action="store_true",
        help="SAM 2 on CUDA: use sam2's own memory attention (same function, slower)",
    )
    t.add_argument(
        "--workers",
        type=int,
        default=max(1, min(8, (os.cpu_count() or 2) - 1)),
        help="processes that skeletonize, while tracking and after (default: CPU cores - 1, "
        "at most 8; 0: after tracking, in this process)",
    )
    t.add_argument("--points", type=int, default=49, help="skeleton points (default 49)")
    t.add_argument("--fps", type=float, help="override the video's frame rate")
    t.add_argument("--pixel-size", type=float, help="micrometres per pixel")
    t.set_defaults(func=cmd_track)

    s = sub.add_parser("skeletonize", help="centerlines from a label-stack TIFF")
    s.add_argument("masks", help="label stack TIFF (T, H, W)")
    s.add_argument("--out", required=True, help="output CSV")
    s.add_argument("--points", type=int, default=49)
    s.add_argument("--fps", type=float, default=1.0)
    s.add_argument("--pixel-size", type=float)
    s.set_defaults(func=cmd_skeletonize)

    from .export import FORMATS

    e = sub.add_parser("export", help="export a run folder (what track wrote, or a saved session)")
    e.add_argument("run_dir")
    e.add_argument("--format", required=True, choices=list(FORMATS))
    e.add_argument("--out", required=True)
    e.add_argument("--pixel-size", type=float, help="micrometres per pixel")
    e.add_argument("--fps", type=float)
    e.add_argument("--units", default="px", choices=["px", "um", "mm"])
    e.add_argument("--objects", help="comma-separated object ids (default all)")
    e.add_argument("--frames", help="START:STOP (inclusive)")
    e.add_argument("--video", help="the session's video where it is now, if moved (overlay-mp4)")
    e.add_argument(
        "--include-flagged",
        action="store_true",
        help="also write the points of flagged skeletons (confidence 0); default NaN",
    )
    e.add_argument(
        "--species",
        help="nwb: Latin binomial, e.g. 'Caenorhabditis elegans' (default: an animal, "
        "species not recorded)",
    )
    e.add_argument("--age", help="nwb: ISO 8601 duration, e.g. P3D or P2D/P4D (default P0D/)")
    e.add_argument(
        "--sex", help="nwb: M, F, O, U (default U); C. elegans: XX (hermaphrodite) or XO (male)"
    )
    e.add_argument("--scale", type=float, default=1.0, help="overlay-mp4: scale factor")
    e.add_argument("--stride", type=int, default=1, help="overlay-mp4: every n-th frame")
    e.set_defaults(func=cmd_export)

    g = sub.add_parser("download", help="download a SAM 2 checkpoint into the cache")
    g.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    g.add_argument("--list", action="store_true", help="list the known models")
    g.add_argument(
        "--deadline",
        type=float,
        default=3600.0,
        help="seconds the whole download may take (default 3600)",
    )
    g.set_defaults(func=cmd_download)

    from .batch.command import add_batch_parser

    add_batch_parser(sub).set_defaults(func=cmd_batch)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2: a user error, said in one line)."""
    try:
        parser = build_parser()  # imports the sub-commands' modules
    except KeyboardInterrupt:
        return _interrupted("", 130)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from ._cli_checks import exit_cleanup, interrupt_status, validate_args
    from .backends.base import BackendError

    try:
        with exit_cleanup():
            validate_args(args)  # outputs and numbers, before any work starts
            return int(args.func(args) or 0)
    except (BackendError, ValueError, OSError, KeyError, IndexError) as exc:
        if (status := interrupt_status(exc)) is not None:
            return _interrupted(args.command, status)
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"napari-sam2-worms {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # e.g. the masks of a video larger than this machine's memory
        print(
            f"napari-sam2-worms {args.command}: error: not enough memory ({exc or 'MemoryError'}); "
            "close other programs, or split the video into shorter clips",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return _interrupted(args.command, 130)
    except SystemExit as exc:
        if interrupt_status(exc) is None:  # not our SIGTERM: an exit asked for
            raise
        return _interrupted(args.command, 128 + signal.SIGTERM)
    except Exception as exc:
        # a signal's exception raised inside threading or multiprocessing can leave a lock
        # half released, and the error that follows is the signal's doing, not a bug
        if (status := interrupt_status(exc)) is None:
            raise
        return _interrupted(args.command, status)


def _interrupted(command: str, status: int) -> int:
    name = f"napari-sam2-worms {command}".strip()
    what = "terminated (SIGTERM)" if status == 128 + signal.SIGTERM else "interrupted"
    print(f"\n{name}: {what}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
