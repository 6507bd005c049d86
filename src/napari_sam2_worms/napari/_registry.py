"""Which tracker widget belongs to which viewer (the menu commands get only the viewer).

napari hands commands and widgets a new ``PublicOnlyProxy`` of the viewer at each call,
so the key is the id of the real viewer behind it.
"""

from __future__ import annotations

import weakref
from typing import Any

#: viewer id -> the viewer's (last opened) widget
_REGISTRY: dict[int, weakref.ref] = {}


def real_viewer(viewer: Any) -> Any:
    """Return the viewer behind napari's ``PublicOnlyProxy`` (or ``viewer`` itself)."""
    while hasattr(viewer, "__wrapped__"):
        viewer = viewer.__wrapped__
    return viewer


def register(viewer: Any, widget: Any) -> None:
    """Make ``widget`` the tracker widget of ``viewer`` (the last one opened wins)."""
    _REGISTRY[id(real_viewer(viewer))] = weakref.ref(widget)


def unregister(viewer: Any, widget: Any) -> None:
    """Forget ``widget`` as ``viewer``'s tracker widget (nothing when another one is)."""
    key = id(real_viewer(viewer))
    ref = _REGISTRY.get(key)
    if ref is not None and ref() is widget:
        del _REGISTRY[key]


def widget_for(viewer: Any) -> Any:
    """Return the tracker widget docked in ``viewer``.

    Raises
    ------
    LookupError
        There is none (the message says how to open it).
    """
    ref = _REGISTRY.get(id(real_viewer(viewer)))
    widget = ref() if ref is not None else None
    if widget is None:
        raise LookupError(
            "open the tracker first: Plugins > SAM 2 worm tracker (SAM 2 Worm Tracker)"
        )
    return widget
