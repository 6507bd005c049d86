"""The dock widget: a thin container wiring the panels, the session and the layers.

Long work (loading a model, SAM 2 clicks, propagation, skeletons of all frames) runs in
``napari.qt.threading.thread_worker``s; layers are only touched in main-thread handlers.
Set ``TrackerWidget.synchronous = True`` (or pass ``synchronous=True``) to run the
generators inline (scripts); the GUI tests use the real workers.

What the skeleton layers show is :meth:`TrackingSession.skeletons` (the tracks every
export writes: oriented over time, with the user's flips), computed once in a worker after
each change of the masks and cached; a flip is applied to the cached tracks at once.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from ..engine.session import TrackingSession
from . import _layers, _style
from ._display import SkeletonDisplay
from ._model_panel import ModelPanel, sam2_available
from ._objects_panel import ObjectsPanel
from ._painting import Painting
from ._propagate_panel import PropagatePanel
from ._review_panel import ReviewPanel
from ._workers import run_work, start_skeleton_workers

log = logging.getLogger(__name__)

PROMPTS, MASKS = "prompts", "masks"
SKELETONS, HEADS, TAILS = _style.SKELETONS, _style.HEADS, _style.TAILS

#: Main-thread refresh intervals while a propagation runs (seconds): the progress bar, and
#: the masks of the frames done (the frame on screen sooner).
PROGRESS_EVERY = 0.1
LABELS_EVERY = 0.5
CURRENT_FRAME_EVERY = 0.15

#: viewer id -> the viewer's (last opened) widget, for the menu commands
_REGISTRY: dict[int, weakref.ref] = {}


def real_viewer(viewer):
    """The viewer behind napari's ``PublicOnlyProxy`` (napari hands commands and widgets
    a new proxy of the viewer at each call, so the proxy's id is no key)."""
    while hasattr(viewer, "__wrapped__"):
        viewer = viewer.__wrapped__
    return viewer


def widget_for(viewer) -> TrackerWidget:
    """The tracker widget docked in ``viewer``; a clear error when there is none."""
    ref = _REGISTRY.get(id(real_viewer(viewer)))
    widget = ref() if ref is not None else None
    if widget is None:
        raise LookupError(
            "open the tracker first: Plugins > SAM 2 worm tracker (SAM 2 Worm Tracker)"
        )
    return widget


