"""Propagation in a worker, the layers filling as it goes, and Cancel.

A mixin of :class:`~napari_sam2_worms.napari._widget.TrackerWidget` (it uses the
widget's ``viewer``, ``session``, ``propagate_panel``, ``running``, ``run_work``,
``refresh_labels``, ``current_frame`` and ``_sync_prompts``). The main-thread handler is
cheap and throttled (progress every :data:`PROGRESS_EVERY` s, masks every
:data:`LABELS_EVERY` s, the frame on screen every :data:`CURRENT_FRAME_EVERY` s), so the
viewer stays responsive however fast frames come.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from napari.utils.notifications import show_info

from . import _style

#: Main-thread refresh intervals while a propagation runs (seconds): the progress bar, and
#: the masks of the frames done (the frame on screen sooner).
PROGRESS_EVERY = 0.1
LABELS_EVERY = 0.5
CURRENT_FRAME_EVERY = 0.15

MakeSteps = Callable[[threading.Event], Iterator[Any]]


class Propagation:
    """The propagation half of the tracker widget."""

    running = False

    def propagate(self: Any, direction: str | None = None, start=None, stop=None) -> None:
        """Propagate (forward, backward, both or range) in a worker; layers fill as it goes.

        ``direction`` defaults to the panel's; ``"range"`` runs the panel's range.
        """
        s = self._require_session()
        if s is None or self.running:
            return
        if direction is None or direction == "range":
            # only a range takes the panel's two frames; other directions keep the
            # caller's start and stop
            chosen, first, last = self.propagate_panel.selection(direction)
            if first is not None:
                start, stop = first, last
            direction = chosen
        self._run_steps(lambda cancel: s.propagate(direction, start, stop, cancel=cancel))

    def repropagate(self: Any, direction: str | None = None) -> None:
        """Re-run tracking from the current frame after a correction."""
        s = self._require_session()
        if s is None or self.running:
            return
        direction = self.propagate_panel.repropagate_direction(direction)
        frame = self.current_frame()
        self._run_steps(lambda cancel: s.repropagate_from(frame, direction, cancel=cancel))

    def _run_steps(self: Any, make_gen: MakeSteps) -> None:
        """Run a propagation generator in a worker (see the module docstring)."""
        panel = self.propagate_panel
        self._cancel = cancel = threading.Event()
        self.running = True
        panel.running(True)
        _style.set_stale(self.viewer, True)
        pending: set[int] = set()
        last: dict[str, Any] = {"ui": 0.0, "labels": time.monotonic(), "step": None}

        def work():
            from ..engine.session_io import autosave

            try:
                yield from make_gen(cancel)
            finally:
                if self.session is not None:  # a crash now loses nothing already tracked
                    autosave(self.session)

        def on_step(step):
            pending.add(step.frame)
            last["step"] = step
            now = time.monotonic()
            if now - last["ui"] >= PROGRESS_EVERY:
                if not cancel.is_set():
                    panel.show_progress(step.done, step.total)
                last["ui"] = now
            due = now - last["labels"] >= LABELS_EVERY
            here = step.frame == self.current_frame()
            if due or (here and now - last["labels"] >= CURRENT_FRAME_EVERY):
                self.refresh_labels(pending, skeletons=False)
                pending.clear()
                last["labels"] = time.monotonic()

        def finish():
            self.running = False
            step = last["step"]
            panel.running(False)
            if step is not None:
                panel.show_progress(step.done, step.total)
            else:
                panel.show_progress(0, 1)
            # every layer consistent with the session, also after an error or a cancel
            self.refresh_labels()
            if cancel.is_set():
                show_info("Propagation cancelled; the frames done so far are kept.")
            self._sync_prompts()  # clicks made while it ran

        self.run_work(work, on_yield=on_step, on_finish=finish)

    def cancel(self: Any) -> None:
        """Stop the propagation after the frame in flight ("Cancelling…" until it has)."""
        if self.running:
            self._cancel.set()
            self.propagate_panel.cancelling()
