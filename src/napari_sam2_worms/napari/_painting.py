"""Painting corrections: the masks layer paints the current object, nothing else.

A mixin of :class:`~napari_sam2_worms.napari._widget.TrackerWidget`: a stroke made with
another object's label is undone with a message (it would be lost: "Use painted mask"
takes the current object's pixels only), and "Use painted mask" refuses a frame painted
for another object.
"""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_info, show_warning

MASKS = "masks"


class Painting:
    """The painting half of the tracker widget (needs its session, layers and panels)."""

    def _on_paint(self, _event=None) -> None:
        """Refuse a stroke made with another object's label (it would be lost)."""
        labels = self._layer(MASKS)
        s = self.session
        if labels is None or s is None:
            return
        label = int(labels.selected_label)
        obj = self.current_object
        if label == 0 or label == obj:
            return
        labels.undo()
        owner = s.objects[label].name if label in s.objects else None
        cur = s.objects[obj].name if obj in s.objects else None
        what = f"label {label} ({owner})" if owner else f"label {label}, which is no object"
        show_warning(
            f"That stroke used {what} but the current object is {cur or 'none'}: undone. "
            + (f"Pick {owner} in the objects list to paint it." if owner else "")
        )
        if obj is not None:
            labels.selected_label = obj

    def use_painted_mask(self) -> None:
        """Use the painted mask of the current object on the current frame as its prompt."""
        s = self._require_session()
        obj = self.current_object
        if s is None:
            return
        if obj is None:
            show_warning("Pick the object you painted in the objects list first.")
            return
        frame = self.current_frame()
        painted = np.asarray(self._layer(MASKS).data[frame])
        before = s.labels[frame]
        diff = painted != before
        others = set(np.unique(painted[diff]).tolist()) - {0, obj}
        erased = set(np.unique(before[diff & (painted == 0)]).tolist()) - {0, obj}
        name = s.objects[obj].name
        if others or erased:
            who = ", ".join(
                s.objects[o].name if o in s.objects else str(o) for o in others | erased
            )
            show_warning(
                f"Frame {frame} was painted for {who}, but the current object is {name}: "
                f"nothing changed. Select {who} to use that paint, or undo it."
            )
            return
        if not diff.any():
            show_warning(f"Nothing painted for {name} on frame {frame}.")
            return
        mask = painted == obj
        if self._session_call(lambda: s.set_mask(frame, obj, mask))[0]:
            show_info(f"Painted mask of {name} on frame {frame} used ({int(mask.sum())} px).")
        self._rebuild_points()
        self.refresh_labels([frame])
        self._prompts_ready()
