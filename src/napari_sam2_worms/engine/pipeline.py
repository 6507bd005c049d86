"""Headless building blocks shared by the command line and the widget.

:func:`write_run` writes what the ``track`` command leaves in its output folder;
:func:`track_run` tracks into it with autosaves (:class:`Autosaver`) and resume
(:class:`TrackPlan`). Backends are built by
:func:`~napari_sam2_worms.backends.factory.build_backend`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..backends.base import Backend
    from .session import PropagationStep

log = logging.getLogger(__name__)


def make_backend(
    name: str,
    *,
    model: str | None = None,
    checkpoint: str | None = None,
    device: str = "auto",
    download: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> Backend:
    """Build a backend: kept for scripts written against earlier releases.

    The same as :func:`..backends.factory.build_backend` with a
    :class:`..backends.factory.BackendSpec` of these values (``options`` are the backend
    class's keyword arguments), and its one fallback rule.

    Returns
    -------
    Backend
        ``"sam2"``, ``"classic"``, or for ``"auto"`` SAM 2 when a checkpoint can be had,
        else the classic backend with a logged warning.
    """
    from ..backends.factory import DEFAULT_MODEL, BackendSpec, build_backend

    spec = BackendSpec(
        name=name,  # type: ignore[arg-type]  # checked by BackendSpec
        model=model or DEFAULT_MODEL,
        checkpoint=checkpoint,
        device=device,
        download=download,
        options=options,
    )
    return build_backend(spec, progress=progress)


def write_run(
    session, out_dir: str | Path, *, n_points: int = 49, progress=None, workers: int = 0
) -> Path:
    """Write a run folder: the saved session, then its skeletons.

    The session's files (masks.tif, scores.npy, session.json...) first, then
    ``skeletons.csv`` (``workers`` processes skeletonize) recorded in ``session.json`` as
    derived from that same generation. Returns the folder.

    The session is saved first, so a failure or interrupt while skeletonizing keeps it;
    the folder then has no ``skeletons.csv`` (``export`` skeletonizes the masks).
    """
    from ..run_files import SKELETONS
    from ..skeleton import write_csv
    from .run_lock import hold
    from .session_io import add_derived, save_session

    out = Path(out_dir)
    with hold(out, "napari-sam2-worms track", timeout=30.0):
        save_session(session, out, purpose="napari-sam2-worms track")
        generation = _generation(out)
        tracks = session.skeletons(n_points=n_points, progress=progress, workers=workers)
        add_derived(out, {SKELETONS: lambda p: write_csv(tracks, p)}, generation)
    return out


def _generation(folder: Path) -> int:
    from .session_file import read_session_json

    return int(read_session_json(folder)["generation"])


# -- tracking into a run folder, with autosaves and resume ---------------------------------
@dataclass
class TrackPlan:
    """The runs of a ``track`` ((start, stop, reverse) each) and the frames each has done.

    Kept in ``session.settings["track"]`` at every autosave, so that ``--resume`` knows
    where to go on.
    """

    runs: list[tuple[int, int, bool]]
    done: list[int]
    frames: str | None = None  # the --frames text the plan was made for

    @property
    def total(self) -> int:
        """Return the number of frames of all the runs."""
        return sum(abs(b - a) + 1 for a, b, _ in self.runs)

    @property
    def complete(self) -> bool:
        """Tell whether every run is done."""
        return all(d >= abs(b - a) + 1 for (a, b, _), d in zip(self.runs, self.done))

    def to_json(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data (read back by :meth:`from_json`)."""
        return {
            "runs": [[a, b, r] for a, b, r in self.runs],
            "done": list(self.done),
            "frames": self.frames,
            "complete": self.complete,
        }

    @classmethod
    def from_json(cls, doc: Any) -> TrackPlan:
        """Read a plan back; raises ValueError for a malformed one."""
        try:
            runs = [(int(a), int(b), bool(r)) for a, b, r in doc["runs"]]
            done = [int(d) for d in doc["done"]]
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"the saved tracking progress is malformed ({exc})") from exc
        if len(done) != len(runs) or any(d < 0 for d in done):
            raise ValueError("the saved tracking progress is malformed (done per run)")
        return cls(runs, done, doc.get("frames"))

    @classmethod
    def new(
        cls, session, start: int | None, stop: int | None, frames: str | None = None
    ) -> TrackPlan:
        """Plan the runs that track ``session`` from its prompted frames, none done yet."""
        runs = session._runs("both", start, stop, session.user_frames())
        return cls(runs, [0] * len(runs), frames)


