"""SAM 2's input size: the side of the square image the model sees.

Meta trained and released SAM 2 at 1024 px. Smaller inputs are much faster (the image
encoder's cost grows with the square of the side, its attention faster still), which
matters on a CPU, but they may lose detail on thin animals: check the masks. On a
640x480 video a 1024 input only upsamples the pixels the video has.

``auto`` (the default) picks 1024 on a GPU and, on the CPU (or Apple's MPS), the smallest
of :data:`INPUT_SIZES` at least as large as the video's longer side (1024 for a
1280x1024 video, 768 for 640x480, 512 for 384x384), with a one-line notice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

#: the input sizes offered to users, largest (the model's own) first
INPUT_SIZES: tuple[int, ...] = (1024, 768, 512)
#: what ``auto`` picks on a CUDA GPU: the size the weights were trained at
TRAINED_SIZE = 1024
#: the image encoder works in windows of 16-px patches; other sizes must be multiples of it
SIZE_MULTIPLE = 64

InputSize = int | str | None


def check_input_size(setting: InputSize) -> InputSize:
    """Validate an input-size setting and return it normalised (``"1024"`` -> 1024).

    A setting is ``"auto"``, ``None`` (the model's own, 1024) or a positive multiple of
    64 (the widget and the command line offer 1024, 768 and 512; tests use 256).

    Raises
    ------
    ValueError
        With a message that names the accepted values.
    """
    if setting is None or setting == "auto":
        return setting
    try:
        size = int(setting)
    except (TypeError, ValueError):
        size = 0
    if size <= 0 or size % SIZE_MULTIPLE or str(setting).strip() != str(size):
        raise ValueError(
            f"the SAM 2 input size must be auto or one of {', '.join(map(str, INPUT_SIZES))} "
            f"(a multiple of {SIZE_MULTIPLE}), got {setting!r}"
        )
    return size


def resolve_input_size(
    setting: InputSize, device_type: str, frame_shape: Sequence[int] | None = None
) -> int | None:
    """Choose the input size to build the model at, for ``setting`` on ``device_type``.

    Parameters
    ----------
    setting : ``"auto"``, ``None`` or a size (see :func:`check_input_size`).
    device_type : ``"cuda"``, ``"cpu"`` or ``"mps"``.
    frame_shape : the video's shape ``(T, H, W[, C])`` or a frame's ``(H, W)``; ``auto``
        on the CPU needs it (without it, 1024).

    Returns
    -------
    int or None
        The side in pixels; ``None`` for the model's own size (1024).
    """
    setting = check_input_size(setting)
    if setting is None or isinstance(setting, int):  # not "auto"
        return setting
    if device_type == "cuda" or frame_shape is None:
        return TRAINED_SIZE
    shape = tuple(int(s) for s in frame_shape)
    height, width = shape[1:3] if len(shape) >= 3 else shape[:2]
    longer = max(height, width)
    fitting = [s for s in INPUT_SIZES if s >= longer]
    size = min(fitting) if fitting else TRAINED_SIZE
    if size != TRAINED_SIZE:
        log.warning(
            "SAM 2 on the %s: input size %d px for this %dx%d video (auto; the model was "
            "trained at %d, which is slower here and may keep more detail: choose it "
            "with input size 1024)",
            device_type.upper(),
            size,
            width,
            height,
            TRAINED_SIZE,
        )
    return size
