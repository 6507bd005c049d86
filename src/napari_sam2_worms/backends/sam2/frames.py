"""Lazy, cached, on-device frames for SAM 2 (replaces sam2's JPEG folder / full preload).

``SAM2VideoPredictor.init_state`` loads every frame of a video as a float tensor
(``T x 3 x 1024 x 1024`` float32 = 12 MB per frame) after the user dumped the video to
JPEG files. :class:`LazySam2Frames` is what we put in ``inference_state["images"]``
instead: sam2 1.1.0 only ever does ``len(images)`` (in ``init_state``, which we do not
call) and ``images[frame_idx].to(device).float()`` (in ``_get_image_feature``), so an
object with ``__len__`` and ``__getitem__(int) -> (3, S, S) float tensor`` is enough.
Each frame is decoded on demand, resized and normalised (on the GPU when the model is
there) and kept in a small LRU cache; an optional read-ahead thread decodes the next
frames (raw uint8 only) while the model works on the current one.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: sam2's ImageNet normalisation (sam2.utils.misc.load_video_frames).
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)


def to_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, 3) uint8."""
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and float(np.nanmax(a)) <= 1.0:
            a = np.nan_to_num(a) * 255.0
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"a video frame must be (H, W) or (H, W, C), got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[..., :3]
    elif a.shape[2] != 3:
        raise ValueError(f"a video frame needs 1, 3 or 4 channels, got {a.shape[2]}")
    return a


class _PinnedStaging:
    """A few reused page-locked buffers for host -> GPU frame copies.

    A copy from pageable memory makes the host wait for the GPU's queued work, and
    ``Tensor.pin_memory()`` per frame cost ~4 ms of host time per frame (measured on an
    H200 host, ``benchmarks/sam2_bench.py --cprofile``). Buffers are used in turn; a
    buffer is refilled only after its last copy is done (an event, normally long
    passed: it was queued ``len(slots)`` frames ago).
    """

    def __init__(self, n_slots: int = 3) -> None:
        self._slots: list[list[Any]] = [[None, None] for _ in range(n_slots)]  # buffer, event
        self._next = 0
        self._lock = threading.Lock()  # a click and a propagation may both read frames

    def to_device(self, rgb: np.ndarray, device: torch.device) -> torch.Tensor:
        """``rgb`` (uint8) copied to ``device`` without waiting for the GPU."""
        import torch

        with self._lock:
            slot = self._slots[self._next]
            self._next = (self._next + 1) % len(self._slots)
            buf, event = slot
            if buf is None or tuple(buf.shape) != rgb.shape or buf.dtype != torch.uint8:
                buf = slot[0] = torch.empty(rgb.shape, dtype=torch.uint8, pin_memory=True)
            elif event is not None:
                event.synchronize()
            np.copyto(buf.numpy(), rgb, casting="no")
            out = buf.to(device, non_blocking=True)
            slot[1] = torch.cuda.Event()
            slot[1].record(torch.cuda.current_stream(device))
            return out


