"""Skeletons on screen and the review: what is shown is what the export writes.

A mixin of :class:`~napari_sam2_worms.napari._widget.TrackerWidget`. The skeleton layers
show :meth:`TrackingSession.skeletons` (the tracks every export writes: oriented over time,
with the user's flips) on every frame at once, computed in a worker after each change of
the masks (never while a propagation runs) and cached; a flip is applied to the cached
tracks at once, with the very function ``skeletons()`` applies. Stepping through frames
costs nothing extra: napari slices the layers.
"""

from __future__ import annotations

from napari.utils.notifications import show_info

from . import _layers, _style

SKELETONS, HEADS, TAILS = _style.SKELETONS, _style.HEADS, _style.TAILS

#: Wait after a change of the masks before recomputing the tracks (clicks come in bursts).
TRACKS_DELAY_MS = 250


class SkeletonDisplay:
    """The skeleton and review half of the tracker widget."""

    @property
    def tracks_fresh(self) -> bool:
        """True when :attr:`tracks` (on screen) are those of the current masks and flips."""
        return self.tracks is not None and self._tracks_version == self._version

    def masks_changed(self) -> None:
        """The masks (or the flips) changed: recompute the skeleton tracks in a worker,
        once the propagation has finished; the layers show them when they arrive."""
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
        """Put :attr:`tracks` (every frame) into the skeleton layers."""
        s = self.session
        if s is None or self.tracks is None:
            return
        shown = _layers.tracks_display(self.tracks, s.objects)
        _layers.show_track_display(self.viewer, shown)
        _style.set_stale(self.viewer, not self.tracks_fresh)
        _style.set_visible(self.viewer, self.review_panel.skeletons_shown)

    def refresh_skeletons(self) -> None:
        """Show or hide the skeleton layers (the tracks are computed when masks change)."""
        if self.tracks is None:
            self._schedule_tracks()
        else:
            self.show_tracks()

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
        """Flip head and tail of the current object over frames start..stop (inclusive);
        shown at once (the cached tracks get the same flip ``session.skeletons()`` applies)."""
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
