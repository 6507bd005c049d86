"""The CPU path must not get slower: SAM 2 tiny at 1024 px, 2 worms, 4 frames.

Run it on two checkouts (before/after) on the same machine; the GPU-only work
(compilation, CUDA graphs) must leave these figures unchanged::

    python3 benchmarks/sam2_cpu_check.py
    PYTHONPATH=/path/to/other/checkout/src python3 benchmarks/sam2_cpu_check.py
"""

from __future__ import annotations

import time

import numpy as np


def main() -> None:
    import torch

    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model
    from napari_sam2_worms.synthetic import make_plate

    torch.set_num_threads(2)
    plate = make_plate(n_frames=5, height=240, width=320, n_worms=2, seed=0)
    torch.manual_seed(0)
    backend = Sam2Backend(predictor=build_model("sam2.1_hiera_tiny", "cpu"), device="cpu")
    backend.open(plate.video)
    t = time.perf_counter()
    for k in range(2):
        xy = plate.centerlines[0, k, 24][None]
        backend.set_prompts(0, k + 1, ObjectPrompts(points=xy, labels=np.array([1])))
    clicks = time.perf_counter() - t
    t = time.perf_counter()
    for _ in backend.propagate(0, 4):
        pass
    dt = time.perf_counter() - t
    print(f"2 clicks {clicks:.2f} s; propagate 4 frames {dt:.2f} s = {dt / 4:.2f} s/frame")


if __name__ == "__main__":
    main()
