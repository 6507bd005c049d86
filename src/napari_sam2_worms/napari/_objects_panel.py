"""Objects panel: add, remove, rename and pick the current object; negative-click toggle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from ._widget import TrackerWidget


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
        add.clicked.connect(lambda: host.add_object(self.name.text().strip() or None))
        remove.clicked.connect(lambda: host.remove_object(self.current()))
        rename.clicked.connect(lambda: host.rename_object(self.current(), self.name.text()))
        self.detect_button.clicked.connect(lambda: host.detect_objects())
        row = QHBoxLayout()
        for b in (add, remove, rename):
            row.addWidget(b)
        self.negative = QCheckBox("Negative clicks (key n)")
        self.negative.toggled.connect(lambda _: host.update_point_defaults())
        lay.addWidget(self.list)
        lay.addWidget(self.name)
        lay.addLayout(row)
        lay.addWidget(self.detect_button)
        lay.addWidget(self.negative)
        self.list.currentRowChanged.connect(lambda _: host.update_point_defaults())

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
