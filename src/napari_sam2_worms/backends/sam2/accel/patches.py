"""A log of the changes the speed-ups make to sam2's objects, undone in reverse order.

Every accel module changes sam2's modules through :class:`Patches` (an attribute set,
a class replaced, a parameter's storage swapped), so :func:`..uninstall` can put each
object back as it was. Targets are held through weak references: the log lives on the
predictor (in its :class:`~.AccelState`) and must not keep the predictor alive.
Imports nothing from the other accel modules.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

#: marks an attribute that was not in the object's ``__dict__`` before the patch
_MISSING = object()


class Patches:
    """Changes made to sam2's objects, each with what undoes it."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def __len__(self) -> int:
        """Return how many changes are logged."""
        return len(self._undo)

    def describe(self) -> list[str]:
        """Name each logged change, oldest first (for logs and tests)."""
        return [what for what, _ in self._undo]

    def set(self, obj: Any, name: str, value: Any) -> None:
        """Set ``obj.name = value`` (an instance attribute), logging the previous one.

        Parameters
        ----------
        obj : a sam2 module or the predictor (anything with a ``__dict__``).
        name : the attribute; a method replaced this way shadows the class's.
        value : the new value.
        """
        old = obj.__dict__.get(name, _MISSING)
        ref = weakref.ref(obj)

        def undo() -> None:
            target = ref()
            if target is None:
                return
            if old is _MISSING:
                target.__dict__.pop(name, None)
            else:
                setattr(target, name, old)

        setattr(obj, name, value)
        self._undo.append((f"{type(obj).__name__}.{name}", undo))

    def set_class(self, obj: Any, cls: type) -> None:
        """Give ``obj`` the class ``cls`` (a subclass with the same state), logged."""
        old = type(obj)
        ref = weakref.ref(obj)

        def undo() -> None:
            target = ref()
            if target is not None:
                target.__class__ = old

        obj.__class__ = cls
        self._undo.append((f"{old.__name__} -> {cls.__name__}", undo))

    def set_data(self, tensor: Any, data: Any, what: str = "tensor") -> None:
        """Give a parameter or buffer new storage (``tensor.data = data``), logged."""
        old = tensor.data
        ref = weakref.ref(tensor)

        def undo() -> None:
            target = ref()
            if target is not None:
                target.data = old

        tensor.data = data
        self._undo.append((f"{what}.data", undo))

    def undo(self) -> int:
        """Undo every logged change, newest first; returns how many."""
        n = len(self._undo)
        while self._undo:
            _, undo = self._undo.pop()
            undo()
        return n
