"""The ``napari-sam2-worms batch`` sub-command: its options and what it prints."""

from __future__ import annotations

import argparse
import logging
import sys

from ..backends.factory import BACKENDS
from ..backends.sam2.checkpoints import DEFAULT_MODEL

EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def add_batch_parser(sub) -> argparse.ArgumentParser:
    """Add ``batch`` to the sub-command parsers ``sub``."""
    b = sub.add_parser(
        "batch",
        help="track many videos on Dask (every GPU of this host, or a cluster)",
        description=(
            "Track every video (files, folders of videos, saved sessions) into OUT: one run "
            "folder per video, manifest.json, report.csv and report.html. Running again "
            "skips the videos done with the same inputs and retries the failed ones. The "
            "exit status is the number of videos that failed (at most 100)."
        ),
    )
    b.add_argument("inputs", nargs="+", metavar="VIDEOS_OR_FOLDERS")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--backend", default="auto", choices=BACKENDS)
    b.add_argument("--model", default=DEFAULT_MODEL)
    b.add_argument("--checkpoint", help="a local SAM 2 checkpoint file (.pt)")
    b.add_argument("--no-download", action="store_true", help="never download a checkpoint")
    b.add_argument(
        "--init",
        default="prompts",
        choices=["prompts", "detect"],
        help="prompts: <video>.prompts.json beside each video (or in --prompts-dir); "
        "detect: the classic detector's masks on the first frame (saved sessions are "
        "re-run with their own prompts either way)",
    )
    b.add_argument("--prompts-dir", help="folder of <video stem>.prompts.json files")
    b.add_argument("--min-area", type=_positive_int, default=20, help="detect: smallest blob")
    b.add_argument("--max-area", type=_positive_int, help="detect: largest blob (pixels)")
    b.add_argument("--max-objects", type=_positive_int, help="detect: at most this many")
    b.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
    b.add_argument(
        "--slurm",
        type=_positive_int,
        metavar="JOBS",
        help="submit JOBS SLURM jobs (one GPU each) with dask-jobqueue; queue, account and "
        "walltime come from ~/.config/dask/jobqueue.yaml",
    )
    b.add_argument(
        "--workers",
        type=_positive_int,
        help="local worker processes (default: one per GPU; classic: one per CPU core); "
        "more workers than GPUs share them",
    )
    b.add_argument("--gpus", default="all", help="all (default), none, or GPU ids: 0,1,...")
    b.add_argument(
        "--skeleton-workers",
        type=int,
        help="processes that skeletonize each video while it is tracked "
        "(default: on GPU workers, the cores per worker - 1, at most 8; else 0)",
    )
    b.add_argument(
        "--resume",
        action="store_true",
        help="skip videos done with the same inputs, retry the others (the default; "
        "--force runs every video again)",
    )
    b.add_argument("--force", action="store_true", help="run every video again")
    b.add_argument("--dashboard-address", default=":8787", help="local dashboard (default :8787)")
    b.add_argument("--points", type=_positive_int, default=49, help="skeleton points")
    b.add_argument("--fps", type=_positive_float, help="override the videos' frame rate")
    b.add_argument("--pixel-size", type=_positive_float, help="micrometres per pixel")
    b.add_argument("--compile", action="store_true", help="torch.compile SAM 2 on CUDA")
    b.add_argument("--no-cuda-graphs", action="store_true", help=argparse.SUPPRESS)
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    return b


def run_batch_command(args: argparse.Namespace) -> int:
    """Run the batch the parsed ``args`` describe; returns the exit status."""
    from .cluster import NO_DASK

    try:
        from .cluster import require_distributed
        from .runner import BatchOptions, run_batch

        require_distributed()
    except ImportError:
        print(f"napari-sam2-worms batch: error: {NO_DASK}", file=sys.stderr)  # noqa: T201
        return 2
    if args.resume and args.force:
        raise ValueError("--resume and --force contradict each other; give one")
    if args.scheduler and args.slurm:
        raise ValueError("--scheduler and --slurm contradict each other; give one")
    options = BatchOptions(
        backend=args.backend,
        model=args.model,
        checkpoint=args.checkpoint,
        download=not args.no_download,
        init=args.init,
        prompts_dir=args.prompts_dir,
        points=args.points,
        fps=args.fps,
        pixel_size=args.pixel_size,
        min_area=args.min_area,
        max_area=args.max_area,
        max_objects=args.max_objects,
        skeleton_workers=args.skeleton_workers,
        compile=args.compile,
        cuda_graphs=not args.no_cuda_graphs,
        force=args.force,
    )

    if not getattr(args, "verbose", False):  # Dask logs every worker start and stop
        logging.getLogger("distributed").setLevel(logging.WARNING)

    def echo(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)  # noqa: T201

    scheduler = args.scheduler
    slurm = None
    if args.slurm:
        import shutil

        from .cluster import slurm_cluster

        if shutil.which("sbatch") is None:
            raise OSError("--slurm needs SLURM's sbatch (run it on the cluster's login node)")
        slurm = slurm_cluster()
        slurm.scale(jobs=args.slurm)
        scheduler = slurm
        echo(f"submitted {args.slurm} SLURM jobs")
    try:
        summary = run_batch(
            args.inputs,
            args.out,
            options,
            scheduler=scheduler,
            workers=args.workers,
            gpus=args.gpus,
            dashboard_address=args.dashboard_address,
            progress=not args.no_progress,
            echo=echo,
        )
    except KeyboardInterrupt:
        echo("\ninterrupted: the videos done so far are kept; run again to continue")
        return EXIT_INTERRUPTED
    finally:
        if slurm is not None:
            slurm.close()
    for name, error in summary.failed:
        echo(f"failed: {name}: {error}")
    print(  # noqa: T201
        f"{len(summary.done)} done, {len(summary.skipped)} skipped (done before), "
        f"{len(summary.failed)} failed; report: {summary.report_html}"
    )
    return summary.exit_code
