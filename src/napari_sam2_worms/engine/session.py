"""The tracking session: objects, prompts, the label stack, scores, propagation, corrections.

A :class:`TrackingSession` sits between a user interface (the napari widget, the
``track`` command, a notebook) and a :class:`~napari_sam2_worms.backends.base.Backend`.
It owns everything the user made (objects, prompts, painted masks) and everything
computed (label stack, per-frame object scores), and it enforces the rules:

- **User edits win**: a (frame, object) the user prompted or painted is never
  overwritten by propagation.
- **Correction**: :meth:`TrackingSession.repropagate_from` re-runs from an edited
  frame only up to the next frame holding a user prompt (or a given range), never from
  frame 0.
- **Overlaps**: see ``docs/architecture.md``: user-edited objects first, then higher
  object score, then lower id.

Long work (:meth:`TrackingSession.propagate`) is a generator that yields a
:class:`PropagationStep` per frame and checks a cancel flag between frames.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..backends.base import Backend, BadPromptError, FrameResult, ObjectPrompts
from ..palette import object_color
from .compose import compose_frame
from .prompts import PromptStore
from .skeleton_feed import SkeletonFeed

if TYPE_CHECKING:
    from ..video import LazyVideo

log = logging.getLogger(__name__)

Direction = Literal["forward", "backward", "both"]
CancelFlag = Callable[[], bool] | threading.Event | None


class DuplicateNameError(ValueError):
    """An object name that another object of the session has already."""


@dataclass
class TrackedObject:
    """One animal: its label id, name and colour."""

    id: int
    name: str
    color: str


@dataclass
class PropagationStep:
    """Progress of a propagation: the frame just written and the counts so far."""

    frame: int
    done: int
    total: int
    objects: list[int] = field(default_factory=list)


def _cancelled(flag: CancelFlag) -> bool:
    if flag is None:
        return False
    if isinstance(flag, threading.Event):
        return flag.is_set()
    return bool(flag())


class TrackingSession:
    """A typed tracking session over a lazy video and a backend.

    Parameters
    ----------
    video : the lazy video (``shape`` (T, H, W) or (T, H, W, 3)).
    backend : a :class:`~napari_sam2_worms.backends.base.Backend`; ``open`` is called here.
    fps : frames per second (defaults to ``video.fps`` or 1).
    pixel_size : micrometres per pixel, when known.
    """

    def __init__(
        self,
        video: LazyVideo,
        backend: Backend,
        *,
        fps: float | None = None,
        pixel_size: float | None = None,
    ) -> None:
        self.video = video
        self.backend = backend
        shape = tuple(video.shape)
        self.n_frames, self.height, self.width = int(shape[0]), int(shape[1]), int(shape[2])
        self.fps = float(fps or getattr(video, "fps", None) or 1.0)
        self.pixel_size = pixel_size
        self.objects: dict[int, TrackedObject] = {}
        self.prompts = PromptStore()
        self.labels = np.zeros((self.n_frames, self.height, self.width), np.uint8)
        self.scores: dict[int, np.ndarray] = {}
        self.flips: list[tuple[int, int, int]] = []  # (object, start, stop) head/tail flips
        self.settings: dict = {}
        # the video's fingerprint (session_io.frames_fingerprint), made once on first save
        self.video_fingerprint: dict | None = None
        self.stale = np.zeros(self.n_frames, bool)  # computed from prompts that changed since
        self._backend_dirty = False  # prompts not yet sent to the backend (after loading)
        self._lock = threading.RLock()
        # workers skeletonizing while tracking
        self.skeleton_feed = SkeletonFeed(self.labels.shape[1:], self.labels.dtype)
        backend.open(video)

    @property
    def skeleton_workers(self) -> int:
        """Worker processes that skeletonize frames while a forward run tracks them (0 = off).

        :meth:`skeletons` then reuses their results (same tracks, sooner).

        Setting it starts the processes at once, so they are up (they take about a
        second to start) by the time the user has clicked and propagates.
        """
        return self.skeleton_feed.workers

    @skeleton_workers.setter
    def skeleton_workers(self, workers: int) -> None:
        self.skeleton_feed.workers = workers

    @property
    def skeleton_points(self) -> int:
        """Points per centerline the workers make (as :meth:`skeletons` will ask)."""
        return self.skeleton_feed.points

    @skeleton_points.setter
    def skeleton_points(self, n: int) -> None:
        self.skeleton_feed.points = int(n)

    # -- objects -----------------------------------------------------------------------
    def add_object(self, name: str | None = None, object_id: int | None = None) -> int:
        """Add an object and return its id (the next free id unless given)."""
        with self._lock:
            if object_id is None:
                object_id = max(self.objects, default=0) + 1
            if object_id < 1 or object_id > 65535:
                raise ValueError(f"object ids go from 1 to 65535, got {object_id}")
            if object_id in self.objects:
                raise ValueError(f"object {object_id} exists already")
            if name is not None and name.strip():
                name = self._free_name(name)
            else:  # the default name, made unique: worm3 may be taken by a rename
                name, n = f"worm{object_id}", 1
                while self._name_owner(name) is not None:
                    n += 1
                    name = f"worm{object_id}-{n}"
            if object_id > np.iinfo(self.labels.dtype).max:
                self.labels = self.labels.astype(np.uint16)
            self.objects[object_id] = TrackedObject(object_id, name, object_color(object_id))
            self.scores[object_id] = np.full(self.n_frames, np.nan, np.float32)
            return object_id

    def remove_object(self, object_id: int) -> None:
        """Remove an object everywhere: prompts, masks, scores, backend state."""
        with self._lock:
            self._require(object_id)
            self.prompts.drop(object_id=object_id)
            self.labels[self.labels == object_id] = 0
            del self.objects[object_id]
            del self.scores[object_id]
            self.flips = [f for f in self.flips if f[0] != object_id]
            self.backend.remove_object(object_id)
            if not self.objects:
                self.stale[:] = False

    def rename_object(self, object_id: int, name: str) -> None:
        """Rename an object; :class:`DuplicateNameError` when another has that name."""
        with self._lock:
            self._require(object_id)
            self.objects[object_id].name = self._free_name(name, object_id)

    def flip_head_tail(self, object_id: int, start: int, stop: int) -> tuple[int, int]:
        """Swap head and tail of ``object_id`` on frames ``start..stop`` in :meth:`skeletons`.

        The range is inclusive, in either order; returns the (first, last) frame flipped.
        """
        a, b = sorted((self._check_frame(start), self._check_frame(stop)))
        with self._lock:
            self._require(object_id)
            self.flips.append((int(object_id), a, b))
        return a, b

    def _name_owner(self, name: str, but: int | None = None) -> int | None:
        """Find the object (other than ``but``) called ``name``, ignoring case, or None."""
        key = name.strip().casefold()
        for oid, obj in self.objects.items():
            if oid != but and obj.name.strip().casefold() == key:
                return oid
        return None

    def _free_name(self, name: str, object_id: int | None = None) -> str:
        """``name`` stripped, if no other object has it (exports need distinct names)."""
        name = str(name).strip()
        if not name:
            raise ValueError("an object name cannot be empty")
        other = self._name_owner(name, but=object_id)
        if other is not None:
            raise DuplicateNameError(
                f"object {other} is already called {self.objects[other].name!r}; "
                "object names must differ (ignoring case): choose another name"
            )
        return name

    def swap_identities(self, a: int, b: int, start: int, stop: int | None = None):
        """Exchange the identities of objects ``a`` and ``b`` on frames ``start..stop``.

        ``stop`` defaults to the end. Masks, scores, prompts and flips are exchanged; the
        swapped masks on ``start`` become their prompts. See
        :func:`~napari_sam2_worms.engine.identity.swap_identities`.
        """
        from .identity import swap_identities

        return swap_identities(self, a, b, start, stop)

    def _require(self, object_id: int) -> None:
        if object_id not in self.objects:
            raise KeyError(f"there is no object {object_id}; add it first")

    def _check_frame(self, frame: int) -> int:
        frame = int(frame)
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"frame {frame} is outside the video (0..{self.n_frames - 1})")
        return frame

    # -- prompts -----------------------------------------------------------------------
    def user_frames(self, object_id: int | None = None) -> list[int]:
        """Sorted frames on which the user prompted or painted (one object, or any)."""
        return self.prompts.frames(object_id)

    def is_user_edited(self, frame: int, object_id: int) -> bool:
        """Tell whether the user gave ``object_id`` prompts or a painted mask on ``frame``."""
        return (frame, object_id) in self.prompts.keys()  # noqa: SIM118 (not a dict)

    def add_point(
        self, frame: int, object_id: int, x: float, y: float, positive: bool = True
    ) -> FrameResult:
        """Add a click for ``object_id`` on ``frame`` and recompute its mask there."""
        frame = self._check_frame(frame)
        self._require(object_id)
        if not (0 <= x <= self.width and 0 <= y <= self.height):
            raise BadPromptError(
                f"the point ({x:.1f}, {y:.1f}) is outside the {self.width}x{self.height} frame"
            )
        pts = [
            *self.prompts.points.get((frame, object_id), []),
            (float(x), float(y), bool(positive)),
        ]
        return self._apply_points(frame, object_id, pts)

    def set_points(
        self, frame: int, object_id: int, points: np.ndarray, positive: np.ndarray
    ) -> FrameResult:
        """Replace all clicks of ``object_id`` on ``frame`` (e.g. after a point was moved)."""
        frame = self._check_frame(frame)
        self._require(object_id)
        pts = [
            (float(x), float(y), bool(p))
            for (x, y), p in zip(np.reshape(points, (-1, 2)), positive)
        ]
        return self._apply_points(frame, object_id, pts)

    def remove_point(self, frame: int, object_id: int, index: int) -> FrameResult:
        """Remove the ``index``-th click of ``object_id`` on ``frame`` (undo a wrong click)."""
        pts = list(self.prompts.points.get((frame, object_id), []))
        if not 0 <= index < len(pts):
            raise IndexError(f"object {object_id} has {len(pts)} clicks on frame {frame}")
        del pts[index]
        return self._apply_points(frame, object_id, pts)

    def _apply_points(self, frame: int, object_id: int, pts: list) -> FrameResult:
        with self._lock:
            old_points = self.prompts.points.get((frame, object_id))
            old_mask = self.prompts.masks.pop((frame, object_id), None)
            if pts:
                self.prompts.points[(frame, object_id)] = pts
            else:
                self.prompts.points.pop((frame, object_id), None)
            try:
                return self._send(frame, object_id)
            except Exception:
                # keep the session as it was: the user's previous prompts stay
                if old_points is None:
                    self.prompts.points.pop((frame, object_id), None)
                else:
                    self.prompts.points[(frame, object_id)] = old_points
                if old_mask is not None:
                    self.prompts.masks[(frame, object_id)] = old_mask
                raise

    def set_box(
        self, frame: int, object_id: int, box: tuple[float, float, float, float] | None
    ) -> FrameResult:
        """Set (or with None remove) the box of ``object_id`` on ``frame``: (x0, y0, x1, y1)."""
        frame = self._check_frame(frame)
        self._require(object_id)
        with self._lock:
            old = self.prompts.boxes.get((frame, object_id))
            if box is None:
                self.prompts.boxes.pop((frame, object_id), None)
            else:
                x0, y0, x1, y1 = (float(v) for v in box)
                if x1 <= x0 or y1 <= y0:
                    raise BadPromptError("a box needs x1 > x0 and y1 > y0")
                self.prompts.boxes[(frame, object_id)] = (x0, y0, x1, y1)
            try:
                return self._send(frame, object_id)
            except Exception:
                if old is None:
                    self.prompts.boxes.pop((frame, object_id), None)
                else:
                    self.prompts.boxes[(frame, object_id)] = old
                raise

    def set_mask(self, frame: int, object_id: int, mask: np.ndarray) -> FrameResult:
        """Use a painted mask as the prompt of ``object_id`` on ``frame`` (replaces its clicks)."""
        frame = self._check_frame(frame)
        self._require(object_id)
        mask = np.asarray(mask, bool)
        if mask.shape != (self.height, self.width):
            raise BadPromptError(
                f"the painted mask is {mask.shape}, the frame is {(self.height, self.width)}"
            )
        if not mask.any():
            raise BadPromptError(
                f"the painted mask of object {object_id} on frame {frame} is empty; "
                "paint the animal, or clear the frame's prompts instead"
            )
        with self._lock:
            stores: tuple[tuple[str, dict[tuple[int, int], Any]], ...] = (
                ("p", self.prompts.points),
                ("b", self.prompts.boxes),
                ("m", self.prompts.masks),
            )
            saved = {s: d.pop((frame, object_id), None) for s, d in stores}
            self.prompts.masks[(frame, object_id)] = mask.copy()
            try:
                return self._send(frame, object_id)
            except Exception:
                for s, d in stores:
                    d.pop((frame, object_id), None)
                    if saved[s] is not None:
                        d[(frame, object_id)] = saved[s]
                raise

    def clear_prompts(self, frame: int, object_id: int | None = None) -> None:
        """Remove the prompts on ``frame`` (of one object, or all); computed masks stay."""
        frame = self._check_frame(frame)
        with self._lock:
            targets = (
                [object_id]
                if object_id is not None
                else [o for f, o in self.prompts.keys() if f == frame]  # noqa: SIM118
            )
            for obj in set(targets):
                self.prompts.drop(frame=frame, object_id=obj)
                self.backend.set_prompts(frame, obj, ObjectPrompts())

    def _send(self, frame: int, object_id: int) -> FrameResult:
        """Send one (frame, object)'s prompts to the backend and write its mask."""
        self._sync_backend()
        prompts = self.prompts.for_frame_object(frame, object_id)
        result = self.backend.set_prompts(frame, object_id, prompts)
        if prompts.mask is not None:
            # a painted mask is exactly what the user wants on that frame
            result.masks[object_id] = prompts.mask
            result.scores.setdefault(object_id, float("inf"))
        self._write(result, only={object_id})
        self._mark_stale(frame, object_id)
        return result

    def _mark_stale(self, frame: int, object_id: int) -> None:
        """After a prompt change on ``frame``: frames already tracked from it are stale.

        Those are the computed frames of this object between the previous and the next
        user-prompted frames (exclusive). Nothing is reset; :meth:`stale_window` tells
        the user interface what to re-propagate.
        """
        lo = self.correction_range(frame, "backward")[1]
        hi = self.correction_range(frame, "forward")[1]
        done = ~np.isnan(self.scores[object_id][lo : hi + 1])
        window = np.zeros(self.n_frames, bool)
        window[lo : hi + 1] = done
        window[frame] = False
        self.stale |= window

    def stale_window(self) -> tuple[int, int] | None:
        """(first, last) frame computed from prompts that changed since, or None."""
        idx = np.flatnonzero(self.stale)
        return (int(idx[0]), int(idx[-1])) if len(idx) else None

    def _sync_backend(self) -> None:
        """After loading a saved session: hand all stored prompts to the backend once."""
        if not self._backend_dirty:
            return
        self._backend_dirty = False
        for frame, obj in sorted(self.prompts.keys()):
            self.backend.set_prompts(frame, obj, self.prompts.for_frame_object(frame, obj))

    # -- writing results -----------------------------------------------------------------
    def _write(self, result: FrameResult, only: set[int] | None = None) -> None:
        """Compose ``result`` into the label stack, honouring user edits and the overlap rule.

        See :func:`~napari_sam2_worms.engine.compose.compose_frame`.
        """
        f = result.frame
        with self._lock:
            edited = {o for ff, o in self.prompts.keys() if ff == f}  # noqa: SIM118 (not a dict)
            new, written = compose_frame(self.labels[f], result, self.objects, edited, only)
            self.labels[f] = new
            for o in written:
                self.scores[o][f] = result.scores.get(o, np.nan)

    # -- propagation ---------------------------------------------------------------------
    def propagate(
        self,
        direction: Direction = "forward",
        start: int | None = None,
        stop: int | None = None,
        cancel: CancelFlag = None,
    ) -> Iterator[PropagationStep]:
        """Track every object over a frame range, writing the label stack as it goes.

        Parameters
        ----------
        direction : "forward", "backward" or "both".
        start : first frame. Defaults: forward and both start at the earliest prompted
            frame; backward starts at the latest prompted frame.
        stop : last frame (inclusive). Defaults to the video's end (forward) or 0
            (backward). For "both", ``start`` and ``stop`` bound the range on each side.
        cancel : a ``threading.Event`` or a callable returning True to stop; checked
            between frames. Frames done so far are kept.

        Yields
        ------
        PropagationStep after each frame is written.
        """
        prompted = self.user_frames()
        if not prompted:
            raise BadPromptError("no prompts yet: click on at least one animal first")
        runs = self._runs(direction, start, stop, prompted)
        total = sum(abs(b - a) + 1 for a, b, _ in runs)
        done = 0
        self._sync_backend()
        stream = self.skeleton_feed.start(self.labels, self.objects, runs)
        for a, b, reverse in runs:
            gen = self.backend.propagate(a, b, reverse=reverse)
            try:
                for result in gen:
                    if _cancelled(cancel):
                        log.info("propagation cancelled before frame %d", result.frame)
                        return
                    self._write(result)
                    self.stale[result.frame] = False
                    if stream is not None:
                        stream.feed(result.frame, self.labels[result.frame])
                    done += 1
                    yield PropagationStep(result.frame, done, total, sorted(result.masks))
                    if _cancelled(cancel):
                        log.info("propagation cancelled after frame %d", result.frame)
                        return
            finally:
                if isinstance(gen, Generator):  # backends' propagate is a generator
                    gen.close()

    def _runs(
        self, direction: Direction, start: int | None, stop: int | None, prompted: list[int]
    ) -> list[tuple[int, int, bool]]:
        last = self.n_frames - 1
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"direction must be forward, backward or both, not {direction!r}")
        if direction == "forward":
            a = self._check_frame(prompted[0] if start is None else start)
            b = self._check_frame(last if stop is None else stop)
            if b < a:
                raise ValueError(f"forward propagation needs start <= stop, got {a} > {b}")
            return [(a, b, False)]
        if direction == "backward":
            a = self._check_frame(prompted[-1] if start is None else start)
            b = self._check_frame(0 if stop is None else stop)
            if b > a:
                raise ValueError(f"backward propagation needs start >= stop, got {a} < {b}")
            return [(a, b, True)]
        lo = self._check_frame(0 if start is None else start)
        hi = self._check_frame(last if stop is None else stop)
        inside = [f for f in prompted if lo <= f <= hi]
        anchor = inside[0] if inside else lo
        runs = [(anchor, hi, False)]
        if anchor > lo:
            runs.append((anchor, lo, True))
        return runs

    def correction_range(
        self,
        frame: int,
        direction: Literal["forward", "backward"] = "forward",
        stop: int | None = None,
    ) -> tuple[int, int]:
        """Return the frames a correction on ``frame`` re-runs.

        From ``frame`` up to (not including) the next user-prompted frame in ``direction``,
        or the video's end, or ``stop``.
        """
        frame = self._check_frame(frame)
        if direction == "forward":
            later = [f for f in self.user_frames() if f > frame]
            end = later[0] - 1 if later else self.n_frames - 1
            if stop is not None:
                end = min(end, self._check_frame(stop))
            return frame, max(end, frame)
        if direction == "backward":
            earlier = [f for f in self.user_frames() if f < frame]
            end = earlier[-1] + 1 if earlier else 0
            if stop is not None:
                end = max(end, self._check_frame(stop))
            return frame, min(end, frame)
        raise ValueError("a correction runs forward or backward")

    def repropagate_from(
        self,
        frame: int,
        direction: Literal["forward", "backward", "both"] = "forward",
        stop: int | None = None,
        cancel: CancelFlag = None,
    ) -> Iterator[PropagationStep]:
        """Re-run tracking after a correction on ``frame`` (see :meth:`correction_range`)."""
        dirs = ["forward", "backward"] if direction == "both" else [direction]
        for d in dirs:
            a, b = self.correction_range(frame, d, stop if direction != "both" else None)  # type: ignore[arg-type]
            if a == b and d == "backward" and len(dirs) == 2:
                continue
            yield from self.propagate(d, start=a, stop=b, cancel=cancel)  # type: ignore[arg-type]
            if _cancelled(cancel):
                return

    # -- results -------------------------------------------------------------------------
    def score_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(object ids (K,), scores (T, K) float32, NaN where not computed)."""
        ids = np.array(sorted(self.objects), int)
        table = np.full((self.n_frames, len(ids)), np.nan, np.float32)
        for j, o in enumerate(ids):
            table[:, j] = self.scores[o]
        return ids, table

    def computed_frames(self) -> np.ndarray:
        """Frames where at least one object has a result (a score)."""
        ids, table = self.score_table()
        if len(ids) == 0:
            return np.zeros(0, int)
        return np.flatnonzero(~np.isnan(table).all(axis=1))

    def skeletons(self, n_points: int = 49, frames=None, progress=None, workers: int = 0):
        """Compute the skeleton tracks of all objects, with the user's head/tail flips applied.

        See :mod:`napari_sam2_worms.skeleton`. ``workers`` > 1 spreads objects over
        processes (same result).
        """
        from ..skeleton import flip_head_tail, skeletonize_labels

        cache = self.skeleton_feed.keep_results()
        ids = sorted(self.objects)
        tracks = skeletonize_labels(
            self.labels,
            object_ids=ids,
            n_points=n_points,
            fps=self.fps,
            pixel_size=self.pixel_size,
            names=[self.objects[o].name for o in ids],
            frames=frames,
            progress=progress,
            workers=workers,
            cache=cache or None,
        )
        for obj, a, b in self.flips:
            if obj in self.objects:
                flip_head_tail(tracks, obj, a, b)
        return tracks

    def close(self) -> None:
        """Stop the skeleton workers and close the backend."""
        self.skeleton_feed.close()
        self.backend.close()
