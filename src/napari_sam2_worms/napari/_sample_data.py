"""Sample data contribution: a small synthetic worm plate with its ground truth."""

from __future__ import annotations

from typing import Any


def synthetic_plate(
    n_frames: int = 60, height: int = 240, width: int = 320, n_worms: int = 4
) -> list[tuple[Any, dict, str]]:
    """A synthetic plate as an image layer (an :class:`ArrayVideo`).

    The ground-truth label stack is in ``metadata["ground_truth_labels"]``.
    """
    from ..synthetic import make_plate
    from ..video import ArrayVideo

    plate = make_plate(n_frames=n_frames, height=height, width=width, n_worms=n_worms)
    video = ArrayVideo(plate.video, fps=plate.fps)
    meta = {
        "name": "Synthetic worm plate",
        "metadata": {"fps": plate.fps, "ground_truth_labels": plate.labels},
    }
    return [(video, meta, "image")]
