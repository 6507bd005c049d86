"""The review panel's "Swap identities" control: two objects exchange identities from the
current frame (to the end, or to a chosen frame).

The control only adapts: :func:`swap_identities_in` calls
:meth:`TrackingSession.swap_identities` in a worker (SAM 2 re-encodes the new mask
prompts) and, on the main thread, shows the swapped masks and prompts; skeletons and
flags follow from the masks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from ..engine.identity import SwapResult
    from ._widget import TrackerWidget

#: the "to" frame that means "to the video's end"
TO_END = -1


class ObjectCombo(QComboBox):
    """An object picker listing the session's objects (by name, object id as data)."""

    def __init__(self, host: TrackerWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.setMinimumContentsLength(6)

    def object_id(self) -> int | None:
        data = self.currentData()
        return None if data is None else int(data)

    def refresh(self, prefer: int | None = None) -> None:
        """List the objects again, keeping ``prefer`` (default: the current pick)."""
        s = self.host.session
        keep = self.object_id() if prefer is None else prefer
        self.blockSignals(True)
        try:
            self.clear()
            for oid in sorted(s.objects) if s is not None else []:
                self.addItem(s.objects[oid].name, oid)
            i = self.findData(keep) if keep is not None else -1
            self.setCurrentIndex(i if i >= 0 else min(self.count() - 1, 0))
        finally:
            self.blockSignals(False)

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()


class SwapIdentities(QWidget):
    """Swap [object] with [object] from the current frame to [end | frame]."""

    def __init__(self, host: TrackerWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.first = ObjectCombo(host)
        self.second = ObjectCombo(host)
        self.first.setToolTip("The object whose track went onto the other animal")
        self.second.setToolTip("The object it swapped with")
        self.until = QSpinBox()
        self.until.setRange(TO_END, 10**7)
        self.until.setSpecialValueText("end")
        self.until.setValue(TO_END)
        self.until.setToolTip("Last frame swapped ('end': to the video's end)")
        self.button = QPushButton("Swap identities")
        self.button.setToolTip(
            "The two objects exchange masks, prompts and flips from the current frame on; "
            "the swapped masks become their prompts there, so re-propagating keeps the fix"
        )
        self.button.clicked.connect(self.swap)
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Swap"))
        pick.addWidget(self.first, 1)
        pick.addWidget(QLabel("⇄"))
        pick.addWidget(self.second, 1)
        run = QHBoxLayout()
        run.addWidget(QLabel("from this frame to"))
        run.addWidget(self.until)
        run.addWidget(self.button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(pick)
        lay.addLayout(run)
        # follow the objects list: its current object is the first pick
        objects = getattr(getattr(host, "objects_panel", None), "list", None)
        if objects is not None:
            objects.currentRowChanged.connect(lambda _: self.refresh(follow=True))
            model = objects.model()
            for signal in (model.rowsInserted, model.rowsRemoved, model.dataChanged):
                signal.connect(lambda *_: self.refresh())

    def refresh(self, follow: bool = False) -> None:
        """List the objects; the first pick is the current object (with ``follow``, or
        when none is picked), the second another one."""
        s = self.host.session
        current = getattr(self.host, "current_object", None)
        first = current if (follow or self.first.object_id() is None) else None
        self.first.refresh(first)
        second = self.second.object_id()
        partner = _suspect_partner(self.host, self.first.object_id()) if follow else None
        if partner is not None:
            second = partner  # on an identity suspect flag: the other object flagged there
        if s is not None and (second is None or second == self.first.object_id()):
            others = [o for o in sorted(s.objects) if o != self.first.object_id()]
            second = others[0] if others else None
        self.second.refresh(second)
        if s is not None:
            self.until.setMaximum(s.n_frames - 1)

    def swap(self) -> None:
        if self.first.object_id() is None or self.second.object_id() is None:
            self.refresh()
        until = self.until.value()
        swap_identities_in(
            self.host,
            self.first.object_id(),
            self.second.object_id(),
            self.host.current_frame(),
            None if until == TO_END else until,
        )


def _suspect_partner(host: TrackerWidget, obj: int | None) -> int | None:
    """The other object flagged "identity suspect" on the current frame with ``obj``
    (from the review list, else from the tracks on screen)."""
    from ..skeleton.identity import IDENTITY_SUSPECT

    if obj is None:
        return None
    frame = host.current_frame()
    listed = getattr(getattr(host, "review_panel", None), "flags", None) or []
    here = {
        int(f.object_id)
        for f in listed
        if getattr(f, "frame", None) == frame
        and IDENTITY_SUSPECT in str(getattr(f, "kind", getattr(f, "reason", "")))
    }
    tracks = getattr(host, "tracks", None)
    if tracks is not None:
        rows = np.flatnonzero(np.asarray(tracks.frames) == frame)
        if len(rows):
            flagged = np.asarray(tracks.reason[rows[0]]) == IDENTITY_SUSPECT
            here |= {int(o) for o in np.asarray(tracks.object_ids)[flagged]}
    others = sorted(here - {obj})
    return others[0] if obj in here and others else None


def swap_identities_in(
    host: TrackerWidget, a: int | None, b: int | None, start: int, stop: int | None = None
) -> None:
    """Swap objects ``a`` and ``b`` on frames ``start..stop`` in ``host``'s session (in a
    worker), then show the new masks and prompts; a refusal is a notification."""
    s = host.session
    if s is None:
        show_warning("Load a model first (section 1, 'Load model').")
        return
    if a is None or b is None or a == b:
        show_warning("Pick two different objects to swap.")
        return
    if host.running:
        show_warning("Wait for the propagation to finish (or cancel it), then swap.")
        return
    names = {o: obj.name for o, obj in s.objects.items()}

    def done(result: SwapResult) -> None:
        last = min(result.stop + 1, s.n_frames - 1)
        host._rebuild_points()
        host.refresh_labels(range(result.start, last + 1))
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
        panel = getattr(host, "review_panel", None)
        if panel is not None and getattr(panel, "flags", None):
            host.update_flags()  # the listed flags were those before the swap

    host.run_work(lambda: s.swap_identities(a, b, start, stop), on_return=done)
