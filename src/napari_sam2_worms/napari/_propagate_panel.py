"""Propagate and correct panel: direction / range, progress, cancel, painted-mask correction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

if TYPE_CHECKING:
    from ._widget import TrackerWidget

DIRECTIONS = ("forward", "backward", "both", "range")


class PropagatePanel(QGroupBox):
    """Run tracking over frames and correct it."""

    def __init__(self, host: TrackerWidget, parent: QWidget | None = None) -> None:
        super().__init__("3. Propagate and correct", parent)
        self.host = host
        form = QFormLayout(self)
        self.direction = QComboBox()
        self.direction.addItems(list(DIRECTIONS))
        self.start = QSpinBox()
        self.stop = QSpinBox()
        for s in (self.start, self.stop):
            s.setRange(0, 0)
        rng = QHBoxLayout()
        rng.addWidget(self.start)
        rng.addWidget(self.stop)
        self.run_button = QPushButton("Propagate")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(lambda: host.propagate())
        self.cancel_button.clicked.connect(lambda: host.cancel())
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.paint_button = QPushButton("Use painted mask")
        self.paint_button.setToolTip(
            "Use what you painted in the masks layer for the current object on this frame"
        )
        self.repropagate_button = QPushButton("Re-propagate from here")
        self.paint_button.clicked.connect(lambda: host.use_painted_mask())
        self.repropagate_button.clicked.connect(lambda: host.repropagate())
        fix = QHBoxLayout()
        fix.addWidget(self.paint_button)
        fix.addWidget(self.repropagate_button)
        form.addRow("Direction", self.direction)
        self.start.setToolTip("first frame of the range (direction 'range')")
        self.stop.setToolTip("last frame of the range (direction 'range')")
        form.addRow("Range", rng)
        form.addRow(row)
        form.addRow(self.progress)
        form.addRow(fix)
        self.direction.currentTextChanged.connect(self._direction_changed)
        self._direction_changed(self.direction.currentText())

    def _direction_changed(self, text: str) -> None:
        self.start.setEnabled(text == "range")
        self.stop.setEnabled(text == "range")

    def set_frames(self, n_frames: int) -> None:
        for s in (self.start, self.stop):
            s.setRange(0, max(n_frames - 1, 0))
        self.stop.setValue(max(n_frames - 1, 0))

    def running(self, on: bool) -> None:
        for b in (self.run_button, self.paint_button, self.repropagate_button):
            b.setEnabled(not on)
        self.cancel_button.setEnabled(on)
        self.progress.setFormat("%v / %m")

    def show_progress(self, done: int, total: int) -> None:
        """Frames done of the run (a cheap call: the widget throttles it)."""
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))

    def cancelling(self) -> None:
        """Say "Cancelling…" until the worker has stopped (then :meth:`running` resets it)."""
        self.cancel_button.setEnabled(False)
        self.progress.setFormat("Cancelling…")
        if self.progress.maximum() == 0:  # busy indicator: show the text
            self.progress.setRange(0, 1)
