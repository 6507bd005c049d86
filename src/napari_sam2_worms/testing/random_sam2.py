"""Random-weight SAM 2 checkpoints for tests and benchmarks (no download needed).

The file has exactly the layout of a released checkpoint (``{"model": state_dict}``),
so it exercises the real loading path; its masks say nothing about quality.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..backends.sam2.checkpoints import DEFAULT_MODEL, build_model, file_sha256
from ..utils import atomic_path

if TYPE_CHECKING:
    import os


@dataclass(frozen=True)
class RandomCheckpoint:
    """A random checkpoint file and its SHA-256 (to register it as a downloadable model)."""

    path: Path
    sha256: str

    def __fspath__(self) -> str:
        """Return the file's path (the checkpoint can be passed as a path)."""
        return str(self.path)


def make_random_checkpoint(
    path: str | os.PathLike, model: str = DEFAULT_MODEL, seed: int = 0, *, reuse: bool = False
) -> RandomCheckpoint:
    """Build ``model`` from its packaged config with seeded random weights and save it.

    Parameters
    ----------
    path : file to write (``{"model": state_dict}`` via ``torch.save``, atomically).
    model : registry name of the architecture.
    seed : torch seed for the random initialisation.
    reuse : keep an existing file at ``path`` (tests share one file per session).

    Returns
    -------
    RandomCheckpoint with ``path`` and ``sha256`` (it is also path-like).
    """
    import torch

    path = Path(path)
    if reuse and path.is_file():
        return RandomCheckpoint(path, file_sha256(path))
    torch.manual_seed(seed)
    predictor = build_model(model, "cpu")
    state = {k: v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"model": state}, tmp)
    return RandomCheckpoint(path, file_sha256(path))