class Autosaver:
    """Saves a session into its run folder while it tracks.

    Every ``every`` seconds (None: never by time), spending at most about 1/20 of the
    time saving (the interval grows to 20 times the last save's duration), and after
    every ``frames`` frames when given (exactly: no growth). A failed autosave (full
    disk...) is logged once and tracking goes on.
    """

    def __init__(
        self,
        session,
        folder: str | Path,
        every: float | None = 60.0,
        frames: int | None = None,
    ) -> None:
        self.session = session
        self.folder = Path(folder)
        self.every = every
        self.frames = frames
        self.cost = 0.0
        self.last = time.monotonic()
        self.since = 0  # frames since the last save
        self.failed = False
        self.saves = 0
        self.error: OSError | None = None  # the last failed save's error
        self.saved_done = 0  # frames tracked as of the last save that succeeded

    def save(self, plan: TrackPlan) -> bool:
        """Save the session with ``plan`` now; tell whether it was saved (see the class)."""
        from .session_io import save_session

        self.session.settings["track"] = plan.to_json()
        t0 = time.monotonic()
        self.since = 0
        try:
            save_session(self.session, self.folder, purpose="napari-sam2-worms track")
        except OSError as exc:
            if not self.failed:
                log.warning("autosave into %s failed (%s); tracking goes on", self.folder, exc)
            self.failed = True
            self.error = exc
            return False
        finally:
            self.last = time.monotonic()
            self.cost = self.last - t0
        self.saves += 1
        self.saved_done = sum(plan.done)
        return True

    def maybe_save(self, plan: TrackPlan) -> bool:
        """After a frame: save when it is time (see the class docstring)."""
        self.since += 1
        if self.frames is not None and self.since >= self.frames:
            return self.save(plan)
        if self.every is not None and time.monotonic() - self.last >= max(
            self.every, 20.0 * self.cost
        ):
            return self.save(plan)
        return False


def _seed_from_labels(session, frame: int) -> None:
    """Give the backend ``frame``'s saved masks as mask prompts, before a resume goes on.

    The tracker's memory of the run before the crash is gone; the session's own prompts
    are not changed.
    """
    from ..backends.base import ObjectPrompts

    session._sync_backend()
    edited = {o for f, o in session.prompts.keys() if f == frame}  # noqa: SIM118 (not a dict)
    for obj in sorted(session.objects):
        m = session.labels[frame] == obj
        if obj not in edited and m.any():
            session.backend.set_prompts(frame, obj, ObjectPrompts(mask=m))


def track_run(
    session,
    plan: TrackPlan,
    saver: Autosaver | None = None,
    cancel=None,
) -> Iterator[PropagationStep]:
    """Track the runs of ``plan`` not done yet, autosaving with ``saver``.

    A run interrupted at frame k goes on from k (its last saved frame, seeded with the
    saved masks: :func:`_seed_from_labels`); frames before are kept as saved. Yields a
    :class:`~.session.PropagationStep` per frame with counts over the whole plan.
    ``plan.done`` is updated as frames are written.
    """
    from .faults import fault_point
    from .session import PropagationStep, _cancelled

    total = plan.total
    for i, (a, b, reverse) in enumerate(plan.runs):
        length = abs(b - a) + 1
        if plan.done[i] >= length:
            continue
        step = -1 if reverse else 1
        first = a
        if plan.done[i] > 0:
            first = a + (plan.done[i] - 1) * step
            _seed_from_labels(session, first)
            plan.done[i] -= 1
            log.info("run %d: going on from frame %d", i, first)
        direction = "backward" if reverse else "forward"
        for st in session.propagate(direction, start=first, stop=b, cancel=cancel):
            plan.done[i] += 1
            yield PropagationStep(st.frame, sum(plan.done), total, st.objects)
            fault_point("track-frame")
            if saver is not None:
                saver.maybe_save(plan)
        if _cancelled(cancel):
            return
