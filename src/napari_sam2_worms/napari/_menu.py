"""Menu commands: export skeleton tracks, save session, open session.

Each command takes the viewer (napari passes a ``PublicOnlyProxy`` of it) and finds the
viewer's tracker widget (and its session). The ``*_to`` / ``*_from`` functions do the work
without dialogs (scripts).

A manual save goes to the folder the user chose and is never overwritten by the autosave
after a propagation, which keeps to its own folder (see ``engine.session_io.autosave_dir``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

# napari resolves the commands' type hints at run time (it injects the viewer)
import napari  # noqa: TC002
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from ._registry import widget_for

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..engine.session import TrackingSession
    from ._widget import TrackerWidget

log = logging.getLogger(__name__)


def _session_widget(viewer) -> TrackerWidget | None:
    try:
        widget = widget_for(viewer)
    except LookupError as exc:
        show_warning(str(exc))
        return None
    if widget.session is None:
        show_warning("There is no tracking session yet: load a model in the tracker first.")
        return None
    return widget


# -- export -------------------------------------------------------------------------------
def export_tracks_to(
    widget: TrackerWidget,
    path: str | Path,
    fmt: str,
    *,
    pixel_size: float | None = None,
    objects: Iterable[int] | None = None,
    frames: tuple[int, int] | None = None,
    units: str = "px",
    include_flagged: bool = False,
    species: str | None = None,
    age: str | None = None,
    sex: str | None = None,
) -> Path:
    """Write the widget's session to ``path`` in ``fmt``.

    ``fmt`` is a format of :data:`napari_sam2_worms.export.FORMATS` (skeleton tracks,
    masks or the overlay video). ``species``, ``age``, ``sex`` describe the subject of an
    NWB file (see :class:`napari_sam2_worms.export.nwb.NwbSubject`; empty: the honest
    defaults).
    """
    from ..export import FORMATS, export_tracks
    from ..export.nwb import NwbSubject

    s = widget.session
    if s is None:
        raise LookupError("there is no tracking session to export; load a model and track first")
    ids = sorted(objects) if objects else sorted(s.objects)
    kind = FORMATS[fmt].kind if fmt in FORMATS else "tracks"  # unknown: export_tracks says so
    if kind == "masks":
        return _export_masks(s, path, fmt, ids, bool(objects), frames)
    if kind == "overlay":
        from ..export.overlay import write_overlay

        a, b = frames if frames else (0, s.n_frames - 1)
        return write_overlay(
            s.video,
            s.labels,
            path,
            {o: s.objects[o].color for o in ids},
            tracks=s.skeletons(),
            names={o: s.objects[o].name for o in ids},
            fps=s.fps,
            start=a,
            stop=b,
        )
    return export_tracks(
        s.skeletons(),
        path,
        fmt,
        pixel_size=pixel_size,
        objects=objects,
        frames=frames,
        units=units,
        include_flagged=include_flagged,
        subject=NwbSubject(species=species, age=age, sex=sex),
        video_path=getattr(s.video, "path", None),
    )


def _export_masks(
    s: TrackingSession,
    path: str | Path,
    fmt: str,
    ids: list[int],
    chosen: bool,
    frames: tuple[int, int] | None,
) -> Path:
    """Write the session's label stack as ``fmt`` (``masks-tiff`` or ``masks-png``)."""
    from ..export.masks import select_labels, write_label_tiff, write_mask_pngs

    if fmt == "masks-tiff":
        return write_label_tiff(s.labels, path, fps=s.fps)
    # objects chosen: only those (each must have a mask); else every object, also one
    # without a mask in the range (a folder of empty masks)
    stack, _, first = select_labels(s.labels, ids if chosen else None, frames)
    names = [s.objects[o].name for o in ids]
    return write_mask_pngs(stack, path, object_ids=ids, names=names, first_frame=first)


