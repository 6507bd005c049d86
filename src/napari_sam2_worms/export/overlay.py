"""An overlay video for review and talks: masks, skeletons (head marked) and names.

Frames are drawn one at a time and streamed to ffmpeg (imageio-ffmpeg, H.264, yuv420p
so that every player opens it): memory does not grow with the video's length. The file
appears only when complete (written to a temporary name, then renamed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..palette import hex_to_rgb, object_color
from ..utils import atomic_path

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence

    from ..tracks import SkeletonTracks

log = logging.getLogger(__name__)

__all__ = ["render_overlay_frame", "write_overlay", "write_overlay_from_run"]


def render_overlay_frame(
    image: np.ndarray,
    labels: np.ndarray,
    colors: dict[int, str],
    *,
    skeletons: dict[int, np.ndarray] | None = None,
    names: dict[int, str] | None = None,
    alpha: float = 0.45,
    scale: float = 1.0,
) -> np.ndarray:
    """Draw one overlay frame: (H', W', 3) uint8.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) frame.
    labels : (H, W) label frame.
    colors : object id -> "#rrggbb".
    skeletons : object id -> (N, 2) centerline (x, y), head first (NaN rows skipped).
    names : object id -> text drawn next to the head (or the centroid).
    alpha : mask opacity.
    scale : output scale factor (the masks and lines are drawn after scaling).
    """
    from PIL import Image, ImageDraw

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    out = img.astype(np.float32)
    for obj, col in colors.items():
        m = labels == obj
        if m.any():
            out[m] = (1 - alpha) * out[m] + alpha * np.array(hex_to_rgb(col), np.float32)
    pil = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if scale != 1.0:
        size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
        pil = pil.resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(pil)
    r = max(2.0, 2.5 * scale)
    for obj, col in colors.items():
        fill = hex_to_rgb(col)
        anchor = None
        pts = None if skeletons is None else skeletons.get(obj)
        if pts is not None:
            pts = np.asarray(pts, float)
            pts = pts[np.isfinite(pts).all(axis=1)] * scale
            if len(pts) >= 2:
                draw.line([tuple(p) for p in pts], fill=fill, width=max(1, round(scale)))
                hx, hy = pts[0]
                draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=(255, 255, 255), outline=fill)
                anchor = (hx + r + 1, hy - r - 1)
        if anchor is None:
            ys, xs = np.nonzero(labels == obj)
            if len(xs):
                anchor = (xs.mean() * scale, ys.mean() * scale)
        if anchor is not None and names:
            draw.text(anchor, names.get(obj, str(obj)), fill=fill)
    return np.asarray(pil)


def write_overlay(
    video,
    labels: np.ndarray,
    path: str | os.PathLike,
    colors: dict[int, str],
    *,
    tracks: SkeletonTracks | None = None,
    names: dict[int, str] | None = None,
    fps: float | None = None,
    start: int | None = None,
    stop: int | None = None,
    stride: int = 1,
    scale: float = 1.0,
    alpha: float = 0.45,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Path:
    """Write an H.264 (yuv420p) overlay video, streaming frame by frame.

    ``start``/``stop`` are inclusive frame numbers; every ``stride``-th frame is drawn;
    the output frame rate is ``fps / stride`` so that the video plays at real speed.
    Returns the written path. A cancel (``cancel()`` returning True) or an error leaves
    no file behind.
    """
    import imageio_ffmpeg

    n = len(labels)
    a = 0 if start is None else int(start)
    b = n - 1 if stop is None else int(stop)
    if not (0 <= a <= b < n) or stride < 1 or scale <= 0:
        raise ValueError(f"bad range {a}:{b} (video has {n} frames), stride or scale")
    frames: Sequence[int] = range(a, b + 1, stride)
    fps = float(fps or getattr(video, "fps", None) or 25.0) / stride
    h, w = labels.shape[1:3]
    out_w, out_h = max(2, round(w * scale)), max(2, round(h * scale))
    out_w, out_h = out_w + out_w % 2, out_h + out_h % 2  # yuv420p needs even sizes
    col_of = {}
    if tracks is not None:
        col_of = {int(o): j for j, o in enumerate(tracks.object_ids)}
    path = Path(path)
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (out_w, out_h),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            quality=None,
            output_params=["-crf", "18", "-preset", "veryfast"],
        )
        writer.send(None)
        try:
            for i, f in enumerate(frames):
                if cancel is not None and cancel():
                    raise KeyboardInterrupt("overlay export cancelled")
                sk = None
                if tracks is not None:
                    rows = np.flatnonzero(tracks.frames == f)
                    if len(rows):
                        sk = {o: tracks.points[rows[0], j] for o, j in col_of.items()}
                img = render_overlay_frame(
                    np.asarray(video[f]),
                    np.asarray(labels[f]),
                    colors,
                    skeletons=sk,
                    names=names,
                    alpha=alpha,
                    scale=scale,
                )
                canvas = np.zeros((out_h, out_w, 3), np.uint8)
                canvas[: img.shape[0], : img.shape[1]] = img[:out_h, :out_w]
                writer.send(np.ascontiguousarray(canvas))
                if progress is not None:
                    progress(i + 1, len(frames))
        finally:
            writer.close()
    log.info("overlay video written to %s (%d frames)", path, len(frames))
    return path


def write_overlay_from_run(
    run_dir: str | os.PathLike,
    path: str | os.PathLike,
    *,
    start: int | None = None,
    stop: int | None = None,
    stride: int = 1,
    scale: float = 1.0,
    session: dict[str, Any] | None = None,
    moved_video: str | os.PathLike | None = None,
) -> Path:
    """Write the overlay video of a run folder (its video, masks and skeletons).

    Parameters
    ----------
    run_dir : the run folder.
    path : the ``.mp4`` to write.
    start, stop : inclusive frame range (default: all frames).
    stride : draw every ``stride``-th frame.
    scale : output scale factor.
    session : the folder's ``session.json`` as :func:`.run_dir.check_run` returned it
        (read and checked here when None).
    moved_video : the video's path where it has moved since the run (default: found from
        ``session.json``).

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    RunDirError
        ``session.json`` or ``masks.tif`` is missing or damaged, or the video at the
        saved path is not the session's.
    """
    from ..video import open_video
    from .run_dir import check_run, check_run_video, load_run_tracks, read_run_masks

    doc = check_run(run_dir) if session is None else session
    # the video first: a moved or replaced video is said at once, before the masks are
    # read and skeletonized (minutes on a long video)
    video_path = check_run_video(run_dir, doc, moved_video)
    labels = read_run_masks(run_dir, doc)
    tracks = load_run_tracks(run_dir)
    objs = doc.get("objects", [])
    colors = {int(o["id"]): o.get("color") or object_color(int(o["id"])) for o in objs}
    names = {int(o["id"]): o.get("name", str(o["id"])) for o in objs}
    video = open_video(video_path)
    try:
        return write_overlay(
            video,
            labels,
            path,
            colors,
            tracks=tracks,
            names=names,
            fps=doc.get("fps"),
            start=start,
            stop=stop,
            stride=stride,
            scale=scale,
        )
    finally:
        close = getattr(video, "close", None)
        if close is not None:
            close()
