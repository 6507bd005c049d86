"""Review panel: flagged frames with next / previous, head-tail flips, skeleton display."""

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

from ._layers import Flag

if TYPE_CHECKING:
    from ._widget import TrackerWidget


class ReviewPanel(QGroupBox):
    """Flagged frames to check, and head/tail flips."""

    def __init__(self, host: TrackerWidget, parent: QWidget | None = None) -> None:
        super().__init__("4. Review", parent)
        self.host = host
        self.flags: list[Flag] = []
        lay = QVBoxLayout(self)
        update = QPushButton("Update flags")
        update.clicked.connect(lambda: host.update_flags())
        self.list = QListWidget()
        self.list.setMaximumHeight(120)
        self.list.itemDoubleClicked.connect(lambda _: self.goto(self.list.currentRow()))
        self.list.currentRowChanged.connect(self.goto)
        prev = QPushButton("◀ Previous")
        nxt = QPushButton("Next ▶")
        prev.clicked.connect(lambda: self.step(-1))
        nxt.clicked.connect(lambda: self.step(+1))
        nav = QHBoxLayout()
        nav.addWidget(prev)
        nav.addWidget(nxt)
        self.flip_start = QSpinBox()
        self.flip_stop = QSpinBox()
        flip = QPushButton("Flip head/tail")
        flip.setToolTip("Swap head and tail of the current object over frames start..stop")
        flip.clicked.connect(
            lambda: host.flip_head_tail(self.flip_start.value(), self.flip_stop.value())
        )
        frow = QHBoxLayout()
        frow.addWidget(self.flip_start)
        frow.addWidget(self.flip_stop)
        frow.addWidget(flip)
        self.all_frames = QCheckBox("Skeletons on all frames")
        self.all_frames.toggled.connect(lambda _: host.refresh_skeletons())
        lay.addWidget(update)
        lay.addWidget(self.list)
        lay.addLayout(nav)
        lay.addLayout(frow)
        lay.addWidget(self.all_frames)

    def set_frames(self, n_frames: int) -> None:
        for s in (self.flip_start, self.flip_stop):
            s.setRange(0, max(n_frames - 1, 0))
        self.flip_stop.setValue(max(n_frames - 1, 0))

    def set_flags(self, flags: list[Flag], names: dict) -> None:
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
        """Go to the next (+1) / previous (-1) flagged frame after / before the current one."""
        if not self.flags:
            return
        frame = self.host.current_frame()
        frames = sorted({f.frame for f in self.flags})
        if delta > 0:
            target = next((f for f in frames if f > frame), frames[0])
        else:
            target = next((f for f in reversed(frames) if f < frame), frames[-1])
        row = next(i for i, f in enumerate(self.flags) if f.frame == target)
        self.list.setCurrentRow(row)
        self.goto(row)
