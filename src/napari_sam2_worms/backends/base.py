"""The interface every tracking backend implements (SAM 2, classic, the test oracle).

A backend owns its model state (for SAM 2: the ``inference_state`` dict, which no
other module touches). The :class:`~napari_sam2_worms.engine.session.TrackingSession`
owns the user's prompts, the label stack and the correction rules, and drives the
backend through this small protocol.

Coordinates are always (x, y) in pixels of the original video (x = column).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..video import LazyVideo


class BackendError(RuntimeError):
    """A failure the user can act on (bad prompt, no checkpoint, out of memory...).

    The message says what happened and what to do; the session stays usable.
    """


class BadPromptError(BackendError, ValueError):
    """A prompt the backend cannot use (point on empty background, outside the frame...)."""


@dataclass
class ObjectPrompts:
    """All prompts of one object on one frame, as the backend receives them.

    Parameters
    ----------
    points : (N, 2) float array of (x, y), may be empty.
    labels : (N,) int array, 1 = positive, 0 = negative.
    box : (x0, y0, x1, y1) or None.
    mask : (H, W) bool array (a painted mask) or None. A mask replaces points/box.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    def is_empty(self) -> bool:
        """Tell whether there is no point, box or mask."""
        return len(self.points) == 0 and self.box is None and self.mask is None


class LabelMasks(MutableMapping):
    """``{object id: (H, W) bool mask}`` backed by one non-overlapping label image.

    A GPU backend resolves overlaps on the device and sends one small ``(H, W)`` index
    image per frame instead of one full-frame mask per object; masks are made on
    access. ``index`` holds 0 for background and ``k + 1`` for ``ids[k]``. Assigning a
    mask stores it as an override (the index image is left as it is).
    """

    def __init__(self, index: np.ndarray, ids: list[int]) -> None:
        self.index = index
        self.ids = [int(o) for o in ids]
        self._pos = {o: k + 1 for k, o in enumerate(self.ids)}
        self._over: dict[int, np.ndarray] = {}

    def __getitem__(self, object_id: int) -> np.ndarray:
        """Return the mask of ``object_id`` (its override, else made from the index)."""
        object_id = int(object_id)
        if object_id in self._over:
            return self._over[object_id]
        return self.index == self._pos[object_id]

    def __setitem__(self, object_id: int, mask: np.ndarray) -> None:
        """Store ``mask`` as the override of ``object_id`` (the index is left as it is)."""
        object_id = int(object_id)
        self._over[object_id] = mask
        if object_id not in self._pos:
            self.ids.append(object_id)
            self._pos[object_id] = 0  # never matches: only the override counts

    def __delitem__(self, object_id: int) -> None:
        """Forget ``object_id`` (KeyError when absent, as a dict)."""
        object_id = int(object_id)
        del self._pos[object_id]  # KeyError when absent, as a dict
        self.ids.remove(object_id)
        self._over.pop(object_id, None)

    def __iter__(self) -> Iterator[int]:
        """Iterate over the object ids."""
        return iter(list(self.ids))

    def __len__(self) -> int:
        """Return the number of objects."""
        return len(self.ids)

    def plain(self) -> bool:
        """Tell whether no mask was assigned or deleted (the index image says it all)."""
        return not self._over


@dataclass
class FrameResult:
    """What a backend returns for one frame.

    Attributes
    ----------
    frame : frame index.
    masks : object id -> (H, W) bool mask (full frame). Objects not found may be absent
        or have an empty mask. May be a :class:`LabelMasks` (masks made on access).
    scores : object id -> object score (SAM 2's object-score logit; higher = more
        confident the object is present; the classic backend uses a bounded
        heuristic). ``-inf`` when the object was lost.
    """

    frame: int
    masks: dict[int, np.ndarray]
    scores: dict[int, float]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the :class:`Backend` protocol.

    A backend declares them as a class attribute ``capabilities``; callers ask
    :func:`capabilities`, never the backend's name.

    Attributes
    ----------
    detect : ``backend.detect(frame, **filters) -> [(x, y), ...]`` finds the animals on a
        frame (one click each: "Detect all").
    """

    detect: bool = False


def capabilities(backend: object) -> Capabilities:
    """Return the capabilities ``backend`` declares (none declared: the defaults)."""
    declared = getattr(backend, "capabilities", None)
    return declared if isinstance(declared, Capabilities) else Capabilities()


@runtime_checkable
class Backend(Protocol):
    """A tracking backend. See module docstring.

    The session calls ``open`` once, then any mix of the other methods. All
    methods run in the caller's thread (the widget calls them from a worker).
    """

    name: str

    def open(self, video: LazyVideo) -> None:
        """Attach to a video (lazy; must not decode the whole video)."""

    def set_prompts(self, frame: int, object_id: int, prompts: ObjectPrompts) -> FrameResult:
        """Replace the prompts of ``object_id`` on ``frame`` and return that frame's result.

        An empty ``prompts`` removes the object's prompts on that frame. The result
        holds at least ``object_id``; it may hold other objects present on that frame.
        Raises :class:`BadPromptError` for unusable prompts.
        """

    def remove_object(self, object_id: int) -> None:
        """Forget an object and all its prompts."""

    def propagate(self, start: int, stop: int, reverse: bool = False) -> Iterator[FrameResult]:
        """Track all objects from ``start`` towards ``stop`` (both inclusive).

        Forward when ``reverse`` is False (``start <= stop``), backward otherwise
        (``start >= stop``). Yields one :class:`FrameResult` per frame, in order.
        The caller may stop iterating (``close()``) between frames at any time; the
        backend state must stay usable afterwards.
        """

    def reset(self) -> None:
        """Drop all prompts and tracking memory (keeps the model loaded)."""

    def close(self) -> None:
        """Release model memory (GPU) and files."""
