"""Object colours: the same colour for an object in every layer and every export."""

from __future__ import annotations

__all__ = ["PALETTE", "hex_to_rgb", "object_color"]

#: A colour per object id (tab10, then tab20 light tones), as hex strings.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#dbdb8d", "#9edae5", "#c7c7c7",
)  # fmt: skip


def object_color(object_id: int) -> str:
    """Return the display colour of an object (same in every layer and export).

    Parameters
    ----------
    object_id : the object's id (1, 2, ...); the palette repeats after 20 ids.

    Returns
    -------
    str
        ``"#rrggbb"``.
    """
    return PALETTE[(object_id - 1) % len(PALETTE)]


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """Convert ``"#rrggbb"`` (or ``"rrggbb"``) to its (red, green, blue) in 0-255.

    Raises
    ------
    ValueError
        ``color`` is not six hexadecimal digits.
    """
    digits = color.lstrip("#")
    if len(digits) != 6:
        raise ValueError(f"a colour must be '#rrggbb'; got {color!r}")
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
