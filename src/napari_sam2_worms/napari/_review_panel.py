"""Review panel: flag events with next / previous, head-tail flips, skeleton display."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from ._layers import FlagEvent

if TYPE_CHECKING:
    from ._widget import TrackerWidget


class ReviewPanel(QGroupBox):
    """Flag events to check (runs of flagged frames of one object and kind), head/tail flips."""

    def __init__(self, host: TrackerWidget, parent: QWidget | None = None) -> None:
        super().__init__("4. Review", parent)
        self.host = host
        self.flags: list[FlagEvent] = []
        lay = QVBoxLayout(self)
        self.update_button = update = QPushButton("Update flags")
        update.clicked.connect(lambda: host.update_flags())
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
            lambda: host.flip_head_tail(self.flip_start.value(), self.flip_stop.value())
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
        self.show_skeletons.toggled.connect(lambda _: host.refresh_skeletons())
        lay.addWidget(update)
        lay.addWidget(self.list)
        lay.addLayout(nav)
        lay.addLayout(frow)
        self.swap = SwapIdentities(host)  # two objects exchange identities
        lay.addWidget(self.swap)
        lay.addWidget(self.show_skeletons)

    def set_frames(self, n_frames: int) -> None:
        for s in (self.flip_start, self.flip_stop):
            s.setRange(0, max(n_frames - 1, 0))
        self.flip_stop.setValue(max(n_frames - 1, 0))

    def set_flags(self, flags: list[FlagEvent], names: dict) -> None:
        self.flags = list(flags)
        self.list.blockSignals(True)
        self.list.clear()
        self.list.addItems([f.text(names) for f in self.flags])
        self.list.blockSignals(False)

    def goto(self, row: int) -> None:
        if 0 <= row < len(self.flags):
            flag = self.flags[row]
            self.host.goto(flag.frame, flag.object_id)

    def step(self, delta: int) -> None:
        """Go to the next (+1) / previous (-1) event: the first one starting after / before
        the selected one (or the current frame), wrapping around."""
        if not self.flags:
            return
        n = len(self.flags)
        row = self.list.currentRow()
        frame = self.host.current_frame()
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
