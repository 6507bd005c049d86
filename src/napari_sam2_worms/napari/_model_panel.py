"""Model panel: backend, SAM 2 model size, checkpoint, device, load / download."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_info
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

from ..backends.sam2.input_size import INPUT_SIZES, check_input_size
from ..backends.sam2.checkpoints import DEFAULT_MODEL, MODELS, cached_checkpoint

if TYPE_CHECKING:
    from ._widget import TrackerWidget

log = logging.getLogger(__name__)

SAM2 = "SAM 2"
CLASSIC = "classic"
DEVICES = ("auto", "cpu", "cuda", "mps")


def sam2_available(model: str = DEFAULT_MODEL, checkpoint: str | None = None) -> bool:
    """True when a SAM 2 checkpoint is given or cached for ``model``."""
    return bool(checkpoint) or cached_checkpoint(model) is not None


class ModelPanel(QGroupBox):
    """Choose and load a backend; the load runs in a worker and its state is shown."""

    def __init__(self, host: TrackerWidget, parent: QWidget | None = None) -> None:
        super().__init__("1. Model", parent)
        self.host = host
        #: extra keyword arguments for Sam2Backend (tests use image_size=256)
        self.sam2_options: dict[str, Any] = {}
        #: the choice (see :meth:`choice`) the loaded session was built with, and its status
        self.loaded_choice: tuple | None = None
        self.loaded_text = ""
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
        self.load_button.clicked.connect(lambda: host.load_model())
        self.download_button = QPushButton("Download checkpoint")
        self.download_button.clicked.connect(self.download)
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
        return CLASSIC if self.backend.currentText() == CLASSIC else "sam2"

    def set_backend(self, name: str) -> None:
        """Select "sam2" or "classic"."""
        self.backend.setCurrentText(CLASSIC if name == "classic" else SAM2)

    def _backend_changed(self, text: str) -> None:
        sam = text == SAM2
        sam2_only = (self.model, self.checkpoint, self.device, self.input_size, self.compile)
        for w in (*sam2_only, self.download_button):
            w.setEnabled(sam)
        self._update_status_hint()

    def choice(self) -> tuple:
        """What :meth:`backend_factory` would build now (backend, model, checkpoint, device)."""
        if self.backend_name == "classic":
            return ("classic",)
        return ("sam2", self.model.currentText(), self.checkpoint.text().strip(),
                self.device.currentText(), self.input_size.currentText())  # fmt: skip

    def _update_status_hint(self) -> None:
        """The status line says what is loaded and whether the choice differs from it."""
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
        if self.host.session is None or self.loaded_choice is None:
            self.status.setText(hint or "no model loaded")
        elif self.choice() != self.loaded_choice:
            self.status.setText(
                f"{self.loaded_text}. Press 'Load model' to use the new choice "
                "(that starts a new session: save this one first to keep it)."
                + (f" {hint}" if hint else "")
            )
        else:
            self.status.setText(self.loaded_text)

    def loaded(self, choice: tuple, text: str) -> None:
        """A session was built with ``choice`` (loaded or opened): say so."""
        self.loaded_choice, self.loaded_text = choice, text
        self.idle(text)
        self._update_status_hint()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "SAM 2 checkpoint", "", "Checkpoints (*.pt *.pth)"
        )
        if path:
            self.checkpoint.setText(path)

    # -- building --------------------------------------------------------------------
    def backend_factory(self):
        """A zero-argument function building the selected backend (run in a worker)."""
        name = self.backend_name
        model = self.model.currentText()
        checkpoint = self.checkpoint.text().strip() or None
        device = self.device.currentText()
        options = {"image_size": check_input_size(self.input_size.currentText())}
        options.update(self.sam2_options)
        if self.compile.isChecked():
            options["compile"] = True

        def build():
            if name == "classic":
                from ..backends.classic import ClassicBackend

                return ClassicBackend()
            from ..backends.sam2.adapter import Sam2Backend
            from ..backends.sam2.checkpoints import resolve_checkpoint

            # no silent download here: "Download checkpoint" is an explicit action
            path = resolve_checkpoint(model, checkpoint, download=False)
            return Sam2Backend(model, path, device, download=False, **options)

        return build

    def download(self) -> None:
        """Download the selected SAM 2 model with a progress bar."""
        from ..backends.sam2.checkpoints import download_checkpoint

        panel = self
        model = panel.model.currentText()
        panel.busy(f"downloading {model}…", 100)

        def work():
            state: dict[str, Any] = {"pct": 0}

            def progress(done, total):
                state["pct"] = int(100 * done / total) if total else 0

            def fetch():
                try:
                    state["path"] = download_checkpoint(model, progress=progress)
                except Exception as exc:
                    state["error"] = exc

            t = threading.Thread(target=fetch, daemon=True)
            t.start()
            while t.is_alive():
                t.join(0.2)
                yield state["pct"]
            if "error" in state:
                raise state["error"]
            return state["path"]

        def done(path):
            panel.idle(f"downloaded {path}")
            show_info(f"SAM 2 checkpoint ready: {path}")

        self.host.run_work(
            work,
            on_yield=panel.progress.setValue,
            on_return=done,
            on_error=lambda e: (panel.idle("download failed"), self.host.notify_error(e)),
        )

    def busy(self, text: str, maximum: int = 0) -> None:
        self.status.setText(text)
        self.progress.setVisible(True)
        self.progress.setRange(0, maximum)
        self.load_button.setEnabled(False)

    def idle(self, text: str) -> None:
        self.status.setText(text)
        self.progress.setVisible(False)
        self.load_button.setEnabled(True)
