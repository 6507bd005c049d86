"""Lazy reader for video containers (mp4, avi, mov, mkv...) through PyAV.

At open the stream is demuxed once (no decoding) to build a frame index from packet
timestamps (pts, else dts). A frame is read by seeking to the keyframe at or before it
and decoding forward to the frame whose timestamp matches; a read just ahead of the
previous one keeps decoding without seeking, so sequential playback is fast.
"""

from __future__ import annotations

import bisect
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ._base import LazyVideo, VideoError

log = logging.getLogger(__name__)

#: a grey video stored as YUV/RGB: channels differ by at most this on the probed frames
GREY_TOLERANCE = 2
_GREY_PIX_FMTS = {"gray", "gray8", "gray16le", "gray16be", "gray10le", "gray12le"}


def _open_container(path: Path) -> Any:
    import av

    try:
        return av.open(str(path), mode="r")
    except FileNotFoundError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(
            f"{path}: cannot be read as a video ({exc}). Check that the file is a complete "
            "video (mp4, avi, mov, mkv) or convert it with ffmpeg."
        ) from exc


class ContainerVideo(LazyVideo):
    """A video file decoded on demand with PyAV (exact random access).

    Parameters
    ----------
    path : video file.
    grey : ``True``/``False`` forces grey ``(T, H, W)`` or colour ``(T, H, W, 3)``
        output; ``None`` detects grey video stored as YUV/RGB on the first frames.
    max_ahead : a read at most this many frames after the last decoded one decodes
        forward instead of seeking.
    **cache : ``cache_frames``, ``cache_bytes`` of :class:`LazyVideo`.
    """

    def __init__(
        self, path: str | Path, grey: bool | None = None, max_ahead: int = 64, **cache: Any
    ) -> None:
        import av

        path = Path(path)
        self._container = _open_container(path)
        try:
            if not self._container.streams.video:
                raise VideoError(f"{path}: the file has no video stream; open a video file.")
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            self._stream = stream
            self._build_index(path)
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            cc = stream.codec_context
            h, w = int(cc.height), int(cc.width)
            self._gen: Any = None
            self._seek_ok = True
            self._last: int | None = None  # index of the last frame the generator gave
            self._max_ahead = max(int(max_ahead), 1)
            self._format = "rgb24"
            super().__init__(path, (len(self._pts), h, w, 3), np.uint8, fps, **cache)
            first = self._probe_first(path)
            h, w = first.shape[:2]
            is_grey = self._detect_grey(grey)
            self._format = "gray" if is_grey else "rgb24"
            self._shape = (len(self._pts), h, w) if is_grey else (len(self._pts), h, w, 3)
            self._cache.clear()
            self._cache_nbytes = 0
            self._check_tail(path)
        except av.error.FFmpegError as exc:
            self._container.close()
            raise VideoError(
                f"{path}: cannot be decoded ({exc}); the file may be corrupt."
            ) from exc
        except BaseException:
            self._container.close()
            raise

    # -- index ----------------------------------------------------------------------
    def _build_index(self, path: Path) -> None:
        import av

        stream = self._stream
        stamps: list[int] = []
        keys: list[int] = []
        truncated = False
        missing = False
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    missing = True
                    ts = len(stamps)
                stamps.append(int(ts))
                if packet.is_keyframe:
                    keys.append(len(stamps) - 1)
        except av.error.FFmpegError as exc:
            truncated = True
            log.warning("%s: demuxing stopped early (%s); the file may be truncated", path, exc)
        if not stamps:
            raise VideoError(f"{path}: no video frames could be read; the file may be corrupt.")
        order = sorted(stamps)
        # packets without timestamps, or duplicated ones: count frames instead
        self._counted = missing or len(set(order)) != len(order)
        if self._counted:
            log.warning("%s: packets lack unique timestamps; frames are read by counting", path)
            self._pts = list(range(len(stamps)))
            self._keys = [0]
        else:
            self._pts = order
            key_pts = sorted(stamps[k] for k in keys) or [order[0]]
            pos = {p: i for i, p in enumerate(order)}
            self._keys = sorted({pos[p] for p in key_pts} | {0})
        self._pts_index = {p: i for i, p in enumerate(self._pts)}
        self._truncated = truncated or self._shorter_than_header(len(self._pts), path)

    def _shorter_than_header(self, n: int, path: Path) -> bool:
        """Tell (with a warning) whether the header announces clearly more frames than found."""
        stream = self._stream
        expected = int(stream.frames or 0)
        if not expected and stream.duration and stream.time_base and stream.average_rate:
            expected = int(float(stream.duration * stream.time_base * stream.average_rate))
        if not expected and self._container.duration and stream.average_rate:
            expected = int(self._container.duration / 1e6 * float(stream.average_rate))
        if expected > n + max(2, 0.02 * expected):
            log.warning(
                "%s: the header announces %d frames but only %d were found", path, expected, n
            )
            return True
        return False

    def _probe_first(self, path: Path) -> np.ndarray:
        """Decode frame 0 and check that decoded timestamps match the index."""
        self._seek_start()
        frame = next(self._frames(), None)
        if frame is None:
            raise VideoError(f"{path}: no frame could be decoded; the file may be corrupt.")
        ts = self._ts(frame)
        if not self._counted and ts not in self._pts_index:
            log.warning("%s: decoded timestamps do not match packets; reading by counting", path)
            self._counted = True
            self._pts = list(range(len(self._pts)))
            self._pts_index = {p: i for i, p in enumerate(self._pts)}
            self._keys = [0]
        self._seek_start()
        return frame.to_ndarray(format="rgb24")

    def _detect_grey(self, grey: bool | None) -> bool:
        if grey is not None:
            return bool(grey)
        pix_fmt = self._stream.codec_context.pix_fmt or ""
        if pix_fmt in _GREY_PIX_FMTS:
            return True
        self._seek_start()
        for n, frame in enumerate(self._frames()):
            rgb = frame.to_ndarray(format="rgb24").astype(np.int16)
            if (
                np.abs(rgb[..., 0] - rgb[..., 1]).max() > GREY_TOLERANCE
                or np.abs(rgb[..., 0] - rgb[..., 2]).max() > GREY_TOLERANCE
            ):
                self._seek_start()
                return False
            if n >= 4:
                break
        self._seek_start()
        return True

    def _check_tail(self, path: Path) -> None:
        """Make sure the last indexed frame decodes; shorten a truncated video otherwise."""
        n = len(self._pts)
        try:
            self._decode_to(n - 1)
            if not self._truncated:
                return
            readable = n
        except (VideoError, Exception):
            readable = self._count_readable()
        if readable == 0:
            raise VideoError(f"{path}: no frame could be decoded; the file may be corrupt.")
        log.warning(
            "%s: the file looks truncated; reading its first %d frames (%d indexed)",
            path,
            readable,
            n,
        )
        self._pts = self._pts[:readable]
        self._pts_index = {p: i for i, p in enumerate(self._pts)}
        self._keys = [k for k in self._keys if k < readable] or [0]
        self._shape = (readable, *self._shape[1:])
        self._seek_start()

    def _count_readable(self) -> int:
        """Decode from the start (after a failure) and return the number of readable frames."""
        last = -1
        self._seek_start()
        try:
            for n, frame in enumerate(self._frames()):
                idx = n if self._counted else self._index_of(frame)
                if idx is not None:
                    last = max(last, idx)
        except Exception:
            pass
        self._seek_start()
        return last + 1

    # -- decoding -------------------------------------------------------------------
    @staticmethod
    def _ts(frame: Any) -> int | None:
        if frame.pts is not None:
            return int(frame.pts)
        dts = getattr(frame, "dts", None)
        return int(dts) if dts is not None else None

    def _index_of(self, frame: Any) -> int | None:
        """Return the frame index of a decoded frame by its timestamp (None: unknown)."""
        ts = self._ts(frame)
        return None if ts is None else self._pts_index.get(ts)

    def _frames(self) -> Any:
        if self._gen is None:
            self._gen = self._container.decode(self._stream)
        return self._gen

    def _seek_start(self) -> None:
        self._container.seek(0, backward=True, any_frame=False)
        self._gen = None
        self._last = -1

    def _seek_key(self, key: int) -> None:
        if key == 0 or self._counted or not self._seek_ok:
            self._seek_start()
            return
        self._container.seek(self._pts[key], stream=self._stream, backward=True, any_frame=False)
        self._gen = None
        self._last = None

    def _to_array(self, frame: Any) -> np.ndarray:
        return frame.to_ndarray(format=self._format)

    def _read_frame(self, index: int) -> np.ndarray:
        import av

        try:
            return self._decode_to(index)
        except av.error.FFmpegError as exc:
            self._gen = None
            self._last = None
            raise VideoError(
                f"{self.path}: frame {index} could not be decoded ({exc}); the file may be corrupt."
            ) from exc

    def _decode_to(self, index: int) -> np.ndarray:
        """Decode exactly frame ``index`` (caller holds the lock)."""
        if self._last is not None and self._last < index <= self._last + self._max_ahead:
            out = self._decode_forward(index, lowest=self._last + 1)
            if isinstance(out, np.ndarray):
                return out
        k = bisect.bisect_right(self._keys, index) - 1
        while True:
            key = self._keys[max(k, 0)]
            self._seek_key(key)
            out = self._decode_forward(index, lowest=key)
            if isinstance(out, np.ndarray):
                return out
            if key == 0:
                break
            if out == "end":  # the seek gave nothing usable: the file cannot seek
                log.warning(
                    "%s: seeking does not work in this file; decoding from the start", self.path
                )
                self._seek_ok = False
                k = 0
                continue
            k -= 1  # the seek landed after the target: start from an earlier keyframe
        raise VideoError(
            f"{self.path}: frame {index} could not be decoded; the file may be corrupt."
        )

    def _decode_forward(self, index: int, lowest: int) -> np.ndarray | str:
        """Decode until frame ``index``.

        Returns ``"past"`` when the decoder went past it, ``"end"`` when the stream ended
        before it.
        """
        counter = self._last if self._last is not None else -1
        for frame in self._frames():
            if self._counted:
                counter += 1
                idx: int | None = counter
            else:
                idx = self._index_of(frame)
            if idx is None:
                continue
            if idx > index:
                self._last = idx
                return "past"
            if idx < lowest:
                continue  # leading frames of an open GOP decoded from the wrong reference
            self._last = idx
            if idx == index:
                return self._to_array(frame)
            if idx > index - 4:
                self._remember(idx, self._to_array(frame))
        self._gen = None
        self._last = None
        return "end"

    def _close(self) -> None:
        self._gen = None
        self._container.close()
