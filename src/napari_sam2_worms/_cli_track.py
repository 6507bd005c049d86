"""The ``track`` command: a run folder from a video and its prompts (see docs/cli.md).

Kept apart from :mod:`.cli` (the parser and the other commands): set-up, Ctrl-C and
SIGTERM handling, the autosaves and the final write, each failure with what is kept.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._cli_checks import parse_frames

if TYPE_CHECKING:
    import argparse


class _Bar:
    """A tqdm progress bar fed with (done, total) callbacks."""

    def __init__(self, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc=desc, unit="frame", dynamic_ncols=True, file=sys.stderr)

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def cmd_track(args: argparse.Namespace) -> int:
    """Track the prompted animals of a video into a run folder (``track``)."""
    from .backends.factory import BackendSpec, build_backend
    from .engine.pipeline import Autosaver, track_run
    from .engine.prompts import read_prompts_file
    from .engine.run_lock import hold
    from .engine.track_job import SigintGuard, check_run_folder, resume_session
    from .run_files import MASKS, SKELETONS
    from .video import open_video

    if args.prompts is None and not args.resume:
        raise ValueError("--prompts is required (only --resume goes on without it)")
    if args.frames_per_save is not None and args.frames_per_save < 1:
        raise ValueError(f"--frames-per-save must be at least 1; got {args.frames_per_save}")
    out = Path(args.out)
    existed = out.exists()
    video = open_video(args.video)
    n, h, w = video.shape[:3]
    store, names = (
        read_prompts_file(args.prompts, n_frames=n, size=(w, h)) if args.prompts else (None, {})
    )
    check_run_folder(out, overwrite=args.overwrite, resume=args.resume)
    session = None
    interrupted = saved = False
    guard = SigintGuard()
    try:
        # the lock is held for the whole run: a second `track` into this folder is refused
        with guard, hold(out, "napari-sam2-worms track", lasting=True):
            check_run_folder(out, overwrite=args.overwrite, resume=args.resume)
            backend = build_backend(
                BackendSpec(
                    name=args.backend,
                    model=args.model,
                    checkpoint=args.checkpoint,
                    device=args.device,
                    download=not args.no_download,
                    input_size=args.input_size,
                    compile=args.compile,
                    cuda_graphs=not args.no_cuda_graphs,
                    fast_attention=False if args.no_fast_attention else None,
                )
            )
            args.backend = getattr(backend, "name", args.backend)
            if args.resume:
                session, plan = resume_session(out, backend, video, store, args.frames)
                print(
                    f"resuming {out}: {sum(plan.done)} of {plan.total} frames were tracked",
                    file=sys.stderr,
                )
                _apply_resume_options(session, args)
            else:
                session, plan = _new_track_session(args, video, backend, store, names)
            # starting worker processes and threads: a Ctrl-C raised inside threading can
            # leave a lock half released, so here (as while tracking) it only asks to stop
            with guard.soft() as cancel:
                session.skeleton_workers = max(0, args.workers)  # skeletons made while tracking
            if cancel.is_set():  # nothing is tracked or saved yet
                raise KeyboardInterrupt
            session.skeleton_points = args.points
            saver = Autosaver(session, out, args.autosave, args.frames_per_save)
            if not saver.save(plan):  # from now on a crash leaves a run --resume continues
                raise OSError(
                    f"could not save the run into {out} ({saver.error}); nothing was "
                    "tracked: free some space or choose another --out"
                )
            saved = True
            bar = _Bar("tracking")
            try:
                with guard.soft() as cancel:
                    for step in track_run(session, plan, saver, cancel=cancel):
                        bar(step.done, step.total)
            except KeyboardInterrupt:  # a second Ctrl-C
                interrupted = True
            finally:
                bar.close()
            if guard.terminated:
                return _save_terminated(saver, plan, out)
            interrupted = interrupted or guard.cancel.is_set()
            if interrupted:
                print("\ninterrupted: writing the frames done so far", file=sys.stderr)
            session.settings["track"] = plan.to_json()
            _write_tracked(session, out, args, plan, saver)
    except KeyboardInterrupt:
        what = "terminated" if guard.terminated else "interrupted"
        if saved or args.resume:
            print(
                f"\n{what}; {out} keeps the last autosave (continue with --resume)",
                file=sys.stderr,
            )
        else:
            print(f"\n{what} before tracking started; nothing was written", file=sys.stderr)
        return 128 + signal.SIGTERM if guard.terminated else 130
    finally:
        if session is not None:
            session.close()
        if not existed:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when nothing was written into it
    if interrupted:
        print(
            f"wrote the {sum(plan.done)} of {plan.total} frames done to {out}; continue with "
            "--resume",
            file=sys.stderr,
        )
        return 130
    print(f"wrote {out / MASKS}, {out / SKELETONS} and the session to {out}")
    return 0


def _apply_resume_options(session, args: argparse.Namespace) -> None:
    """Apply ``--fps`` / ``--pixel-size`` given again with ``--resume`` (said, not silent)."""
    for flag, attr, value in (
        ("--fps", "fps", args.fps),
        ("--pixel-size", "pixel_size", args.pixel_size),
    ):
        old = getattr(session, attr)
        if value is not None and value != old:
            setattr(session, attr, float(value))
            print(f"{flag} {value:g} replaces the run's {old}", file=sys.stderr)


def _new_track_session(args: argparse.Namespace, video, backend, store, names):
    """Make a new session with the prompts applied, and its tracking plan."""
    from .engine.pipeline import TrackPlan
    from .engine.prompts import apply_prompts
    from .engine.session import TrackingSession

    if store is None:  # checked before: only --resume goes on without prompts
        raise ValueError("--prompts is required (only --resume goes on without it)")
    session = TrackingSession(video, backend, fps=args.fps, pixel_size=args.pixel_size)
    try:
        session.settings = {"backend": args.backend, "model": args.model, "device": args.device}
        apply_prompts(session, store, names)
        start, stop = parse_frames(args.frames)
        return session, TrackPlan.new(session, start, stop, args.frames)
    except BaseException:
        session.close()
        raise


def _save_terminated(saver, plan, out: Path) -> int:
    """After a SIGTERM: save what was tracked (no skeletons: time is short), exit 143."""
    if saver.save(plan):
        print(
            f"\nterminated: saved the {sum(plan.done)} of {plan.total} frames tracked to {out}; "
            "continue with --resume",
            file=sys.stderr,
        )
    else:
        print(
            f"\nterminated: could not save ({saver.error}); {out} keeps the last autosave "
            f"({saver.saved_done} of {plan.total} frames); continue with --resume",
            file=sys.stderr,
        )
    return 128 + signal.SIGTERM


def _write_tracked(session, out: Path, args: argparse.Namespace, plan, saver) -> None:
    """Write the run (masks, session, skeletons); a failure says what is kept."""
    from .engine.pipeline import write_run

    skel_bar = _Bar("skeletons")
    try:
        write_run(session, out, n_points=args.points, progress=skel_bar, workers=args.workers)
    except OSError as exc:  # a full disk at the end: say what is kept, how to go on
        raise OSError(
            f"{exc} The {sum(plan.done)} frames tracked could not be saved; {out} keeps "
            f"the last autosave ({saver.saved_done} of {plan.total} frames): free some "
            "space, then continue with --resume"
        ) from exc
    finally:
        skel_bar.close()
