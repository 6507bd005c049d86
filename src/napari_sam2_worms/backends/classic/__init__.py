"""The weights-free classic backend: background subtraction and blob tracking.

Modules: :mod:`.backend` (the :class:`ClassicBackend` class), :mod:`.background`
(background model, colour to grey, threshold), :mod:`.blobs` (segmentation, detection
filter), :mod:`.prompts` (prompts to masks), :mod:`.linking` (motion prediction,
assignment, gap closing), :mod:`.split` (merged blobs shared between animals),
:mod:`.shape` (a worm's body while merged), :mod:`.region` (compact masks).
See docs/classic.md.
"""

from .backend import ClassicBackend
from .blobs import BlobFilter, detect_worms

__all__ = ["BlobFilter", "ClassicBackend", "detect_worms"]
