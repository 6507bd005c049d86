"""Test helpers: an oracle backend and random-weight SAM 2 checkpoints (never real models)."""
