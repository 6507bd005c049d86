"""Run long work in a ``thread_worker`` (or inline, for tests) with main-thread handlers."""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

log = logging.getLogger(__name__)


class _Failed:
    """What a worker returns instead of raising (see :func:`_catching`)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def _catching(func: Callable[[], Any]) -> Callable[[], Any]:
    """Return ``func`` returning :class:`_Failed` instead of raising.

    superqt's worker swallows a ``RuntimeError`` (our ``BadPromptError`` is one) without
    its errored *or* finished signals, which would leave the widget "running" for ever.
    """
    if inspect.isgeneratorfunction(func):

        def gen():
            try:
                return (yield from func())
            except Exception as exc:
                return _Failed(exc)

        return gen

    def call():
        try:
            return func()
        except Exception as exc:
            return _Failed(exc)

    return call


def run_work(
    func: Callable[[], Any],
    *,
    synchronous: bool = False,
    workers: set | None = None,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    on_finish: Callable[[], None] | None = None,
) -> None:
    """Run ``func`` (a function or a generator function).

    Parameters
    ----------
    func : the work; a generator's yielded values go to ``on_yield``.
    synchronous : run inline (tests); else in a ``napari.qt.threading`` worker.
    workers : a set that holds running workers (so they can be stopped and are not
        garbage-collected while running).
    on_yield, on_return, on_error, on_finish : handlers, called on the main thread;
        ``on_finish`` runs after success, error or cancel.
    """
    if synchronous:
        _run_inline(func, on_yield, on_return, on_error, on_finish)
    else:
        _start_worker(func, workers, on_yield, on_return, on_error, on_finish)


def _run_inline(
    func: Callable[[], Any],
    on_yield: Callable[[Any], None] | None,
    on_return: Callable[[Any], None] | None,
    on_error: Callable[[Exception], None] | None,
    on_finish: Callable[[], None] | None,
) -> None:
    """Run ``func`` here, calling the handlers as a worker would.

    An error is raised when there is no ``on_error``.
    """
    try:
        if inspect.isgeneratorfunction(func):
            gen = func()
            while True:
                try:
                    value = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                if on_yield:
                    on_yield(value)
        else:
            result = func()
    except Exception as exc:
        if on_error is None:
            raise
        on_error(exc)
    else:
        if on_return:
            on_return(result)
    finally:
        if on_finish:
            on_finish()


def _start_worker(
    func: Callable[[], Any],
    workers: set | None,
    on_yield: Callable[[Any], None] | None,
    on_return: Callable[[Any], None] | None,
    on_error: Callable[[Exception], None] | None,
    on_finish: Callable[[], None] | None,
) -> None:
    """Start ``func`` in a ``napari.qt.threading`` worker with the handlers connected."""
    from napari.qt.threading import create_worker

    worker = create_worker(_catching(func))
    if workers is not None:
        workers.add(worker)
    if on_yield and hasattr(worker, "yielded"):
        worker.yielded.connect(on_yield)

    def returned(result):
        if isinstance(result, _Failed):
            if on_error:
                on_error(result.exc)
            else:
                log.error("worker failed", exc_info=result.exc)
        elif on_return:
            on_return(result)

    worker.returned.connect(returned)
    if on_error:
        worker.errored.connect(on_error)

    def finished():
        if workers is not None:
            workers.discard(worker)
        if on_finish:
            on_finish()

    worker.finished.connect(finished)
    worker.start()


@contextlib.contextmanager
def _main_script_hidden():
    """Hide the ``__main__`` module's file and spec while worker processes start (spawn).

    They then do not re-import the user's script (which re-runs a script without
    ``if __name__ == "__main__":`` and fails with multiprocessing's bootstrapping error).
    The workers only need this package's functions.
    """
    main = sys.modules.get("__main__")
    saved = {a: getattr(main, a) for a in ("__file__", "__spec__") if hasattr(main, a)}
    try:
        if main is not None:
            main.__spec__ = None
            if "__file__" in saved:
                del main.__file__
        yield
    finally:
        for attr, value in saved.items():
            setattr(main, attr, value)


def start_skeleton_workers(session) -> None:
    """Start the session's skeleton worker processes for long videos (none for short ones).

    Where they cannot start, skeletons are computed here with a one-line notice.
    """
    from ..skeleton.stream import auto_workers

    n = auto_workers(session.n_frames)
    if not n:
        return
    try:
        with _main_script_hidden():
            session.skeleton_workers = n
    except Exception as exc:  # no processes here: same skeletons, a bit later
        log.warning("skeleton workers could not start", exc_info=exc)
        session.skeleton_workers = 0
        from napari.utils.notifications import show_info

        show_info(f"Skeletons are computed in this process (workers did not start: {exc}).")


def download_steps(model: str) -> Generator[int, None, Path]:
    """Download the SAM 2 checkpoint of ``model``; yield the percentage done, return the file.

    It runs in a worker, the download in a thread of its own so that the worker can
    report progress (about every 0.2 s).
    """
    from ..backends.sam2.checkpoints import download_checkpoint

    state: dict[str, Any] = {"pct": 0}

    def progress(done: int, total: int) -> None:
        state["pct"] = int(100 * done / total) if total else 0

    def fetch() -> None:
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
    return Path(state["path"])
