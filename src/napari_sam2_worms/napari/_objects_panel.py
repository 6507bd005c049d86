"""Objects panel: add, remove, rename and pick the current object; negative-click toggle."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
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
    from ._widget import TrackerWidget

ANIMALS = ("worm", "fly", "mouse")
WORM_MIN_ELONGATION = 2.5  # length over width: drops round specks, keeps coiled worms


class ObjectsPanel(QGroupBox):
    """The list of tracked objects, each with its colour."""

    def __init__(self, host: TrackerWidget, parent: QWidget | None = None) -> None:
        super().__init__("2. Objects and prompts", parent)
        self.host = host
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
        add.clicked.connect(lambda: host.add_object(self.name.text().strip() or self.new_name()))
        remove.clicked.connect(lambda: host.remove_object(self.current()))
        rename.clicked.connect(lambda: host.rename_object(self.current(), self.name.text()))
        self.detect_button.clicked.connect(self.detect_all)
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
        self.negative.toggled.connect(lambda _: host.update_point_defaults())
        lay.addWidget(self.list)
        lay.addWidget(self.name)
        lay.addLayout(row)
        filt = QHBoxLayout()
        for w in (self.animal, self.min_area, self.max_area):
            filt.addWidget(w)
        lay.addWidget(self.detect_button)
        lay.addLayout(filt)
        lay.addWidget(self.negative)
        self.list.currentRowChanged.connect(lambda _: host.update_point_defaults())

    def animal_name(self) -> str:
        """The animal name for new objects ("worm" when the combo is empty)."""
        return self.animal.currentText().strip() or "worm"

    def new_name(self) -> str | None:
        """``<animal><next id>`` (None without a session: the host reports that)."""
        s = self.host.session
        if s is None:
            return None
        return f"{self.animal_name()}{max(s.objects, default=0) + 1}"

    def detect_all(self) -> None:
        """One object and one click per animal on this frame, filtered by size/shape."""
        from napari.utils.notifications import show_info, show_warning

        host = self.host
        s = host._require_session()
        if s is None:
            return
        if not hasattr(s.backend, "detect"):
            show_warning("Detection needs the classic backend; click on each animal instead.")
            return
        lo, hi = self.min_area.value() or None, self.max_area.value() or None
        if lo is not None and hi is not None and hi < lo:
            show_warning(f"Detect all: the max area ({hi} px) is below the min area ({lo} px).")
            return
        kw = {"min_area": lo, "max_area": hi}
        if self.animal_name() == "worm":
            kw["min_elongation"] = WORM_MIN_ELONGATION
        frame = host.current_frame()
        found = s.backend.detect(frame, **kw)
        if not found:
            show_info(f"Detect all: no {self.animal_name()} on frame {frame} in this size range.")
            return
        points = host._layer("prompts")
        for x, y in found:
            host.add_object(self.new_name())
            points.add(np.array([frame, y, x], float))  # same path as a click

    def current(self) -> int | None:
        """The id of the selected object, or None."""
        item = self.list.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def select(self, object_id: int) -> None:
        for i in range(self.list.count()):
            if int(self.list.item(i).data(Qt.ItemDataRole.UserRole)) == object_id:
                self.list.setCurrentRow(i)
                return

    def refresh(self, objects: dict) -> None:
        """Rebuild the list from ``session.objects``, keeping the selection."""
        keep = self.current()
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
        self.host.update_point_defaults()
