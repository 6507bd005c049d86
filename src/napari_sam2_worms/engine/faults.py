"""Fault injection for tests: kill the process at a named point, deterministically.

``NAPARI_SAM2_WORMS_FAULT="<point>:<n>[:<action>]"`` makes the ``n``-th pass through
:func:`fault_point` ``point`` end the process: ``exit`` (default, ``os._exit(86)``, as
abrupt as ``kill -9``: no cleanup, no flush) or ``sigint`` (a SIGINT to the process
group, as Ctrl-C in a terminal sends) or ``wait=<path>`` (block until ``path`` exists, at
most two minutes: a test holds a process at that point). Several rules are separated
by commas. Points:
``save-write`` (after each file of a session save is staged), ``save-commit`` (after
the commit record is written), ``save-rename`` (after each file is moved into place),
``track-frame`` (after each tracked frame). Unset (always, outside tests) it costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "NAPARI_SAM2_WORMS_FAULT"
EXIT_CODE = 86


def _parse(text: str) -> dict[str, tuple[int, str]]:
    rules: dict[str, tuple[int, str]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, rest = part.partition(":")
        count, _, action = rest.partition(":")
        rules[name] = (int(count or 1), action or "exit")
    return rules


_RULES = _parse(os.environ.get(ENV, ""))
_SEEN: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Pass a fault point (see the module docstring)."""
    if not _RULES or name not in _RULES:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    count, action = _RULES[name]
    if _SEEN[name] != count:
        return
    if action == "sigint":
        os.killpg(os.getpgrp(), signal.SIGINT)
        return
    if action.startswith("wait="):
        deadline = time.monotonic() + 120.0
        while not os.path.exists(action[5:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    os._exit(EXIT_CODE)
