"""Instance forwards that a CPU speed-up puts on sam2's modules, and their undoing.

A speed-up gives a module its own ``forward`` (an instance attribute over the class's)
under a key (its name); putting the key's forward back restores exactly what was there
before, in any order of the other speed-ups. Used by :mod:`.cpu` and :mod:`.cpu_bf16`;
imports neither.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

#: per module, per speed-up: the instance ``forward`` it replaced (None: the class's)
_forwards: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def _replace_forward(module: torch.nn.Module, key: str, forward: Callable | None) -> bool:
    """Give ``module`` the instance forward ``forward`` for speed-up ``key``.

    ``forward`` None puts back what the speed-up replaced. Returns whether anything
    changed.
    """
    mine = _forwards.setdefault(module, {})
    if forward is None:
        if key not in mine:
            return False
        old = mine.pop(key)
        if old is None:
            module.__dict__.pop("forward", None)
        else:
            module.forward = old
        if not mine:
            del _forwards[module]
        return True
    if key in mine:
        return False
    mine[key] = module.__dict__.get("forward")
    module.forward = forward
    return True


def _weak(module: torch.nn.Module, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(module, ...)`` through a weak reference (no module -> forward -> module cycle)."""
    ref = weakref.ref(module)
    before = module.__dict__.get("forward")
    cls_forward = type(module).forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        m = ref()
        inner = before if before is not None else cls_forward.__get__(m)
        return fn(m, inner, *args, **kwargs)

    return forward
