"""Model panel: backend, SAM 2 model size, checkpoint, device, load / download.

The panel knows no widget: it says what to build (:meth:`ModelPanel.spec`, a
:class:`~napari_sam2_worms.backends.factory.BackendSpec` that
:func:`~napari_sam2_worms.backends.factory.build_backend` builds), emits
:attr:`ModelPanel.load_requested` / :attr:`ModelPanel.download_requested`, and shows the
state the widget gives it (:meth:`ModelPanel.busy`, :meth:`ModelPanel.idle`,
:meth:`ModelPanel.loaded`).
"""

from __future__ import annotations

import logging
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ..backends.factory import DEVICES, BackendSpec, sam2_available
from ..backends.sam2.checkpoints import DEFAULT_MODEL, MODELS
from ..backends.sam2.input_size import INPUT_SIZES, check_input_size

log = logging.getLogger(__name__)

SAM2 = "SAM 2"
CLASSIC = "classic"


class ModelPanel(QGroupBox):
    """Choose and load a backend; the widget runs the load in a worker, the panel shows it.

    Signals
    -------
    load_requested
        "Load model" (what to build: :meth:`spec`).
    download_requested(model)
        "Download checkpoint" of the selected SAM 2 model.
    """

    load_requested = Signal()
    download_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("1. Model", parent)
        #: extra keyword arguments for Sam2Backend (tests use image_size=256)
        self.sam2_options: dict[str, Any] = {}
        # the choice (see :meth:`choice`) the loaded session was built with, and its status
        self._loaded_choice: tuple | None = None
        self._loaded_text = ""
        form = QFormLayout(self)
        self.backend = QComboBox()
        self.backend.addItems([SAM2, CLASSIC])
        self.model = QComboBox()
        self.model.addItems(list(MODELS))
        self.model.setCurrentText(DEFAULT_MODEL)
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("cached (or … to choose)")
        browse = QPushButton("…")
        browse.setToolTip("Choose a checkpoint file (.pt)")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.checkpoint)
        row.addWidget(browse)
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.input_size = QComboBox()
        self.input_size.addItems(["auto", *map(str, INPUT_SIZES)])
        self.input_size.setToolTip(
            "SAM 2's input size. auto: 1024 on a GPU; on the CPU the smallest of 1024, 768, "
            "512 covering the video (much faster). The model was trained at 1024; smaller "
            "inputs may lose detail on thin animals: check the masks."
        )
        self.compile = QCheckBox("Compile (CUDA)")
        self.compile.setToolTip(
            "torch.compile SAM 2's hot modules: faster after a ~1 min warm-up. "
            "The first propagated frames wait for the "
            "compilation (in the background; the viewer stays live); clicks never do."
        )
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(lambda: self.load_requested.emit())
        self.download_button = QPushButton("Download checkpoint")
        self.download_button.clicked.connect(
            lambda: self.download_requested.emit(self.model.currentText())
        )
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.download_button)
        self.status = QLabel("no model loaded")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        form.addRow("Backend", self.backend)
        form.addRow("Model", self.model)
        form.addRow("Checkpoint", row)
        form.addRow("Device", self.device)
        form.addRow("Input size", self.input_size)
        form.addRow(self.compile)
        form.addRow(buttons)
        form.addRow(self.status)
        form.addRow(self.progress)
        self.backend.currentTextChanged.connect(self._backend_changed)
        self.model.currentTextChanged.connect(lambda _: self._update_status_hint())
        self.checkpoint.textChanged.connect(lambda _: self._update_status_hint())
        self.device.currentTextChanged.connect(lambda _: self._update_status_hint())
        self.input_size.currentTextChanged.connect(lambda _: self._update_status_hint())
        self._backend_changed(self.backend.currentText())

    # -- state -----------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        """The selected backend: ``"sam2"`` or ``"classic"``."""
        return CLASSIC if self.backend.currentText() == CLASSIC else "sam2"

    def set_backend(self, name: str) -> None:
        """Select ``"sam2"`` or ``"classic"``."""
        self.backend.setCurrentText(CLASSIC if name == "classic" else SAM2)

    def _backend_changed(self, text: str) -> None:
        sam = text == SAM2
        sam2_only = (self.model, self.checkpoint, self.device, self.input_size, self.compile)
        for w in (*sam2_only, self.download_button):
            w.setEnabled(sam)
        self._update_status_hint()

    @property
    def loaded_choice(self) -> tuple | None:
        """The :meth:`choice` the session on screen was built with (None: no session)."""
        return self._loaded_choice

    def choice(self) -> tuple:
        """Return what :meth:`spec` asks for now, comparable with :attr:`loaded_choice`."""
        if self.backend_name == "classic":
            return ("classic",)
        return ("sam2", self.model.currentText(), self.checkpoint.text().strip(),
                self.device.currentText(), self.input_size.currentText())  # fmt: skip

    def spec(self) -> BackendSpec:
        """Return the backend to build.

        No silent download: "Download checkpoint" is the explicit action. An input size
        the model cannot take raises ValueError.
        """
        if self.backend_name == "classic":
            return BackendSpec(name="classic")
        return BackendSpec(
            name="sam2",
            model=self.model.currentText(),
            checkpoint=self.checkpoint.text().strip() or None,
            device=self.device.currentText(),
            download=False,
            input_size=check_input_size(self.input_size.currentText()),
            compile=self.compile.isChecked(),
            options=dict(self.sam2_options),
        )

    def _update_status_hint(self) -> None:
        """Say in the status line what is loaded and whether the choice differs from it."""
        if self.progress.isVisible():  # loading / downloading: that status stays
            return
        missing = self.backend_name == "sam2" and not sam2_available(
            self.model.currentText(), self.checkpoint.text().strip()
        )
        hint = ""
        if missing:
            hint = (
                f"{self.model.currentText()} is not cached: press 'Download checkpoint', "
                "choose a file, or use the classic backend."
            )
        if self._loaded_choice is None:
            self.status.setText(hint or "no model loaded")
        elif self.choice() != self._loaded_choice:
            self.status.setText(
                f"{self._loaded_text}. Press 'Load model' to use the new choice "
                "(that starts a new session: save this one first to keep it)."
                + (f" {hint}" if hint else "")
            )
        else:
            self.status.setText(self._loaded_text)

    def loaded(self, choice: tuple, text: str) -> None:
        """Say that a session was built with ``choice`` (loaded or opened)."""
        self._loaded_choice, self._loaded_text = choice, text
        self.idle(text)
        self._update_status_hint()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "SAM 2 checkpoint", "", "Checkpoints (*.pt *.pth)"
        )
        if path:
            self.checkpoint.setText(path)

    # -- showing work ------------------------------------------------------------------
    def busy(self, text: str, maximum: int = 0) -> None:
        """Show work in progress (``maximum`` 0: a busy bar); "Load model" waits."""
        self.status.setText(text)
        self.progress.setVisible(True)
        self.progress.setRange(0, maximum)
        self.load_button.setEnabled(False)

    def show_progress(self, value: int) -> None:
        """Show the percentage done of a download."""
        self.progress.setValue(int(value))

    def idle(self, text: str) -> None:
        """Show that the work ended, with ``text``."""
        self.status.setText(text)
        self.progress.setVisible(False)
        self.load_button.setEnabled(True)
