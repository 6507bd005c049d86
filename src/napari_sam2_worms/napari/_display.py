"""Skeletons on screen and the review: what is shown is what the export writes.

A mixin of :class:`~napari_sam2_worms.napari._widget.TrackerWidget`. The skeleton layers
show :meth:`TrackingSession.skeletons` (the tracks every export writes: oriented over time,
with the user's flips), computed in a worker after each change of the masks (never while a
propagation runs) and cached; a flip is applied to the cached tracks at once, with the very
function ``skeletons()`` applies. The layers are 2D and hold the frame on screen only
(:mod:`._overlay`): at each frame step its centerlines, heads and tails are put in them
(a few milliseconds), which costs less than napari slicing layers of every frame.
"""

from __future__ import annotations

import weakref

from napari.utils.notifications import show_info

from . import _layers, _overlay, _style

SKELETONS, HEADS, TAILS = _style.SKELETONS, _style.HEADS, _style.TAILS

#: Wait after a change of the masks before recomputing the tracks (clicks come in bursts).
TRACKS_DELAY_MS = 250


class SkeletonDisplay:
    """The skeleton and review half of the tracker widget."""

    _overlay: _overlay.TrackOverlay | None = None  # the tracks on screen, frame by frame
    _overlay_stale = True  # the layers do not show the frame on screen (hidden meanwhile)
    _frames_followed = False

    @property
    def tracks_fresh(self) -> bool:
        """True when :attr:`tracks` (on screen) are those of the current masks and flips."""
        return self.tracks is not None and self._tracks_version == self._version

    def masks_changed(self) -> None:
        """Recompute the skeleton tracks in a worker: the masks (or the flips) changed.

        The work starts once the propagation has finished; the layers show the tracks
        when they arrive.
        """
        self._version += 1
        _style.set_stale(self.viewer, True)
        if self.synchronous:
            self._schedule_tracks()
            return
        # a burst of clicks starts one computation, TRACKS_DELAY_MS after the last one
        timer = getattr(self, "_tracks_timer", None)
        if timer is None:
            from qtpy.QtCore import QTimer

            timer = self._tracks_timer = QTimer(self)
            timer.setSingleShot(True)
            timer.setInterval(TRACKS_DELAY_MS)
            timer.timeout.connect(self._unless_closed(self._schedule_tracks))
        timer.start()

    def _schedule_tracks(self) -> None:
        s = self.session
        if s is None:
            return
        if self.running or self._tracks_busy:
            self._tracks_wanted = True  # after the run / the job in flight
            return
        version = self._version
        self._tracks_busy, self._tracks_wanted = True, False

        def done(tracks):
            if s is self.session and version == self._version:
                self.tracks, self._tracks_version = tracks, version
                self.show_tracks()
            else:
                self._tracks_wanted = True

        def finish():
            self._tracks_busy = False
            if self._tracks_wanted and not self.running:
                self._schedule_tracks()

        self.run_work(s.skeletons, on_return=done, on_finish=finish)

    def show_tracks(self) -> None:
        """Show :attr:`tracks` in the skeleton layers.

        The layers show the frame on screen now, then each frame the viewer steps to.
        """
        s = self.session
        if s is None or self.tracks is None:
            return
        self._overlay = _overlay.TrackOverlay(self.tracks, s.objects)
        self._follow_frames()
        visible = self.review_panel.skeletons_shown
        if visible:
            _overlay.show_tracks(self.viewer, self._overlay, _overlay.current_frame(self.viewer))
        self._overlay_stale = not visible
        _style.set_stale(self.viewer, not self.tracks_fresh)
        _style.set_visible(self.viewer, visible)

    def _follow_frames(self) -> None:
        """Connect the viewer's frame steps to the overlay, once.

        The connection holds a weak reference to the widget and ends with it.
        """
        if self._frames_followed:
            return
        self._frames_followed = True
        ref = weakref.ref(self)
        dims = self.viewer.dims

        def on_step(_event: object = None) -> None:
            widget = ref()
            if widget is None or widget._closed or not widget._alive["ok"]:
                dims.events.current_step.disconnect(on_step)
                return
            widget._show_current_frame()

        dims.events.current_step.connect(on_step)

    def _show_current_frame(self, force: bool = False) -> None:
        """Put the centerlines, heads and tails of the frame on screen into the layers."""
        overlay = self._overlay
        if overlay is None:
            return
        if not (force or self.review_panel.skeletons_shown):
            self._overlay_stale = True  # hidden: shown again when the box is ticked
            return
        _overlay.show_frame(self.viewer, overlay, _overlay.current_frame(self.viewer))

    def refresh_skeletons(self) -> None:
        """Show or hide the skeleton layers (the tracks are computed when masks change)."""
        if self.tracks is None:
            self._schedule_tracks()
            return
        visible = self.review_panel.skeletons_shown
        if visible and self._overlay_stale:
            self._show_current_frame(force=True)
            self._overlay_stale = False
        _style.set_visible(self.viewer, visible)

    def update_flags(self) -> None:
        """List the flag events (from the cached tracks; computed first if needed)."""
        s = self._require_session()
        if s is None:
            return
        names = {o: obj.name for o, obj in s.objects.items()}

        def show(tracks):
            flags = _layers.flagged_frames(s, tracks)
            events = _layers.group_flags(flags, s.computed_frames())
            self.review_panel.set_flags(events, names)

        if self.tracks_fresh:
            show(self.tracks)
        else:
            self.run_work(s.skeletons, on_return=show)

    def goto(self, frame: int, object_id: int | None = None) -> None:
        self.viewer.dims.set_current_step(0, frame)
        if object_id is not None:
            self.objects_panel.select(object_id)

    def flip_head_tail(self, start: int, stop: int) -> None:
        """Flip head and tail of the current object over frames start..stop (inclusive).

        Shown at once: the cached tracks get the same flip ``session.skeletons()`` applies.
        """
        from ..skeleton import flip_head_tail

        s = self._require_session()
        obj = self.current_object
        if s is None or obj is None:
            return
        fresh = self.tracks_fresh
        ok, span = self._session_call(lambda: s.flip_head_tail(obj, start, stop))
        if not ok:
            return
        a, b = span
        self._version += 1
        if fresh and obj in list(self.tracks.object_ids):
            flip_head_tail(self.tracks, obj, a, b)
            self._tracks_version = self._version
            self.show_tracks()
        else:
            self._schedule_tracks()
        show_info(f"head and tail of {s.objects[obj].name} flipped on frames {a}-{b}")
