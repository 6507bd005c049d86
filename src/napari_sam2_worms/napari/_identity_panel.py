"""The review panel's "Swap identities" control.

Two objects exchange identities from the current frame (to the end, or to a chosen
frame). The control knows no widget and no session: it lists the objects it is given
(:meth:`SwapIdentities.set_objects`), follows the current object
(:meth:`SwapIdentities.follow`, with the partner :func:`suspect_partner` finds) and emits
:attr:`SwapIdentities.swap_requested`; the widget runs
:meth:`TrackingSession.swap_identities` in a worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Signal
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
    from collections.abc import Iterable, Mapping

    from ..tracks import SkeletonTracks
    from ._layers import FlagEvent

#: the "to" frame that means "to the video's end"
TO_END = -1


class ObjectCombo(QComboBox):
    """An object picker listing objects by name (object id as data)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumContentsLength(6)

    def object_id(self) -> int | None:
        """Return the picked object's id (None when the list is empty)."""
        data = self.currentData()
        return None if data is None else int(data)

    def show_objects(self, names: Mapping[int, str], prefer: int | None = None) -> None:
        """List ``names`` (id -> name) again, keeping ``prefer`` (default: the current pick)."""
        keep = self.object_id() if prefer is None else prefer
        self.blockSignals(True)
        try:
            self.clear()
            for oid in sorted(names):
                self.addItem(names[oid], oid)
            i = self.findData(keep) if keep is not None else -1
            self.setCurrentIndex(i if i >= 0 else min(self.count() - 1, 0))
        finally:
            self.blockSignals(False)


class SwapIdentities(QWidget):
    """Swap [object] with [object] from the current frame to [end | frame].

    Signals
    -------
    swap_requested(a, b, stop)
        "Swap identities": objects ``a`` and ``b`` (None when not picked) from the current
        frame to ``stop`` (None: to the end).
    """

    swap_requested = Signal(object, object, object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._names: dict[int, str] = {}
        self._current: int | None = None
        self.first = ObjectCombo()
        self.second = ObjectCombo()
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

    def set_objects(self, names: Mapping[int, str], n_frames: int) -> None:
        """Show the session's objects (id -> name) and its length (the "to" frame's max)."""
        self._names = {int(o): str(n) for o, n in names.items()}
        self.until.setMaximum(n_frames - 1)
        self._show()

    def follow(self, current: int | None, partner: int | None = None) -> None:
        """Make ``current`` (the new current object) the first pick.

        ``partner`` (the object flagged "identity suspect" with it here), when given, is
        the second.
        """
        self._current = current
        self._show(follow=True, partner=partner)

    def _show(self, follow: bool = False, partner: int | None = None) -> None:
        """List the objects and pick two.

        The first pick is the current object (with ``follow``, or when none is picked),
        the second ``partner`` or another one.
        """
        first = self._current if (follow or self.first.object_id() is None) else None
        self.first.show_objects(self._names, first)
        second = partner if partner is not None else self.second.object_id()
        if second is None or second == self.first.object_id():
            others = [o for o in sorted(self._names) if o != self.first.object_id()]
            second = others[0] if others else None
        self.second.show_objects(self._names, second)

    def swap(self) -> None:
        """Emit :attr:`swap_requested` with the picks (listing the objects first if needed)."""
        if self.first.object_id() is None or self.second.object_id() is None:
            self._show()
        until = self.until.value()
        self.swap_requested.emit(
            self.first.object_id(), self.second.object_id(), None if until == TO_END else until
        )


def suspect_partner(
    frame: int,
    obj: int | None,
    flags: Iterable[FlagEvent] = (),
    tracks: SkeletonTracks | None = None,
) -> int | None:
    """Return the other object flagged "identity suspect" with ``obj`` on ``frame``.

    It is looked up in the listed ``flags``, then in the ``tracks`` on screen; None when
    there is none.
    """
    from ..skeleton.identity import IDENTITY_SUSPECT

    if obj is None:
        return None
    here = {
        int(f.object_id)
        for f in flags
        if getattr(f, "frame", None) == frame
        and IDENTITY_SUSPECT in str(getattr(f, "kind", getattr(f, "reason", "")))
    }
    if tracks is not None:
        rows = np.flatnonzero(np.asarray(tracks.frames) == frame)
        if len(rows):
            flagged = np.asarray(tracks.reason[rows[0]]) == IDENTITY_SUSPECT
            here |= {int(o) for o in np.asarray(tracks.object_ids)[flagged]}
    others = sorted(here - {obj})
    return others[0] if obj in here and others else None
