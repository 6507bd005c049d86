"""Sample data contributions: a synthetic plate, and real recordings fetched on first use.

The real recordings come from :mod:`napari_sam2_worms.sample_data` (pinned addresses,
SHA-256, cached): the download shows a progress bar in napari's activity dock, and
without a network the error says which file to put where.
"""

from __future__ import annotations

from typing import Any

LayerData = tuple[Any, dict, str]


def synthetic_plate(
    n_frames: int = 60, height: int = 240, width: int = 320, n_worms: int = 4
) -> list[LayerData]:
    """Make a synthetic plate as an image layer (an :class:`ArrayVideo`).

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


def tierpsy_single_worm() -> list[LayerData]:
    """One real C. elegans (the Tierpsy Tracker test clip), downloaded on first use."""
    return real_sample("tierpsy_single_worm")


def real_sample(key: str) -> list[LayerData]:
    """Open the sample recording ``key`` as an image layer, fetched into the cache if needed.

    Raises
    ------
    napari_sam2_worms.sample_data.SampleDataError
        It cannot be downloaded (offline...): the message names the address and the
        file to put in the cache by hand. napari shows it as a notification.
    """
    from ..sample_data import fetch_sample, sample_info, sample_path
    from ._reader import read_video

    info = sample_info(key)
    path = sample_path(key)
    if path is None:
        from napari.utils import progress

        with progress(total=0, desc=f"Downloading {info.filename}") as bar:

            def advance(done: int, total: int) -> None:
                if total and bar.total != total:
                    bar.total = total
                bar.update(done - bar.n)

            path = fetch_sample(key, progress=advance)
    layers = read_video(str(path))
    _video, meta, _kind = layers[0]
    meta["name"] = info.filename.rsplit(".", 1)[0]
    meta["metadata"].update(
        {
            "sample": key,
            "source": info.url,
            "licence": info.licence,
            "description": info.description,
        }
    )
    return layers
