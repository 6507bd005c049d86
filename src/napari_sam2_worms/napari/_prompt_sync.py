"""Points layer <-> session prompts: the clicks the user makes are the session's prompts.

A mixin of :class:`~napari_sam2_worms.napari._widget.TrackerWidget` (it uses the
widget's ``viewer``, ``session``, ``objects_panel``, ``running``, ``synchronous``,
``run_work``, ``notify_error``, ``refresh_labels`` and ``_layer``). One way each:

- session -> layer: :meth:`PromptSync._rebuild_points` shows the session's clicks (after a
  load, a removal, a failed click, a swap);
- layer -> session: a click added, moved or removed in the prompts layer sends the
  (frame, object) groups that changed to the session in a worker
  (:meth:`PromptSync._sync_prompts`); clicks made meanwhile follow when it is done.

New clicks get the current object and the polarity ("Negative clicks", inverted while
Shift is held) through the layer's feature defaults.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from . import _layers

PROMPTS, MASKS = "prompts", "masks"


class PromptSync:
    """The prompts half of the tracker widget."""

    _syncing_points = False
    _prompt_busy = False

    def _ensure_prompts_layer(self: Any) -> None:
        """Add (or move on top) the prompts layer and connect its events."""
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

    def _disconnect_prompts_layer(self: Any) -> None:
        points = self._layer(PROMPTS)
        if points is None:
            return
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            points.events.data.disconnect(self._on_points_data)
        if self._on_press in points.mouse_drag_callbacks:
            points.mouse_drag_callbacks.remove(self._on_press)

    def _prompts_ready(self: Any) -> None:
        """Select the prompts layer in add mode: the next click is a prompt."""
        points = self._layer(PROMPTS)
        if points is None:
            return
        self.viewer.layers.selection.active = points
        points.mode = "add"

    def _toggle_negative(self: Any, _layer: Any = None) -> None:
        self.objects_panel.toggle_negative()

    def _on_press(self: Any, layer: Any, event: Any) -> None:
        """Shift-click adds a negative point (positive when 'Negative clicks' is on)."""
        if event.type == "mouse_press" and str(layer.mode) == "add":
            self.update_point_defaults(invert="Shift" in event.modifiers)

    def update_point_defaults(self: Any, invert: bool = False) -> None:
        """Give new clicks and paint the current object, and clicks the polarity.

        ``invert``: Shift is held (the polarity is the other one).
        """
        points = self._layer(PROMPTS)
        obj = self.current_object
        if points is None or obj is None or self.session is None:
            return
        labels = self._layer(MASKS)
        if labels is not None and labels.selected_label != obj:
            labels.selected_label = obj  # painting is for the current object
        positive = self.objects_panel.negative_clicks == invert
        # "current" colours also recolour selected points: never those of another object
        points.selected_data = set()
        points.feature_defaults = {"object": obj, "positive": positive}
        face, border, _ = _layers.point_styles(
            np.array([obj]), np.array([positive]), self.session.objects
        )
        points.current_face_color = face[0]
        points.current_border_color = border[0]

    def _rebuild_points(self: Any) -> None:
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

    def _style_points(self: Any) -> None:
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

    def _on_points_data(self: Any, event: Any) -> None:
        action = str(getattr(getattr(event, "action", None), "value", getattr(event, "action", "")))
        if self._syncing_points or action not in ("added", "removed", "changed"):
            return
        if self.session is None:
            return
        if action == "added":
            self._style_points()
            self.update_point_defaults()  # a Shift-click's polarity is for one point
        self._sync_prompts()

    def _sync_prompts(self: Any) -> None:
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