class TrackerWidget(SkeletonDisplay, Painting, QWidget):
    """SAM 2 / classic worm tracker dock widget.

    Parameters
    ----------
    napari_viewer : the viewer (napari passes it, possibly behind a ``PublicOnlyProxy``).
    synchronous : run long work inline instead of in worker threads (scripts).
    """

    synchronous = False

    def __init__(self, napari_viewer, synchronous: bool | None = None) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        if synchronous is not None:
            self.synchronous = synchronous
        self.session: TrackingSession | None = None
        self._image_layer = None
        self._cancel = threading.Event()
        self._workers: set = set()
        self._syncing_points = False
        self._prompt_busy = False
        self.running = False
        self._closed = False
        # napari deletes a docked widget with its viewer without closeEvent: a worker that
        # finishes afterwards must not touch it
        self._alive = alive = {"ok": True}
        self.destroyed.connect(lambda *_: alive.update(ok=False))
        #: the skeleton tracks on screen (= what an export writes), their masks' version
        self.tracks = None
        self._version = 0  # bumped at every change of the masks or the flips
        self._tracks_version = -1
        self._tracks_busy = False
        self._tracks_wanted = False
        self.model_panel = ModelPanel(self)
        self.objects_panel = ObjectsPanel(self)
        self.propagate_panel = PropagatePanel(self)
        self.review_panel = ReviewPanel(self)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        for p in (self.model_panel, self.objects_panel, self.propagate_panel, self.review_panel):
            lay.addWidget(p)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        inner.setMinimumWidth(340)
        self.setMinimumWidth(370)  # the dock's title and the panels' texts fit
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        _REGISTRY[id(self.viewer)] = weakref.ref(self)
        if not sam2_available():
            self.model_panel.set_backend("classic")

    # -- lifecycle ------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self.disconnect_viewer()
        super().closeEvent(event)

    def disconnect_viewer(self) -> None:
        """Stop workers and disconnect from the viewer's and layers' events."""
        self._closed = True
        self._cancel.set()
        for w in list(self._workers):
            try:
                w.quit()
            except RuntimeError:
                pass
        for name, event, cb in (
            (PROMPTS, "data", self._on_points_data),
            (MASKS, "paint", self._on_paint),
        ):
            layer = self._layer(name)
            if layer is not None:
                try:
                    getattr(layer.events, event).disconnect(cb)
                except (TypeError, ValueError, RuntimeError):
                    pass
        points = self._layer(PROMPTS)
        if points is not None and self._on_press in points.mouse_drag_callbacks:
            points.mouse_drag_callbacks.remove(self._on_press)
        if _REGISTRY.get(id(self.viewer)) is not None and _REGISTRY[id(self.viewer)]() is self:
            del _REGISTRY[id(self.viewer)]

    # -- workers --------------------------------------------------------------------
    def run_work(self, func: Callable[[], Any], **handlers) -> None:
        """Run ``func`` in a worker (or inline when :attr:`synchronous`); see
        :func:`._workers.run_work` for the handlers (they run on the main thread)."""
        handlers.setdefault("on_error", self.notify_error)
        guarded = {k: self._unless_closed(h) for k, h in handlers.items() if h is not None}
        run_work(func, synchronous=self.synchronous, workers=self._workers, **guarded)

    def _unless_closed(self, handler: Callable) -> Callable:
        """``handler``, skipped once the widget is closed (a worker may finish later)."""

        alive = self._alive

        def call(*args):
            if not self._closed and alive["ok"]:
                return handler(*args)
            return None

        return call

    def notify_error(self, exc: Exception) -> None:
        """Show an exception as a napari notification (the message says what to do)."""
        log.warning("tracker error: %s", exc, exc_info=exc)
        msg = str(exc) or type(exc).__name__
        ours = type(exc).__module__.startswith("napari_sam2_worms")  # messages for users
        if ours or isinstance(exc, (ValueError, LookupError, FileExistsError)):
            show_warning(msg.strip("'\""))
        else:
            show_error(f"{type(exc).__name__}: {msg}")

    def _session_call(self, func: Callable[[], Any]) -> tuple[bool, Any]:
        """Call the session API; a refusal (e.g. a duplicate name) becomes a notification."""
        try:
            return True, func()
        except Exception as exc:
            self.notify_error(exc)
            return False, None

    # -- layers ---------------------------------------------------------------------
    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def image_layer(self):
        """The video layer: the selected image layer, else the first one."""
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        for layer in self.viewer.layers:
            if isinstance(layer, Image):
                return layer
        return None

    def _video_of(self, layer):
        from ..video import ArrayVideo
        from ..video._base import LazyVideo

        data = layer.data
        if isinstance(data, LazyVideo):
            return data
        fps = float(layer.metadata.get("fps", 25.0) or 25.0)
        return ArrayVideo(np.asarray(data), fps=fps)

    def current_frame(self) -> int:
        step = self.viewer.dims.current_step
        return int(step[0]) if len(step) else 0

    @property
    def current_object(self) -> int | None:
        return self.objects_panel.current()

    def _ensure_layers(self) -> None:
        s = self.session
        assert s is not None
        labels = self._layer(MASKS)
        if labels is None or labels.data.shape != s.labels.shape:
            if labels is not None:
                self.viewer.layers.remove(labels)
            labels = self.viewer.add_labels(np.array(s.labels), name=MASKS, opacity=0.5)
        else:
            labels.data[:] = s.labels
        labels.colormap = _layers.labels_colormap(s.objects)
        labels.refresh()
        # (re)connect: layers may come from an earlier widget on this viewer
        labels.events.paint.disconnect(self._on_paint)
        labels.events.paint.connect(self._on_paint)
        for name in _style.LAYERS:
            old = self._layer(name)
            kind = "vectors" if name == SKELETONS else "points"
            if old is not None and old._type_string != kind:  # an older version's layer
                self.viewer.layers.remove(old)
        _style.add_display_layers(self.viewer)
        points = self._layer(PROMPTS)
        if points is None:
            points = self.viewer.add_points(
                ndim=3,
                name=PROMPTS,
                size=8,
                border_width=0.3,
                features={"object": np.zeros(0, int), "positive": np.zeros(0, bool)},
            )
        else:  # clicks on top of the skeletons
            self.viewer.layers.move(self.viewer.layers.index(points), len(self.viewer.layers))
        points.events.data.disconnect(self._on_points_data)
        points.events.data.connect(self._on_points_data)
        points.bind_key("n", self._toggle_negative, overwrite=True)
        if self._on_press not in points.mouse_drag_callbacks:
            # before the add-mode callback, which adds the point on release
            points.mouse_drag_callbacks.insert(0, self._on_press)
        self._rebuild_points()
        self._prompts_ready()

    def _prompts_ready(self) -> None:
        """The prompts layer selected, in add mode: the next click is a prompt."""
        points = self._layer(PROMPTS)
        if points is None:
            return
        self.viewer.layers.selection.active = points
        points.mode = "add"

    def _toggle_negative(self, _layer=None) -> None:
        self.objects_panel.negative.setChecked(not self.objects_panel.negative.isChecked())

    def _on_press(self, layer, event) -> None:
        """Shift-click adds a negative point (positive when 'Negative clicks' is on)."""
        if event.type == "mouse_press" and str(layer.mode) == "add":
            self.update_point_defaults(invert="Shift" in event.modifiers)

    def update_point_defaults(self, invert: bool = False) -> None:
        """New clicks and paint get the current object (and clicks the polarity;
        ``invert``: Shift held)."""
        points = self._layer(PROMPTS)
        obj = self.current_object
        if points is None or obj is None or self.session is None:
            return
        labels = self._layer(MASKS)
        if labels is not None and labels.selected_label != obj:
            labels.selected_label = obj  # painting is for the current object
        positive = self.objects_panel.negative.isChecked() == invert
        # "current" colours also recolour selected points: never those of another object
        points.selected_data = set()
        points.feature_defaults = {"object": obj, "positive": positive}
        face, border, _ = _layers.point_styles(
            np.array([obj]), np.array([positive]), self.session.objects
        )
        points.current_face_color = face[0]
        points.current_border_color = border[0]

    def _rebuild_points(self) -> None:
        """Show the session's clicks in the prompts layer (after a failure, load, removal)."""
        points = self._layer(PROMPTS)
        if points is None or self.session is None:
            return
        data, objs, pos = _layers.prompts_to_points(self.session)
        self._syncing_points = True
        try:
            points.selected_data = set()
            points.data = data
            points.features = {"object": objs, "positive": pos}
            self._style_points()
        finally:
            self._syncing_points = False
        self.update_point_defaults()

    def _style_points(self) -> None:
        points = self._layer(PROMPTS)
        feats = points.features
        if len(points.data) == 0:
            return
        face, border, symbols = _layers.point_styles(
            np.asarray(feats["object"], int),
            np.asarray(feats["positive"], bool),
            self.session.objects,
        )
        points.face_color = face
        points.border_color = border
        points.symbol = symbols

    def refresh_labels(self, frames=None, skeletons: bool = True) -> None:
        """Copy session labels into the masks layer (all frames, or the given ones); the
        masks changed, so the skeletons are recomputed (unless ``skeletons`` is False)."""
        labels = self._layer(MASKS)
        if labels is None or self.session is None:
            return
        if labels.data.shape != self.session.labels.shape:
            self._ensure_layers()
        elif frames is None:
            labels.data[:] = self.session.labels
            labels.refresh()
        else:
            frames = list(frames)
            for f in frames:
                labels.data[f] = self.session.labels[f]
            if self.current_frame() in frames:  # other frames are drawn when shown
                labels.refresh()
        if skeletons:
            self.masks_changed()

    # -- model ----------------------------------------------------------------------
    def load_model(self, on_loaded: Callable[[], None] | None = None) -> None:
        """Build the chosen backend on the video layer in a worker, then start a session."""
        layer = self.image_layer()
        if layer is None:
            show_warning("Open a video first (File > Open, drag and drop, or File > Open Sample).")
            return
        video = self._video_of(layer)
        panel = self.model_panel
        build = panel.backend_factory()
        name = panel.backend_name
        chosen = panel.choice()
        panel.busy(f"loading {name}…")

        def work():
            return TrackingSession(video, build())

        def done(session):
            self._image_layer = layer
            start_skeleton_workers(session)  # here: see _main_script_hidden
            self.set_session(session)
            panel.loaded(chosen, f"{name} ready on '{layer.name}' ({session.n_frames} frames)")
            if on_loaded:
                on_loaded()

        def failed(exc):
            from ..backends.sam2.checkpoints import CheckpointError

            if isinstance(exc, CheckpointError) and name == "sam2":
                show_warning(f"{exc}\nUsing the classic backend instead for now.")
                panel.idle("no SAM 2 checkpoint: using classic")
                panel.set_backend("classic")
                self.load_model(on_loaded)
                return
            panel.idle(f"loading failed: {exc}")
            self.notify_error(exc)

        self.run_work(work, on_return=done, on_error=failed)

    def set_session(self, session: TrackingSession) -> None:
        """Show ``session`` in the layers and panels (replaces the current one)."""
        old = self.session
        self.session = session
        if old is not None and old is not session:
            try:
                old.close()
            except Exception:
                log.debug("closing the old session failed", exc_info=True)
        self.tracks = None
        self.propagate_panel.set_frames(session.n_frames)
        self.review_panel.set_frames(session.n_frames)
        self.review_panel.set_flags([], {})
        self._ensure_layers()
        self.objects_panel.refresh(session.objects)
        self.masks_changed()

    def _require_session(self) -> TrackingSession | None:
        if self.session is None:
            show_warning("Load a model first (section 1, 'Load model').")
        return self.session

    # -- objects --------------------------------------------------------------------
    def add_object(self, name: str | None = None) -> int | None:
        s = self._require_session()
        if s is None:
            return None
        ok, oid = self._session_call(lambda: s.add_object(name))
        if not ok:
            return None
        self._objects_changed()
        self.objects_panel.select(oid)
        return oid

    def remove_object(self, object_id: int | None) -> None:
        s = self._require_session()
        if s is None or object_id is None:
            return
        if not self._session_call(lambda: s.remove_object(object_id))[0]:
            return
        self._objects_changed()
        self._rebuild_points()
        self.refresh_labels()

    def rename_object(self, object_id: int | None, name: str) -> None:
        s = self._require_session()
        if s is None or object_id is None:
            return
        if self._session_call(lambda: s.rename_object(object_id, name))[0]:
            self._version += 1  # names are in the tracks
            self.masks_changed()
        self.objects_panel.refresh(s.objects)

    def _objects_changed(self) -> None:
        s = self.session
        self.objects_panel.refresh(s.objects)
        labels = self._layer(MASKS)
        if labels is not None:
            labels.colormap = _layers.labels_colormap(s.objects)
        points = self._layer(PROMPTS)
        if points is not None and len(points.data):
            self._style_points()

    def detect_objects(self) -> None:
        """Classic backend: one object and one positive click per animal on this frame."""
        s = self._require_session()
        if s is None:
            return
        if not hasattr(s.backend, "detect"):
            show_warning("Detection needs the classic backend; click on each animal instead.")
            return
        frame = self.current_frame()
        points = self._layer(PROMPTS)
        for x, y in s.backend.detect(frame):
            if self.add_object() is None:
                return
            points.add(np.array([frame, y, x], float))  # same path as a click

    # -- prompts --------------------------------------------------------------------
    def _on_points_data(self, event) -> None:
        action = str(getattr(getattr(event, "action", None), "value", getattr(event, "action", "")))
        if self._syncing_points or action not in ("added", "removed", "changed"):
            return
        s = self.session
        if s is None:
            return
        if action == "added":
            self._style_points()
            self.update_point_defaults()  # a Shift-click's polarity is for one point
        self._sync_prompts()

    def _sync_prompts(self) -> None:
        """Send (frame, object) groups whose clicks changed to the session."""
        s = self.session
        points = self._layer(PROMPTS)
        if s is None or points is None or self._prompt_busy or self.running:
            return
        feats = points.features
        wanted = _layers.points_to_prompts(
            points.data, np.asarray(feats["object"], int), np.asarray(feats["positive"], bool)
        )
        wanted = {k: v for k, v in wanted.items() if k[1] in s.objects}
        keys = _layers.changed_prompt_keys(s, wanted)
        if not keys:
            return

        def work():
            for frame, obj in keys:
                pts = wanted.get((frame, obj), [])
                xy = np.array([p[:2] for p in pts], float).reshape(-1, 2)
                s.set_points(frame, obj, xy, np.array([p[2] for p in pts], bool))
            return [f for f, _ in keys]

        def done(frames):
            self.refresh_labels(sorted(set(frames)))

        def failed(exc):
            self.notify_error(exc)
            self._rebuild_points()  # the session kept the previous clicks
            self.refresh_labels(sorted({f for f, _ in keys}))

        def finish():
            self._prompt_busy = False
            # clicks made while SAM 2 was busy
            if not self.synchronous:
                self._sync_prompts()

        # in a worker for every backend (a classic click takes ~50-150 ms on a small
        # machine: the viewer stays live); clicks made meanwhile follow in ``finish``
        self._prompt_busy = True
        self.run_work(work, on_return=done, on_error=failed, on_finish=finish)

    # -- propagation ----------------------------------------------------------------
    def propagate(self, direction: str | None = None, start=None, stop=None) -> None:
        """Propagate (forward, backward, both or range) in a worker; layers fill as it goes."""
        s = self._require_session()
        if s is None or self.running:
            return
        panel = self.propagate_panel
        direction = direction or panel.direction.currentText()
        if direction == "range":
            a, b = panel.start.value(), panel.stop.value()
            direction, start, stop = ("forward", a, b) if b >= a else ("backward", a, b)
        self._run_steps(lambda cancel: s.propagate(direction, start, stop, cancel=cancel))

    def repropagate(self, direction: str | None = None) -> None:
        """Re-run tracking from the current frame after a correction."""
        s = self._require_session()
        if s is None or self.running:
            return
        direction = direction or self.propagate_panel.direction.currentText()
        if direction == "range":
            direction = "forward"
        frame = self.current_frame()
        self._run_steps(lambda cancel: s.repropagate_from(frame, direction, cancel=cancel))

    def _run_steps(self, make_gen) -> None:
        """Run a propagation generator in a worker. The main-thread handler is cheap and
        throttled (progress every :data:`PROGRESS_EVERY` s, masks every
        :data:`LABELS_EVERY` s), so the viewer stays responsive however fast frames come."""
        panel = self.propagate_panel
        self._cancel = cancel = threading.Event()
        self.running = True
        panel.running(True)
        panel.progress.setRange(0, 0)
        _style.set_stale(self.viewer, True)
        pending: set[int] = set()
        last = {"ui": 0.0, "labels": time.monotonic(), "step": None}

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

    def cancel(self) -> None:
        """Stop the propagation after the frame in flight ("Cancelling…" until it has)."""
        if self.running:
            self._cancel.set()
            self.propagate_panel.cancelling()
