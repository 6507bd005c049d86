"""Review panel: flag events with next / previous, head-tail flips, skeleton display.

Like movement's napari sub-widgets, the panel takes only the viewer (for the frame on
screen); it knows no widget: it lists the flag events it is given
(:meth:`ReviewPanel.set_flags`) and its buttons emit signals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._identity_panel import SwapIdentities

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import napari

    from ._layers import FlagEvent


class ReviewPanel(QGroupBox):
    """Flag events to check (runs of flagged frames of one object and kind), head/tail flips.

    Signals
    -------
    update_requested
        "Update flags".
    goto_requested(frame, object_id)
        An event was picked (list, Next, Previous): show that frame and object.
    flip_requested(start, stop)
        "Flip head/tail" of the current object over frames start..stop.
    skeletons_toggled(shown)
        "Show centerlines and heads" was toggled.
    swap_requested(a, b, stop)
        "Swap identities" (see :class:`~._identity_panel.SwapIdentities`).
    """

    update_requested = Signal()
    goto_requested = Signal(int, object)
    flip_requested = Signal(int, int)
    skeletons_toggled = Signal(bool)
    swap_requested = Signal(object, object, object)

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__("4. Review", parent)
        self.viewer = viewer
        self._flags: tuple[FlagEvent, ...] = ()
        lay = QVBoxLayout(self)
        self.update_button = update = QPushButton("Update flags")
        update.clicked.connect(lambda: self.update_requested.emit())
        self.list = QListWidget()
        self.list.setMaximumHeight(120)
        self.list.itemDoubleClicked.connect(lambda _: self.goto(self.list.currentRow()))
        self.list.currentRowChanged.connect(self.goto)
        self.prev_button = prev = QPushButton("◀ Previous")
        self.next_button = nxt = QPushButton("Next ▶")
        prev.clicked.connect(lambda: self.step(-1))
        nxt.clicked.connect(lambda: self.step(+1))
        nav = QHBoxLayout()
        nav.addWidget(prev)
        nav.addWidget(nxt)
        self.flip_start = QSpinBox()
        self.flip_stop = QSpinBox()
        self.flip_button = flip = QPushButton("Flip head/tail")
        flip.setToolTip("Swap head and tail of the current object over frames start..stop")
        flip.clicked.connect(
            lambda: self.flip_requested.emit(self.flip_start.value(), self.flip_stop.value())
        )
        frow = QHBoxLayout()
        frow.addWidget(self.flip_start)
        frow.addWidget(self.flip_stop)
        frow.addWidget(flip)
        self.show_skeletons = QCheckBox("Show centerlines and heads")
        self.show_skeletons.setToolTip(
            "The skeleton tracks the export writes (oriented over time, with your flips)"
        )
        self.show_skeletons.setChecked(True)
        self.show_skeletons.toggled.connect(self.skeletons_toggled.emit)
        lay.addWidget(update)
        lay.addWidget(self.list)
        lay.addLayout(nav)
        lay.addLayout(frow)
        self.swap = SwapIdentities()  # two objects exchange identities
        self.swap.swap_requested.connect(self.swap_requested.emit)
        lay.addWidget(self.swap)
        lay.addWidget(self.show_skeletons)

    @property
    def flags(self) -> tuple[FlagEvent, ...]:
        """The flag events listed, in the list's order."""
        return self._flags

    @property
    def skeletons_shown(self) -> bool:
        """True when "Show centerlines and heads" is checked."""
        return self.show_skeletons.isChecked()

    def show_objects(self, names: Mapping[int, str], n_frames: int) -> None:
        """Show the session's objects (id -> name) in the swap control."""
        self.swap.set_objects(names, n_frames)

    def follow(self, current: int | None, partner: int | None = None) -> None:
        """Make the current object (and ``partner``) the swap control's picks."""
        self.swap.follow(current, partner)

    def set_frames(self, n_frames: int) -> None:
        """Let the flip range span the video's ``n_frames`` frames (the whole video chosen)."""
        for s in (self.flip_start, self.flip_stop):
            s.setRange(0, max(n_frames - 1, 0))
        self.flip_stop.setValue(max(n_frames - 1, 0))

    def set_flags(self, flags: Iterable[FlagEvent], names: Mapping[int, str]) -> None:
        """List the flag ``events`` (object names from ``names``: id -> name)."""
        self._flags = tuple(flags)
        self.list.blockSignals(True)
        self.list.clear()
        self.list.addItems([f.text(dict(names)) for f in self.flags])
        self.list.blockSignals(False)

    def goto(self, row: int) -> None:
        """Emit :attr:`goto_requested` for the event on ``row`` (nothing off the list)."""
        if 0 <= row < len(self.flags):
            flag = self.flags[row]
            self.goto_requested.emit(flag.frame, flag.object_id)

    def _frame(self) -> int:
        step = self.viewer.dims.current_step
        return int(step[0]) if len(step) else 0

    def step(self, delta: int) -> None:
        """Go to the next (+1) / previous (-1) event.

        That is the first one starting after / before the selected one (or the current
        frame), wrapping around.
        """
        if not self.flags:
            return
        n = len(self.flags)
        row = self.list.currentRow()
        frame = self._frame()
        if not (0 <= row < n and self.flags[row].frame == frame):
            # nothing selected here: the first event after (before) the frame on screen
            starts = [e.frame for e in self.flags]
            if delta > 0:
                row = next((i for i, f in enumerate(starts) if f > frame), 0)
            else:
                row = next((i for i in range(n - 1, -1, -1) if starts[i] < frame), n - 1)
        else:
            row = (row + (1 if delta > 0 else -1)) % n
        self.list.setCurrentRow(row)
        self.goto(row)
