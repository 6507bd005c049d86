"""The dock widget: it wires the panels, owns the session's lifecycle and the layers.

The panels (:mod:`._model_panel`, :mod:`._objects_panel`, :mod:`._propagate_panel`,
:mod:`._review_panel` with :mod:`._identity_panel`) know no widget: they emit Qt signals,
which :meth:`TrackerWidget._connect_panels` connects to the methods here, and show what
they are given. The widget's halves live in focused mixins: objects and identities
(:mod:`._object_actions`), the masks layer (:mod:`._masks_layer`), the prompts layer
(:mod:`._prompt_sync`), propagation (:mod:`._propagation`), painted corrections
(:mod:`._painting`) and the skeletons on screen (:mod:`._display`).

Long work (loading a model, SAM 2 clicks, propagation, skeletons of all frames) runs in
``napari.qt.threading.thread_worker``s; layers are only touched in main-thread handlers.
Set ``TrackerWidget.synchronous = True`` (or pass ``synchronous=True``) to run the
generators inline (scripts); the GUI tests use the real workers. Session data changes
only through the session's API.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from ..backends.factory import build_backend, sam2_available
from ..engine.session import TrackingSession
from . import _style
from ._display import SkeletonDisplay
from ._masks_layer import MasksLayer
from ._model_panel import ModelPanel
from ._object_actions import ObjectActions
from ._objects_panel import ObjectsPanel
from ._painting import Painting
from ._prompt_sync import MASKS, PROMPTS, PromptSync
from ._propagate_panel import PropagatePanel
from ._propagation import Propagation
from ._registry import real_viewer, register, unregister, widget_for
from ._review_panel import ReviewPanel
from ._workers import download_steps, run_work, start_skeleton_workers

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..backends.base import Backend
    from ..backends.factory import BackendSpec
    from ..video._base import LazyVideo

log = logging.getLogger(__name__)

SKELETONS, HEADS, TAILS = _style.SKELETONS, _style.HEADS, _style.TAILS
__all__ = ["HEADS", "MASKS", "PROMPTS", "SKELETONS", "TAILS", "TrackerWidget", "widget_for"]


class TrackerWidget(
    ObjectActions, MasksLayer, SkeletonDisplay, Painting, PromptSync, Propagation, QWidget
):
    """SAM 2 / classic worm tracker dock widget.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (napari passes it, possibly behind a ``PublicOnlyProxy``).
    synchronous : bool, optional
        Run long work inline instead of in worker threads (scripts).
    """

    synchronous = False

    def __init__(self, napari_viewer: Any, synchronous: bool | None = None) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        if synchronous is not None:
            self.synchronous = synchronous
        self.session: TrackingSession | None = None
        self.video_layer = None  # the image layer the session tracks
        self._cancel = threading.Event()
        self._workers: set = set()
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
        self.model_panel = ModelPanel()
        self.objects_panel = ObjectsPanel()
        self.propagate_panel = PropagatePanel()
        self.review_panel = ReviewPanel(self.viewer)
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
        self._connect_panels()
        register(self.viewer, self)
        if not sam2_available():
            self.model_panel.set_backend("classic")

    def _connect_panels(self) -> None:
        """Connect the panels' signals to what they ask for."""
        m, o, p, r = self.model_panel, self.objects_panel, self.propagate_panel, self.review_panel
        m.load_requested.connect(lambda: self.load_model())
        m.download_requested.connect(self.download_checkpoint)
        o.add_requested.connect(self.add_object)
        o.remove_requested.connect(self.remove_object)
        o.rename_requested.connect(self.rename_object)
        o.detect_requested.connect(self.detect_objects)
        o.current_changed.connect(self._current_object_changed)
        o.negative_changed.connect(lambda _: self.update_point_defaults())
        p.propagate_requested.connect(lambda: self.propagate())
        p.cancel_requested.connect(self.cancel)
        p.paint_requested.connect(self.use_painted_mask)
        p.repropagate_requested.connect(lambda: self.repropagate())
        r.update_requested.connect(self.update_flags)
        r.goto_requested.connect(self.goto)
        r.flip_requested.connect(self.flip_head_tail)
        r.skeletons_toggled.connect(lambda _: self.refresh_skeletons())
        r.swap_requested.connect(self.swap_identities)

    # -- lifecycle ------------------------------------------------------------------
    def closeEvent(self, event: Any) -> None:
        """Disconnect from the viewer when the dock widget is closed (Qt's handler)."""
        self.disconnect_viewer()
        super().closeEvent(event)

    def disconnect_viewer(self) -> None:
        """Stop workers and disconnect from the viewer's and layers' events."""
        self._closed = True
        self._cancel.set()
        for w in list(self._workers):
            with contextlib.suppress(RuntimeError):
                w.quit()
        labels = self._layer(MASKS)
        if labels is not None:
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                labels.events.paint.disconnect(self._on_paint)
        self._disconnect_prompts_layer()
        unregister(self.viewer, self)

    def run_work(self, func: Callable[[], Any], **handlers: Any) -> None:
        """Run ``func`` in a worker (or inline when :attr:`synchronous`).

        See :func:`._workers.run_work` for the handlers (they run on the main thread and
        are skipped once the widget is closed); errors default to :meth:`notify_error`.
        """
        handlers.setdefault("on_error", self.notify_error)
        guarded = {k: self._unless_closed(h) for k, h in handlers.items() if h is not None}
        run_work(func, synchronous=self.synchronous, workers=self._workers, **guarded)

    def _unless_closed(self, handler: Callable) -> Callable:
        """Return ``handler``, skipped once the widget is closed (a worker may finish later)."""
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

    def _require_session(self) -> TrackingSession | None:
        if self.session is None:
            show_warning("Load a model first (section 1, 'Load model').")
        return self.session

    # -- layers and viewer ----------------------------------------------------------
    def _layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 (a LayerList has no get)

    def image_layer(self) -> Any:
        """Return the video layer: the selected image layer, else the first one."""
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        return next((layer for layer in self.viewer.layers if isinstance(layer, Image)), None)

    def current_frame(self) -> int:
        """Return the frame on screen."""
        step = self.viewer.dims.current_step
        return int(step[0]) if len(step) else 0

    @property
    def current_object(self) -> int | None:
        """The object selected in the objects list (None when none is)."""
        return self.objects_panel.current()

    # -- session lifecycle ----------------------------------------------------------
    def build_backend(self, spec: BackendSpec | None = None) -> Backend:
        """Build the backend ``spec`` describes (default: what the model panel asks for).

        Call it in a worker: SAM 2 loads for seconds; read ``spec`` from the panel in the
        main thread first (Qt controls are not thread-safe). A missing SAM 2 checkpoint
        raises the checkpoint's own ``CheckpointError`` (the factory's hint names a
        command-line flag).
        """
        from ..backends.sam2.checkpoints import CheckpointError

        try:
            return build_backend(self.model_panel.spec() if spec is None else spec)
        except CheckpointError as exc:
            if isinstance(exc.__cause__, CheckpointError):
                raise exc.__cause__ from None
            raise

    def load_model(self, on_loaded: Callable[[], None] | None = None) -> None:
        """Build the chosen backend on the video layer in a worker, then start a session."""
        layer = self.image_layer()
        if layer is None:
            show_warning("Open a video first (File > Open, drag and drop, or File > Open Sample).")
            return
        video = _video_of(layer)
        panel = self.model_panel
        name, chosen = panel.backend_name, panel.choice()
        try:
            spec = panel.spec()  # read here, in the main thread, with the choice it names
        except ValueError as exc:
            self.notify_error(exc)
            return
        panel.busy(f"loading {name}…")

        def done(session):
            start_skeleton_workers(session)  # here: see _main_script_hidden
            self.set_session(session, layer)
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

        self.run_work(
            lambda: TrackingSession(video, self.build_backend(spec)),
            on_return=done,
            on_error=failed,
        )

    def open_session(self, session: TrackingSession, source: str, video_layer: Any = None) -> None:
        """Show a session opened from a folder.

        ``source``: how the status names it; ``video_layer``: its video's layer when one
        was added for it.
        """
        self.set_session(session, video_layer)
        panel = self.model_panel
        panel.loaded(
            panel.choice(),
            f"{panel.backend_name} ready: {source} "
            f"({session.n_frames} frames, {len(session.objects)} objects)",
        )

    def set_session(self, session: TrackingSession, video_layer: Any = None) -> None:
        """Show ``session`` in the layers and panels (replaces and closes the current one).

        ``video_layer``: the image layer it tracks (default: the one it had).
        """
        old = self.session
        self.session = session
        if video_layer is not None:
            self.video_layer = video_layer
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
        self._show_objects()
        self.masks_changed()

    def download_checkpoint(self, model: str) -> None:
        """Download the SAM 2 checkpoint of ``model`` in a worker, with a progress bar."""
        panel = self.model_panel
        panel.busy(f"downloading {model}…", 100)

        def done(path):
            panel.idle(f"downloaded {path}")
            show_info(f"SAM 2 checkpoint ready: {path}")

        def failed(exc):
            panel.idle("download failed")
            self.notify_error(exc)

        self.run_work(
            functools.partial(download_steps, model),  # a generator function: yields go on
            on_yield=panel.show_progress,
            on_return=done,
            on_error=failed,
        )


def _video_of(layer: Any) -> LazyVideo:
    """Return the video of an image layer (its lazy video, or its array wrapped)."""
    from ..video import ArrayVideo
    from ..video._base import LazyVideo

    data = layer.data
    if isinstance(data, LazyVideo):
        return data
    fps = float(layer.metadata.get("fps", 25.0) or 25.0)
    return ArrayVideo(np.asarray(data), fps=fps)