class ExportDialog(QDialog):
    """Format, file, pixel size, objects and frames of an export."""

    def __init__(self, widget: TrackerWidget, parent=None) -> None:
        from ..export import FORMATS

        super().__init__(parent)
        self.setWindowTitle("Export skeleton tracks")
        s = widget.session
        form = QFormLayout(self)
        self.fmt = QComboBox()
        for name, f in FORMATS.items():  # the one registry: tracks, overlay, masks
            self.fmt.addItem(f.label, name)
        self.units = QComboBox()
        self.units.addItems(["px", "um", "mm"])
        self.path = QLineEdit(str(Path.home() / "tracks.csv"))
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path)
        row.addWidget(browse)
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setRange(0, 1e4)
        self.pixel_size.setDecimals(4)
        self.pixel_size.setSpecialValueText("unknown")
        self.pixel_size.setValue(s.pixel_size or 0)
        self.objects = QLineEdit()
        self.objects.setPlaceholderText("all (or ids, e.g. 1,3)")
        self.start, self.stop = QSpinBox(), QSpinBox()
        for b in (self.start, self.stop):
            b.setRange(0, s.n_frames - 1)
        self.stop.setValue(s.n_frames - 1)
        frames = QHBoxLayout()
        frames.addWidget(self.start)
        frames.addWidget(self.stop)
        form.addRow("Format", self.fmt)
        form.addRow("File", row)
        form.addRow("Pixel size (µm)", self.pixel_size)
        form.addRow("Units", self.units)
        form.addRow("Objects", self.objects)
        form.addRow("Frames", frames)
        self.include_flagged = QCheckBox("also write flagged skeletons (confidence 0)")
        form.addRow("Flagged", self.include_flagged)
        # NWB's subject: empty fields keep the honest defaults (species not recorded,
        # age "P0D/" = unknown, sex U); nwbinspector accepts them
        self.species = QLineEdit()
        self.species.setPlaceholderText("NWB: e.g. Caenorhabditis elegans (empty: not recorded)")
        self.age = QLineEdit()
        self.age.setPlaceholderText("NWB: ISO 8601, e.g. P3D or P2D/P4D (empty: unknown)")
        self.sex = QComboBox()
        for text, value in (
            ("unknown (U)", ""),
            ("hermaphrodite (XX, C. elegans)", "XX"),
            ("male (XO, C. elegans)", "XO"),
            ("female (F)", "F"),
            ("male (M)", "M"),
            ("other (O)", "O"),
        ):
            self.sex.addItem(text, value)
        form.addRow("Species", self.species)
        form.addRow("Age", self.age)
        form.addRow("Sex", self.sex)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.fmt.currentIndexChanged.connect(self._fix_suffix)

    def _fix_suffix(self) -> None:
        from ..export import FORMATS

        ext = FORMATS[self.fmt.currentData()].extension
        p = self.path.text()
        stem = p.split(".")[0] if "." in Path(p).name else p
        self.path.setText(stem + ext)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export tracks", self.path.text())
        if path:
            self.path.setText(path)

    def options(self) -> dict:
        ids = [int(v) for v in self.objects.text().replace(" ", "").split(",") if v]
        return {
            "path": self.path.text(),
            "fmt": self.fmt.currentData(),
            "pixel_size": self.pixel_size.value() or None,
            "objects": ids or None,
            "frames": (self.start.value(), self.stop.value()),
            "units": self.units.currentText(),
            "include_flagged": self.include_flagged.isChecked(),
            "species": self.species.text().strip() or None,
            "age": self.age.text().strip() or None,
            "sex": self.sex.currentData() or None,
        }


def export_tracks_dialog(viewer: napari.viewer.Viewer) -> None:
    """Export skeleton tracks… (menu command)."""
    widget = _session_widget(viewer)
    if widget is None:
        return
    dialog = ExportDialog(widget, widget)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return
    opts = dialog.options()
    try:
        path = export_tracks_to(widget, opts.pop("path"), opts.pop("fmt"), **opts)
    except Exception as exc:
        widget.notify_error(exc)
        return
    show_info(f"Tracks written to {path}")


# -- sessions -----------------------------------------------------------------------------
def save_session_to(widget: TrackerWidget, folder: str | Path) -> Path:
    """Save the widget's session into ``folder`` (created when it does not exist yet).

    The autosave keeps writing to its own folder, never to this one.
    """
    from ..engine.session_io import save_session

    if widget.session is None:
        raise LookupError("there is no tracking session to save")
    widget.session.settings.pop("session_dir", None)  # autosave: never the user's folder
    return save_session(widget.session, folder)


def open_session_from(widget: TrackerWidget, folder: str | Path) -> None:
    """Open a saved session in the widget, with the selected backend.

    The session's video is the widget's current one when the shapes match, else the saved
    video path (opened as a new image layer).
    """
    from ..engine.session_io import find_session_video, load_session, read_session_json

    backend = widget.build_backend()
    video = None
    current = widget.session
    doc = read_session_json(folder)
    if current is not None and list(current.video.shape[:3]) == list(doc["video"]["shape"][:3]):
        video = current.video
    session = load_session(folder, backend, video=video)
    session.settings.pop("session_dir", None)  # autosave in its own folder, not this one
    layer = None
    if video is None:
        path = find_session_video(folder, doc)
        layer = widget.viewer.add_image(
            session.video, name=Path(path).stem, metadata={"fps": session.fps}
        )
    widget.open_session(session, f"session from '{Path(folder).name}'", layer)


def save_session_dialog(viewer: napari.viewer.Viewer) -> None:
    """Save tracking session… (menu command)."""
    widget = _session_widget(viewer)
    if widget is None:
        return
    # a file-name dialog: the user can type the name of a folder that does not exist yet
    folder, _ = QFileDialog.getSaveFileName(
        widget,
        "Save session as a folder (type a new folder name, or pick an existing one)",
        str(Path.home() / "tracking-session"),
        "Session folder (*)",
        options=QFileDialog.Option.DontConfirmOverwrite,
    )
    if not folder:
        return
    try:
        path = save_session_to(widget, folder)
    except Exception as exc:
        widget.notify_error(exc)
        return
    show_info(f"Session saved in {path}")


def open_session_dialog(viewer: napari.viewer.Viewer) -> None:
    """Open tracking session… (menu command)."""
    try:
        widget = widget_for(viewer)
    except LookupError as exc:
        show_warning(str(exc))
        return
    folder = QFileDialog.getExistingDirectory(widget, "Open session folder")
    if not folder:
        return
    try:
        open_session_from(widget, folder)
    except Exception as exc:
        widget.notify_error(exc)
        return
    show_info(f"Session opened from {folder}")
