"""The names of the files in a run folder (what ``track`` writes, or a saved session).

The engine writes these files and the exporters read them; both take the names from
here. What each file holds is documented in :mod:`.engine.session_io`.
"""

from __future__ import annotations

__all__ = [
    "CORE_FILES",
    "DERIVED_FILES",
    "MASKS",
    "PAINTED",
    "SCORES",
    "SESSION",
    "SKELETONS",
]

#: The session document: objects, prompts, settings and the records of the other files.
SESSION = "session.json"
#: The label stack (T, H, W), a zlib-compressed TIFF.
MASKS = "masks.tif"
#: The per-frame object scores (T, K), float32.
SCORES = "scores.npy"
#: The painted masks, one bool array per (frame, object).
PAINTED = "painted.npz"
#: The skeleton table, derived from the masks of one generation.
SKELETONS = "skeletons.csv"

#: The array files every save writes (with :data:`SESSION`, last).
CORE_FILES = (MASKS, SCORES, PAINTED)
#: The files made from a saved generation (removed by a later save that does not remake them).
DERIVED_FILES = (SKELETONS,)
