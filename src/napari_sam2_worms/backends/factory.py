"""Build a tracking backend from a :class:`BackendSpec`: the one place that does it.

The command line (``track``), the batch, the widget and scripts all build their backend
here, so the choice between SAM 2 and the classic tracker follows one rule:

- ``"classic"``: the classic threshold tracker (needs no weights).
- ``"sam2"``: SAM 2's video predictor. The checkpoint is resolved first (an explicit
  file, then the cache, then a download when ``download`` is True); when none can be
  had a :class:`~.base.BackendError` says where to put the file and that the classic
  backend (``--backend classic``) needs none.
- ``"auto"``: SAM 2 when it can be built, else the classic backend with a logged
  warning (what an offline first run gets).

SAM 2's modules (and torch) are imported only when a SAM 2 backend is built or its
checkpoint resolved: importing this module is cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from .base import BackendError
from .sam2.checkpoints import DEFAULT_MODEL

if TYPE_CHECKING:
    from .base import Backend

log = logging.getLogger(__name__)

#: The backend names a user can choose.
BACKENDS = ("auto", "sam2", "classic")
#: The devices a SAM 2 backend can be asked for (``auto``: CUDA, else MPS, else the CPU).
DEVICES = ("auto", "cpu", "cuda", "mps")

BackendName = Literal["auto", "sam2", "classic"]
Progress = Callable[[int, int], None]

#: Added to the checkpoint error when SAM 2 was asked for explicitly.
CLASSIC_HINT = (
    "Without a SAM 2 checkpoint you can still track worms on a plain background with the "
    "classic backend (--backend classic)."
)
#: Logged (``%s``: the first line of the reason) when ``auto`` falls back to classic.
AUTO_FALLBACK = (
    "no SAM 2 checkpoint available (%s); using the classic backend, which needs no weights "
    "(its masks suit dark worms on a plain background). To use SAM 2: napari-sam2-worms "
    "download, or --checkpoint PATH."
)


@dataclass(frozen=True)
class BackendSpec:
    """What backend to build.

    Attributes
    ----------
    name : ``"auto"``, ``"sam2"`` or ``"classic"`` (see the module docstring).
    model : SAM 2 model name (a key of the checkpoint registry).
    checkpoint : a local SAM 2 checkpoint file; None: the cached (or downloaded) one.
    device : ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    download : whether a missing checkpoint may be downloaded.
    input_size : SAM 2's input size (``"auto"``, 1024, 768, 512; None: the backend's
        default, which is ``auto``).
    compile : torch.compile SAM 2's hot modules (CUDA).
    cuda_graphs : replay CUDA graphs of the hot modules (CUDA).
    fast_attention : SAM 2's exact, cheaper memory attention (None: on CUDA only).
    options : further keyword arguments of the backend class (e.g. ``predictor`` for
        a loaded SAM 2 model, or the classic tracker's settings); they win over the
        fields above.
    """

    name: BackendName = "auto"
    model: str = DEFAULT_MODEL
    checkpoint: str | None = None
    device: str = "auto"
    download: bool = True
    input_size: int | str | None = None
    compile: bool | str = False
    cuda_graphs: bool = True
    fast_attention: bool | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse an unknown backend name."""
        if self.name not in BACKENDS:
            raise ValueError(f"unknown backend {self.name!r}; choose one of {', '.join(BACKENDS)}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def _with_hint(exc: BackendError) -> BackendError:
    """Return ``exc``'s kind of error (a CheckpointError stays one) with :data:`CLASSIC_HINT`."""
    message = f"{exc}\n{CLASSIC_HINT}"
    try:
        return type(exc)(message)
    except TypeError:  # an error class that takes other arguments
        return BackendError(message)


def sam2_available(model: str = DEFAULT_MODEL, checkpoint: str | None = None) -> bool:
    """Tell whether a SAM 2 checkpoint is given or cached for ``model`` (no download).

    Parameters
    ----------
    model : SAM 2 model name.
    checkpoint : a checkpoint file the user chose (any non-empty path counts).

    Returns
    -------
    bool
        True when SAM 2 can be built without downloading.
    """
    from .sam2.checkpoints import cached_checkpoint

    return bool(checkpoint) or cached_checkpoint(model) is not None


def resolve_spec(
    spec: BackendSpec, *, progress: Progress | None = None
) -> tuple[BackendSpec, str | None]:
    """Decide ``auto`` and find the SAM 2 checkpoint, without building anything.

    Parameters
    ----------
    spec : the requested backend.
    progress : ``(done, total)`` callback of a checkpoint download.

    Returns
    -------
    spec : BackendSpec
        ``name`` is ``"sam2"`` (with ``checkpoint`` the resolved file) or ``"classic"``.
    reason : str or None
        Why ``auto`` fell back to classic (the first line of the checkpoint error);
        None when it did not.

    Raises
    ------
    BackendError
        ``"sam2"`` was asked for and no checkpoint can be had: the checkpoint's error
        (a ``CheckpointError``, its ``__cause__`` the original) with :data:`CLASSIC_HINT`
        added.
    """
    if spec.name == "classic":
        return spec, None
    from .sam2.checkpoints import resolve_checkpoint

    try:
        path = resolve_checkpoint(spec.model, spec.checkpoint, spec.download, progress=progress)
    except BackendError as exc:
        if spec.name == "sam2":
            raise _with_hint(exc) from exc
        return replace(spec, name="classic"), _first_line(exc)
    return replace(spec, name="sam2", checkpoint=str(path)), None


def _classic(options: Mapping[str, Any]) -> Backend:
    from .classic.backend import ClassicBackend

    return ClassicBackend(**options)


def _sam2(spec: BackendSpec, progress: Progress | None) -> Backend:
    from .sam2.adapter import Sam2Backend

    options: dict[str, Any] = {
        "compile": spec.compile,
        "cuda_graphs": spec.cuda_graphs,
        "fast_attention": spec.fast_attention,
        "image_size": spec.input_size,
    }
    options.update(spec.options)
    return Sam2Backend(
        spec.model,
        spec.checkpoint,
        device=spec.device,
        download=False,
        progress=progress,
        **options,
    )


def build_backend(spec: BackendSpec | None = None, *, progress: Progress | None = None) -> Backend:
    """Build the backend ``spec`` asks for (see the module docstring for the rule).

    Parameters
    ----------
    spec : the backend to build; None: ``BackendSpec()`` (``auto``).
    progress : ``(done, total)`` callback of a checkpoint download and of SAM 2's loading.

    Returns
    -------
    Backend
        A backend ready for :meth:`~.base.Backend.open`; ``auto`` without a usable SAM 2
        (no checkpoint, no such device) gives the classic backend and logs
        :data:`AUTO_FALLBACK`.

    Raises
    ------
    BackendError
        ``"sam2"`` was asked for and cannot be built (the message says what to do).
    """
    spec = BackendSpec() if spec is None else spec
    if spec.name == "classic":
        return _classic(spec.options)
    try:
        resolved, reason = resolve_spec(spec, progress=progress)
        if reason is None:
            return _sam2(resolved, progress)
    except BackendError as exc:
        # a usage error (e.g. compile modes that exclude each other) is the caller's to
        # fix, never a reason to fall back to another backend
        from .sam2.accel.state import AccelOptionsError

        if spec.name != "auto" or isinstance(exc, AccelOptionsError):
            raise
        reason = _first_line(exc)
    log.warning(AUTO_FALLBACK, reason)
    return _classic({})
