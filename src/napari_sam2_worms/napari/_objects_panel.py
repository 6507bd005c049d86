"""Objects panel: add, remove, rename and pick the current object; negative-click toggle.

The panel knows no widget and no session: it shows the objects it is given
(:meth:`ObjectsPanel.refresh`) and says what the user asked for through Qt signals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..engine.session import TrackedObject

ANIMALS = ("worm", "fly", "mouse")
WORM_MIN_ELONGATION = 2.5  # length over width: drops round specks, keeps coiled worms


class ObjectsPanel(QGroupBox):
    """The list of tracked objects, each with its colour.

    Signals
    -------
    add_requested(name)
        "Add": the typed name, else ``<animal><next id>`` (None before any session).
    remove_requested(object_id), rename_requested(object_id, name)
        "Remove" / "Rename" of the selected object (None when none is selected).
    detect_requested(filter)
        "Detect all": the keyword arguments of ``backend.detect`` (areas, elongation).
    current_changed(object_id)
        The selected object changed (or the list was rebuilt): None when none.
    negative_changed(negative)
        "Negative clicks" was toggled.
    """

    add_requested = Signal(object)
    remove_requested = Signal(object)
    rename_requested = Signal(object, str)
    detect_requested = Signal(dict)
    current_changed = Signal(object)
    negative_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("2. Objects and prompts", parent)
        self._ids: list[int] | None = None  # the objects shown (None: no session yet)
        lay = QVBoxLayout(self)
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.name = QLineEdit()
        self.name.setPlaceholderText("name")
        self.add_button = add = QPushButton("Add")
        self.remove_button = remove = QPushButton("Remove")
        self.rename_button = rename = QPushButton("Rename")
        self.detect_button = QPushButton("Detect all (classic)")
        self.detect_button.setToolTip("Add one object with a click per animal found on this frame")
        add.clicked.connect(
            lambda: self.add_requested.emit(self.name.text().strip() or self.new_name())
        )
        remove.clicked.connect(lambda: self.remove_requested.emit(self.current()))
        rename.clicked.connect(lambda: self.rename_requested.emit(self.current(), self.name.text()))
        self.detect_button.clicked.connect(self._detect_clicked)
        self.animal = QComboBox()
        self.animal.setEditable(True)
        self.animal.addItems(ANIMALS)
        self.animal.setToolTip("Animal name for new objects (worm1, fly1...); type any name")
        self.min_area = QSpinBox()
        self.max_area = QSpinBox()
        for box, what in ((self.min_area, "min"), (self.max_area, "max")):
            box.setRange(0, 10_000_000)
            box.setSingleStep(50)
            box.setSpecialValueText("auto")
            box.setPrefix(f"{what} ")
            box.setSuffix(" px")
            box.setToolTip(
                f"Detect all: {what}imum blob area in pixels (auto = 0.3x / 5x the typical "
                "animal); worms must also be long (length over width >= 2.5)"
            )
        row = QHBoxLayout()
        for b in (add, remove, rename):
            row.addWidget(b)
        self.negative = QCheckBox("Negative clicks (key n)")
        self.negative.toggled.connect(self.negative_changed.emit)
        lay.addWidget(self.list)
        lay.addWidget(self.name)
        lay.addLayout(row)
        filt = QHBoxLayout()
        for w in (self.animal, self.min_area, self.max_area):
            filt.addWidget(w)
        lay.addWidget(self.detect_button)
        lay.addLayout(filt)
        lay.addWidget(self.negative)
        self.list.currentRowChanged.connect(lambda _: self.current_changed.emit(self.current()))

    # -- values --------------------------------------------------------------------------
    @property
    def negative_clicks(self) -> bool:
        """True when new clicks are negative ("Negative clicks" checked)."""
        return self.negative.isChecked()

    def toggle_negative(self) -> None:
        """Flip "Negative clicks" (the key n)."""
        self.negative.setChecked(not self.negative.isChecked())

    def animal_name(self) -> str:
        """Return the animal name for new objects ("worm" when the combo is empty)."""
        return self.animal.currentText().strip() or "worm"

    def new_name(self) -> str | None:
        """Return ``<animal><next id>`` (None before any session: the widget says so)."""
        if self._ids is None:
            return None
        return f"{self.animal_name()}{max(self._ids, default=0) + 1}"

    def detect_filter(self) -> dict | None:
        """Return the size/shape filter of "Detect all".

        None (with a message) when the max area is below the min area.
        """
        lo, hi = self.min_area.value() or None, self.max_area.value() or None
        if lo is not None and hi is not None and hi < lo:
            show_warning(f"Detect all: the max area ({hi} px) is below the min area ({lo} px).")
            return None
        kw: dict = {"min_area": lo, "max_area": hi}
        if self.animal_name() == "worm":
            kw["min_elongation"] = WORM_MIN_ELONGATION
        return kw

    def _detect_clicked(self) -> None:
        kw = self.detect_filter()
        if kw is not None:
            self.detect_requested.emit(kw)

    def current(self) -> int | None:
        """Return the id of the selected object, or None."""
        item = self.list.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    # -- showing -------------------------------------------------------------------------
    def select(self, object_id: int) -> None:
        """Select ``object_id`` in the list (nothing when it is not listed)."""
        for i in range(self.list.count()):
            if int(self.list.item(i).data(Qt.ItemDataRole.UserRole)) == object_id:
                self.list.setCurrentRow(i)
                return

    def refresh(self, objects: Mapping[int, TrackedObject]) -> None:
        """Rebuild the list from ``session.objects``, keeping the selection.

        Then :attr:`current_changed` is emitted (the colours or the selection may be new).
        """
        keep = self.current()
        self._ids = [int(o) for o in objects]
        self.list.blockSignals(True)
        self.list.clear()
        for oid, obj in sorted(objects.items()):
            pix = QPixmap(12, 12)
            pix.fill(QColor(obj.color))
            item = QListWidgetItem(QIcon(pix), f"{oid}: {obj.name}")
            item.setData(Qt.ItemDataRole.UserRole, int(oid))
            self.list.addItem(item)
        self.list.blockSignals(False)
        if keep in objects:
            self.select(keep)
        elif objects:
            self.select(max(objects))
        self.current_changed.emit(self.current())
