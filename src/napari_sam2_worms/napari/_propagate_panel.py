"""Propagate and correct panel: direction / range, progress, cancel, painted-mask correction.

The panel knows no widget: its buttons emit signals, :meth:`PropagatePanel.selection`
says what to run, and the widget shows a run's state with :meth:`PropagatePanel.running`,
:meth:`PropagatePanel.show_progress` and :meth:`PropagatePanel.cancelling`.
"""

from __future__ import annotations

from qtpy.QtCore import Signal
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

DIRECTIONS = ("forward", "backward", "both", "range")


class PropagatePanel(QGroupBox):
    """Run tracking over frames and correct it.

    Signals
    -------
    propagate_requested, cancel_requested
        "Propagate" (what to run: :meth:`selection`) / "Cancel".
    paint_requested, repropagate_requested
        "Use painted mask" / "Re-propagate from here" (direction: :meth:`repropagate_direction`).
    """

    propagate_requested = Signal()
    cancel_requested = Signal()
    paint_requested = Signal()
    repropagate_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("3. Propagate and correct", parent)
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
        self.run_button.clicked.connect(lambda: self.propagate_requested.emit())
        self.cancel_button.clicked.connect(lambda: self.cancel_requested.emit())
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
        self.paint_button.clicked.connect(lambda: self.paint_requested.emit())
        self.repropagate_button.clicked.connect(lambda: self.repropagate_requested.emit())
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

    # -- values --------------------------------------------------------------------------
    def selection(self, direction: str | None = None) -> tuple[str, int | None, int | None]:
        """Return what "Propagate" runs: (direction, start, stop).

        ``direction`` defaults to the chosen one; a range is forward or backward between
        the range's two frames, the other directions have no start or stop.
        """
        direction = direction or self.direction.currentText()
        if direction != "range":
            return direction, None, None
        a, b = self.start.value(), self.stop.value()
        return ("forward", a, b) if b >= a else ("backward", a, b)

    def repropagate_direction(self, direction: str | None = None) -> str:
        """Return the direction of "Re-propagate from here".

        Default: the chosen one; a range re-propagates forward.
        """
        direction = direction or self.direction.currentText()
        return "forward" if direction == "range" else direction

    # -- showing -------------------------------------------------------------------------
    def set_frames(self, n_frames: int) -> None:
        """Let the range span the video's ``n_frames`` frames (the whole video chosen)."""
        for s in (self.start, self.stop):
            s.setRange(0, max(n_frames - 1, 0))
        self.stop.setValue(max(n_frames - 1, 0))

    def running(self, on: bool) -> None:
        """Show a run starting (busy bar, only Cancel enabled) or ended."""
        for b in (self.run_button, self.paint_button, self.repropagate_button):
            b.setEnabled(not on)
        self.cancel_button.setEnabled(on)
        self.progress.setFormat("%v / %m")
        if on:
            self.progress.setRange(0, 0)  # busy until the first frame is done

    def show_progress(self, done: int, total: int) -> None:
        """Show frames done of the run (a cheap call: the widget throttles it)."""
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))

    def cancelling(self) -> None:
        """Say "Cancelling…" until the worker has stopped (then :meth:`running` resets it)."""
        self.cancel_button.setEnabled(False)
        self.progress.setFormat("Cancelling…")
        if self.progress.maximum() == 0:  # busy indicator: show the text
            self.progress.setRange(0, 1)
