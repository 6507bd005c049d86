"""Speed and memory of the lazy video reader on a long 1080p H.264 video.

Usage::

    python3 benchmarks/video_bench.py [--frames 10000] [--seeks 30] [--video PATH]

Generates (once, cached in the system temp folder, outside the repository) a
``--frames``-frame 1920x1080 H.264 video with ffmpeg's ``testsrc2`` (libx264
ultrafast, a keyframe every 250 frames), then measures: the time to open it with
``open_video`` (demux-only frame index), the resident memory added by opening, random
seek times (median, max) over ``--seeks`` random frames, sequential frames/s, and the
alternative of seeking with imageio-ffmpeg (one ``ffmpeg -ss`` process per seek),
with a check that both return the same frame. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_sam2_worms import open_video


def rss_mb() -> float:
    """Resident memory of this process in MB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e6
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e3
    return float("nan")


def make_video(n_frames: int, gop: int = 250) -> Path:
    """The cached test video (generated with imageio-ffmpeg's ffmpeg when missing)."""
    import imageio_ffmpeg

    folder = Path(tempfile.gettempdir()) / "napari_sam2_worms_bench"
    folder.mkdir(exist_ok=True)
    path = folder / f"testsrc2_{n_frames}_1080p_g{gop}.mp4"
    if not path.exists():
        tmp = path.with_suffix(".part.mp4")
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
            "-i", "testsrc2=size=1920x1080:rate=30", "-frames:v", str(n_frames),
            "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop),
            "-pix_fmt", "yuv420p", str(tmp),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        tmp.replace(path)
    return path


def ffmpeg_seek(path: Path, index: int, fps: float) -> np.ndarray:
    """Frame ``index`` through imageio-ffmpeg: a new ``ffmpeg -ss`` process per seek."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(
        str(path), input_params=["-ss", f"{index / fps:.6f}"], output_params=["-frames:v", "1"]
    )
    meta = next(gen)
    w, h = meta["size"]
    frame = np.frombuffer(next(gen), np.uint8).reshape(h, w, 3)
    gen.close()
    return frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--seeks", type=int, default=30)
    ap.add_argument("--sequential", type=int, default=300, help="frames read in a row")
    ap.add_argument("--video", type=Path, default=None, help="use this video instead")
    args = ap.parse_args()

    t0 = time.perf_counter()
    path = args.video or make_video(args.frames)
    gen_s = time.perf_counter() - t0

    import av  # noqa: F401 - imported before the baseline: count the index, not the library

    rss0 = rss_mb()
    t0 = time.perf_counter()
    video = open_video(path, cache_frames=1)
    open_s = time.perf_counter() - t0
    rss_open = rss_mb() - rss0

    rng = np.random.default_rng(0)
    indices = rng.choice(len(video), args.seeks, replace=False)
    seek_s, frames = [], {}
    for i in indices:
        t0 = time.perf_counter()
        frame = video[int(i)]
        if len(frames) < 10:
            frames[int(i)] = frame
        seek_s.append(time.perf_counter() - t0)

    start = int(rng.integers(0, max(len(video) - args.sequential, 1)))
    video[start]
    t0 = time.perf_counter()
    for i in range(start + 1, min(start + 1 + args.sequential, len(video))):
        video[i]
    seq_fps = args.sequential / (time.perf_counter() - t0)

    ff_s, same = [], 0
    for i in indices[: min(10, len(indices))]:
        t0 = time.perf_counter()
        frame = ffmpeg_seek(path, int(i), video.fps)
        ff_s.append(time.perf_counter() - t0)
        ours = frames[int(i)]
        ours = ours if ours.ndim == 3 else np.repeat(ours[..., None], 3, axis=2)
        same += int(np.abs(frame.astype(int) - ours).mean() < 2.0)
    rss_end = rss_mb() - rss0
    video.close()

    print(f"video: {path} ({video.shape}, {video.fps:g} fps; generated/cached in {gen_s:.1f} s)\n")
    print("| measure | lazy reader (PyAV) | imageio-ffmpeg `-ss` |")
    print("| --- | --- | --- |")
    print(f"| open (frame index) | {open_s:.2f} s | - |")
    print(f"| RSS after open / at end | +{rss_open:.0f} MB / +{rss_end:.0f} MB | - |")
    print(
        f"| random seek, median (max) | {1e3 * np.median(seek_s):.0f} ms "
        f"({1e3 * max(seek_s):.0f} ms)"
        f" | {1e3 * np.median(ff_s):.0f} ms ({1e3 * max(ff_s):.0f} ms) |"
    )
    print(f"| sequential read | {seq_fps:.0f} frames/s | - |")
    print(f"| same frame as lazy reader | - | {same}/{len(ff_s)} |")


if __name__ == "__main__":
    main()
