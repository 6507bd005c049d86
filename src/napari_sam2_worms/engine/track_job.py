"""What the ``track`` command needs around tracking.

The run-folder rule, resuming an interrupted run, and Ctrl-C.

- :func:`check_run_folder`: a folder holding a run is refused unless the caller says
  ``overwrite`` (replace it) or ``resume`` (continue it).
- :func:`resume_session`: reopen an interrupted run (its video checked by fingerprint)
  with its tracking plan.
- :class:`SigintGuard`: the first Ctrl-C stops tracking between two frames (so the
  frames done are written), a later one interrupts; where the command asks (while it
  starts threads and processes) the first Ctrl-C is deferred the same way. Worker
  processes started meanwhile ignore SIGINT, so a Ctrl-C in the terminal (sent to the
  whole process group) prints no traceback from them.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..run_files import CORE_FILES, DERIVED_FILES, SESSION
from .run_lock import RunFolderError, RunFolderExistsError
from .run_set import pending

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator

log = logging.getLogger(__name__)


def has_run(folder: str | os.PathLike) -> bool:
    """Tell whether ``folder`` holds a saved session (or a save in progress)."""
    folder = Path(folder)
    return (folder / SESSION).is_file() or pending(folder)


def check_run_folder(folder: str | os.PathLike, *, overwrite: bool, resume: bool) -> None:
    """Apply the run-folder rule before tracking into ``folder``.

    Raises
    ------
    RunFolderExistsError
        ``folder`` holds a run, or files a run would replace (``masks.tif``...), and
        neither ``overwrite`` nor ``resume`` was given.
    RunFolderError
        ``resume`` without a run to resume, or ``folder`` is not a folder.
    ValueError
        Both ``overwrite`` and ``resume``.
    """
    folder = Path(folder)
    if overwrite and resume:
        raise ValueError(
            "--overwrite and --resume exclude each other: replace the run or continue it"
        )
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a folder; choose an output folder")
    if resume:
        if not has_run(folder):
            raise RunFolderError(f"there is no run to resume in {folder} (no session.json)")
        return
    if has_run(folder) and not overwrite:
        raise RunFolderExistsError(
            f"{folder} holds a run already; pass --overwrite to replace it, --resume to "
            "continue it, or choose another folder"
        )
    taken = [n for n in (*CORE_FILES, *DERIVED_FILES) if (folder / n).exists()]
    if taken and not overwrite:
        raise RunFolderExistsError(
            f"{folder} holds {', '.join(taken)} but no session: a run would replace "
            f"{'them' if len(taken) > 1 else 'it'}; pass --overwrite to replace, or "
            "choose another folder"
        )


def resume_session(
    folder: str | os.PathLike, backend, video, store=None, frames: str | None = None
):
    """Reopen the interrupted run in ``folder`` to continue it.

    Parameters
    ----------
    folder : the run folder.
    backend : the backend to go on with.
    video : the video (refused unless it is the run's, by fingerprint).
    store : the prompts given again (a ``PromptStore``), or None; refused if they differ
        from the run's.
    frames : the ``--frames`` text given again, or None; refused if it differs.

    Returns
    -------
    (session, plan) : the :class:`~.session.TrackingSession` and its
    :class:`~.pipeline.TrackPlan`.
    """
    from .pipeline import TrackPlan
    from .session_io import load_session

    session = load_session(folder, backend, video=video)
    try:
        doc = session.settings.get("track")
        if doc is None:
            raise RunFolderError(
                f"{folder} holds a session without tracking progress (saved from napari?); "
                "there is no track run to resume"
            )
        plan = TrackPlan.from_json(doc)
        if frames is not None and frames != plan.frames:
            raise ValueError(
                f"the run in {folder} was started with --frames {plan.frames or '(all)'}; "
                "resume it with the same range, or start over with --overwrite"
            )
        if store is not None and (
            store.points != session.prompts.points or store.boxes != session.prompts.boxes
        ):
            raise ValueError(
                f"these prompts differ from those of the run in {folder}; resume without "
                "--prompts (the run's are used), or start over with --overwrite"
            )
    except BaseException:
        session.close()
        raise
    return session, plan


class SigintGuard:
    """Ctrl-C handling for a command that tracks (see the module docstring).

    Use as a context manager in the main thread; inside :meth:`soft` the first SIGINT
    (or SIGTERM) sets :attr:`cancel` (checked between frames) instead of raising, so
    that it never lands inside ``threading`` or ``multiprocessing`` (which it can leave
    corrupted), and what was tracked is saved.
    """

    def __init__(self) -> None:
        self.cancel = threading.Event()
        #: the stop was asked by SIGTERM (a batch system's time limit, ``kill``, ``scancel``)
        self.terminated = False
        self._soft = False
        self._old: Any = None
        self._old_term: Any = None
        self._active = False
        self._launch: Any = None

    def _handler(self, signum, frame) -> None:
        if self._soft and not self.cancel.is_set():
            self.cancel.set()
            log.warning("interrupted: stopping after this step (Ctrl-C again to stop at once)")
            return
        raise KeyboardInterrupt

    def _term_handler(self, signum, frame) -> None:
        if self._soft and not self.cancel.is_set():
            self.cancel.set()
            self.terminated = True
            log.warning("terminated (SIGTERM): saving the frames tracked, then stopping")
            return
        if callable(self._old_term):
            self._old_term(signum, frame)
        raise SystemExit(128 + signal.SIGTERM)

    @contextlib.contextmanager
    def soft(self) -> Iterator[threading.Event]:
        """Enter a block where the first Ctrl-C or SIGTERM only sets :attr:`cancel`.

        After a SIGTERM :attr:`terminated` is True too: the command saves what it has
        and exits with 143, as a batch system's time limit expects, without the work
        a Ctrl-C does (skeletons).
        """
        self._soft = True
        term = None
        if self._active and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            term = self._old_term = signal.signal(signal.SIGTERM, self._term_handler)
        try:
            yield self.cancel
        finally:
            self._soft = False
            if term is not None:
                signal.signal(signal.SIGTERM, term)
                self._old_term = None

    def __enter__(self) -> SigintGuard:
        """Catch Ctrl-C (main thread only, and only where SIGINT is not ignored)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # ignored by whoever started us (a background job of a script): left so, as
            # Python itself does; Ctrl-C in that terminal is not meant for this process
            return self
        self._old = signal.signal(signal.SIGINT, self._handler)
        self._active = True
        self._patch_spawn()
        return self

    def __exit__(self, *exc: object) -> None:
        """Give Ctrl-C its previous handler back."""
        if not self._active:
            return
        self._unpatch_spawn()
        signal.signal(signal.SIGINT, self._old)
        self._active = False

    def _patch_spawn(self) -> None:
        """Make worker processes (multiprocessing's spawn) start with SIGINT ignored.

        An ignored signal is the one disposition a new interpreter inherits, and Python
        then leaves it so (no KeyboardInterrupt, no traceback in the workers).
        """
        try:
            from multiprocessing import popen_spawn_posix
        except ImportError:  # pragma: no cover - Windows
            return
        popen_class: Any = popen_spawn_posix.Popen  # _launch is private: not in the stubs
        orig = popen_class._launch
        self._launch = orig

        def _launch(popen, process_obj):
            if threading.current_thread() is not threading.main_thread():
                return orig(popen, process_obj)
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                return orig(popen, process_obj)
            finally:
                signal.signal(signal.SIGINT, previous)

        popen_class._launch = _launch

    def _unpatch_spawn(self) -> None:
        if self._launch is None:
            return
        from multiprocessing import popen_spawn_posix

        popen_class: Any = popen_spawn_posix.Popen
        popen_class._launch = self._launch
        self._launch = None
