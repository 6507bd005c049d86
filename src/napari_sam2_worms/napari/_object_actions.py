"""Objects and identities: add, remove, rename, detect, swap; the lists that show them.

A mixin of :class:`~napari_sam2_worms.napari._widget.TrackerWidget` (it uses the
widget's ``session``, ``objects_panel``, ``review_panel``, ``running``, ``run_work``,
``current_frame``, ``refresh_labels``, ``update_flags`` and the prompts mixin). Every
change goes through the session's API; a refusal (a duplicate name, an unknown object)
is a notification and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info, show_warning

from ..backends.base import capabilities
from . import _layers
from ._identity_panel import suspect_partner
from ._prompt_sync import MASKS, PROMPTS

if TYPE_CHECKING:
    from ..engine.identity import SwapResult


class ObjectActions:
    """The objects half of the tracker widget."""

    # -- objects --------------------------------------------------------------------
    def add_object(self: Any, name: str | None = None) -> int | None:
        """Add an object (``name``: None for the session's default); select it."""
        s = self._require_session()
        if s is None:
            return None
        ok, oid = self._session_call(lambda: s.add_object(name))
        if not ok:
            return None
        self._objects_changed()
        self.objects_panel.select(oid)
        return oid

    def remove_object(self: Any, object_id: int | None) -> None:
        """Remove an object with its prompts, masks and flips."""
        s = self._require_session()
        if s is None or object_id is None:
            return
        if not self._session_call(lambda: s.remove_object(object_id))[0]:
            return
        self._objects_changed()
        self._rebuild_points()
        self.refresh_labels()

    def rename_object(self: Any, object_id: int | None, name: str) -> None:
        """Rename an object (a name another object has is refused with a message)."""
        s = self._require_session()
        if s is None or object_id is None:
            return
        if self._session_call(lambda: s.rename_object(object_id, name))[0]:
            self._version += 1  # names are in the tracks
            self.masks_changed()
        self._show_objects()

    def _show_objects(self: Any) -> None:
        """Show the session's objects in the objects list and the swap pickers."""
        s = self.session
        assert s is not None
        names = {o: obj.name for o, obj in s.objects.items()}
        self.review_panel.show_objects(names, s.n_frames)
        self.objects_panel.refresh(s.objects)

    def _objects_changed(self: Any) -> None:
        s = self.session
        assert s is not None
        self._show_objects()
        labels = self._layer(MASKS)
        if labels is not None:
            labels.colormap = _layers.labels_colormap(s.objects)
        points = self._layer(PROMPTS)
        if points is not None and len(points.data):
            self._style_points()

    def _current_object_changed(self: Any, object_id: int | None) -> None:
        """Make ``object_id`` the object of new clicks and of the swap control.

        The swap control also picks the object flagged "identity suspect" with it on this
        frame.
        """
        self.update_point_defaults()
        flags, frame = self.review_panel.flags, self.current_frame()
        partner = suspect_partner(frame, object_id, flags, self.tracks)
        self.review_panel.follow(object_id, partner)

    def detect_objects(self: Any, filters: dict | None = None) -> None:
        """Add one object and one positive click per animal found on this frame.

        Only a backend that declares detection can (the classic one); ``filters`` are
        keyword arguments of ``backend.detect``.
        """
        s = self._require_session()
        if s is None:
            return
        if not capabilities(s.backend).detect:
            show_warning("Detection needs the classic backend; click on each animal instead.")
            return
        frame = self.current_frame()
        found = s.backend.detect(frame, **(filters or {}))
        if not found:
            animal = self.objects_panel.animal_name()
            show_info(f"Detect all: no {animal} on frame {frame} in this size range.")
            return
        points = self._layer(PROMPTS)
        for x, y in found:
            if self.add_object(self.objects_panel.new_name()) is None:
                return
            points.add(np.array([frame, y, x], float))  # same path as a click

    # -- identities -----------------------------------------------------------------
    def swap_identities(self: Any, a: int | None, b: int | None, stop: int | None = None) -> None:
        """Swap objects ``a`` and ``b`` from the current frame to ``stop`` (None: the end).

        The swap runs in a worker; the new masks and prompts are shown when it is done. A
        refusal is a notification.
        """
        s = self._require_session()
        if s is None:
            return
        if a is None or b is None or a == b:
            show_warning("Pick two different objects to swap.")
            return
        if self.running:
            show_warning("Wait for the propagation to finish (or cancel it), then swap.")
            return
        names = {o: obj.name for o, obj in s.objects.items()}
        start = self.current_frame()

        def done(result: SwapResult) -> None:
            self._rebuild_points()
            self.refresh_labels(range(result.start, min(result.stop + 1, s.n_frames - 1) + 1))
            to = "the end" if result.stop == s.n_frames - 1 else f"frame {result.stop}"
            show_info(
                f"{names[a]} and {names[b]} swapped from frame {result.start} to {to}; "
                "their masks there are now prompts"
            )
            if result.backend_error:
                show_warning(
                    f"The model did not take the new prompts now ({result.backend_error}); "
                    "it gets them before the next click or propagation."
                )
            if result.unpinned:
                lost = ", ".join(f"{names[o]} on frame {f}" for f, o in result.unpinned)
                show_warning(
                    f"No mask to keep for {lost}: re-propagating through that frame may "
                    "undo the swap for it; click the animal there."
                )
            if self.review_panel.flags:
                self.update_flags()  # the listed flags were those before the swap

        self.run_work(lambda: s.swap_identities(a, b, start, stop), on_return=done)