class LazySam2Frames:
    """``inference_state["images"]`` for sam2: frames made on demand, bounded memory.

    Parameters
    ----------
    video : lazy video, ``video[i]`` -> (H, W) or (H, W, 3) uint8 frame; ``len`` or
        ``shape[0]`` gives the number of frames.
    image_size : SAM 2's square input size (``predictor.image_size``).
    device : where the tensors go (the model's device).
    cache_frames : number of prepared frames kept (LRU). Each costs 12 MB at 1024 px.
    read_ahead : number of frames decoded ahead in a background thread (0 = off).
    """

    def __init__(
        self,
        video: Any,
        image_size: int,
        device: torch.device | str = "cpu",
        *,
        cache_frames: int = 4,
        read_ahead: int = 0,
    ) -> None:
        import torch

        self.video = video
        self.n_frames = int(len(video) if hasattr(video, "__len__") else video.shape[0])
        self.image_size = int(image_size)
        self.device = torch.device(device)
        self.cache_frames = max(1, int(cache_frames))
        self.read_ahead = max(0, int(read_ahead))
        self._mean = torch.tensor(IMG_MEAN, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(IMG_STD, device=self.device).view(3, 1, 1)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._raw: dict[int, np.ndarray] = {}  # read-ahead results (uint8)
        self._video_lock = threading.Lock()  # one reader of the video at a time
        self._raw_lock = threading.Lock()
        self._wanted: list[int] = []
        self._staging = _PinnedStaging() if self.device.type == "cuda" else None
        self._wake = threading.Condition(self._raw_lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._direction = 1
        self.decoded = 0  # frames read from the video (for tests and benchmarks)

    # -- the two things sam2 uses -------------------------------------------------------
    def __len__(self) -> int:
        """Count the frames."""
        return self.n_frames

    def __getitem__(self, idx: int) -> torch.Tensor:
        """Return the (3, S, S) float32 normalised frame ``idx`` on :attr:`device`."""
        idx = int(idx)
        if idx < 0:
            idx += self.n_frames
        if not 0 <= idx < self.n_frames:
            raise IndexError(f"frame {idx} is outside the video (0..{self.n_frames - 1})")
        hit = self._cache.get(idx)
        if hit is not None:
            self._cache.move_to_end(idx)
            return hit
        tensor = self._prepare(self._read(idx))
        self._cache[idx] = tensor
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)
        self._schedule(idx)
        return tensor

    # -- helpers --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(T, 3, S, S), like sam2's preloaded tensor (nothing is allocated)."""
        return (self.n_frames, 3, self.image_size, self.image_size)

    def set_direction(self, reverse: bool) -> None:
        """Tell the read-ahead which way propagation goes."""
        self._direction = -1 if reverse else 1

    def _read(self, idx: int) -> np.ndarray:
        with self._raw_lock:
            raw = self._raw.pop(idx, None)
        if raw is not None:
            return raw
        with self._video_lock:
            frame = self.video[idx]
            self.decoded += 1
        return to_rgb_uint8(frame)

    def _prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> resized, normalised (3, S, S) float32 on the device."""
        import torch
        import torch.nn.functional as F

        if self._staging is not None:  # from pageable memory the copy may wait for the GPU
            t = self._staging.to_device(rgb, self.device)
        else:
            t = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        t = t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        s = self.image_size
        if t.shape[-2:] != (s, s):
            # bicubic + antialias follows PIL's resize, which sam2's own loader uses
            t = F.interpolate(
                t, size=(s, s), mode="bicubic", align_corners=False, antialias=True
            ).clamp_(0.0, 1.0)
        t = (t[0] - self._mean) / self._std
        return t.contiguous()

    def _schedule(self, idx: int) -> None:
        """Queue the next ``read_ahead`` frames (in the current direction) for decoding."""
        if not self.read_ahead or self._closed:
            return
        step = self._direction
        wanted = [
            j
            for j in range(idx + step, idx + step * (self.read_ahead + 1), step)
            if 0 <= j < self.n_frames and j not in self._cache
        ]
        with self._wake:
            # drop stale read-ahead frames
            for j in [j for j in self._raw if j not in wanted]:
                del self._raw[j]
            self._wanted = [j for j in wanted if j not in self._raw]
            self._wake.notify()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._worker, name="sam2-read-ahead", daemon=True
            )
            self._thread.start()

    def _worker(self) -> None:
        while True:
            with self._wake:
                while not self._wanted and not self._closed:
                    if not self._wake.wait(timeout=5.0):
                        self._thread = None
                        return  # idle: end; restarted on demand
                if self._closed:
                    return
                j = self._wanted.pop(0)
            try:
                with self._video_lock:
                    frame = self.video[j]
                    self.decoded += 1
                rgb = to_rgb_uint8(frame)
            except Exception:
                log.debug("read-ahead of frame %d failed", j, exc_info=True)
                continue
            with self._wake:
                if len(self._raw) < self.read_ahead + 1:
                    self._raw[j] = rgb

    def clear(self) -> None:
        """Drop every cached and read-ahead frame."""
        self._cache.clear()
        with self._raw_lock:
            self._raw.clear()
            self._wanted = []

    def close(self) -> None:
        """Stop the read-ahead thread and free the cache."""
        self._closed = True
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.clear()
