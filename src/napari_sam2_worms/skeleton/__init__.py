"""Masks -> ordered head-first centerlines, per-frame flags and worm features.

See docs/skeletons.md for the method, the flags and the feature definitions.
"""

from .centerline import MaskSkeleton, skeletonize_mask
from .csv_io import read_csv, write_csv
from .features import compute_features
from .labels import skeletonize_frame, skeletonize_labels
from .orientation import flip_head_tail, orient_tracks

__all__ = [
    "MaskSkeleton",
    "compute_features",
    "flip_head_tail",
    "orient_tracks",
    "read_csv",
    "skeletonize_frame",
    "skeletonize_labels",
    "skeletonize_mask",
    "write_csv",
]
