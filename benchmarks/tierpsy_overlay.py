"""Track the Tierpsy single-worm video from one click and draw the mask outlines.

Usage::

    python3 benchmarks/tierpsy_overlay.py [--video ../shared/data/videos/tierpsy_single_worm.avi]
        [--out docs/images/tierpsy_overlay.png]

Clicks the worm proposed by ``ClassicBackend.detect`` on frame 0, propagates over the
whole video, prints how many frames were tracked, and writes a grid of 8 frames with
the mask outline in red (the frame index in the corner is the video frame).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_sam2_worms.backends.base import ObjectPrompts
from napari_sam2_worms.backends.classic import ClassicBackend
from napari_sam2_worms.backends.classic.background import to_grey

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "videos" / "tierpsy_single_worm.avi"


def read_grey(path: Path) -> np.ndarray:
    """(T, H, W) uint8 frames (open_video when available, else PyAV)."""
    try:
        from napari_sam2_worms.video import open_video

        video = open_video(path)
        return np.stack([to_grey(video[i]) for i in range(video.shape[0])])
    except ImportError:
        import av

        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])


def track(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (T, H, W) and scores (T,) of the worm clicked on frame 0."""
    backend = ClassicBackend()
    backend.open(frames)
    (x, y) = backend.detect(0, max_objects=1)[0]
    backend.set_prompts(0, 1, ObjectPrompts(np.array([[x, y]], np.float32), np.ones(1)))
    masks, scores = [], []
    for r in backend.propagate(0, len(frames) - 1):
        masks.append(r.masks[1])
        scores.append(r.scores[1])
    return np.stack(masks), np.array(scores)


def overlay_grid(frames, masks, picks, scale: int = 2, cols: int = 4) -> np.ndarray:
    tiles = []
    for f in picks:
        g = np.kron(frames[f], np.ones((scale, scale), np.uint8))
        m = np.kron(masks[f], np.ones((scale, scale), bool))
        edge = m & ~ndimage.binary_erosion(m)
        rgb = np.repeat(g[..., None], 3, axis=2)
        rgb[edge] = (255, 40, 40)
        _label(rgb, f)
        tiles.append(np.pad(rgb, ((2, 2), (2, 2), (0, 0)), constant_values=255))
    rows = [np.concatenate(tiles[i : i + cols], axis=1) for i in range(0, len(tiles), cols)]
    return np.concatenate(rows, axis=0)


_DIGITS = {  # 3x5 pixel font
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001001001001",
    "8": "111101111101111",
    "9": "111101111001111",
}


def _label(rgb: np.ndarray, n: int, scale: int = 2) -> None:
    for k, ch in enumerate(str(n)):
        glyph = np.array([int(b) for b in _DIGITS[ch]], bool).reshape(5, 3)
        glyph = np.kron(glyph, np.ones((scale, scale), bool))
        y0, x0 = 3, 3 + k * 4 * scale
        rgb[y0 : y0 + glyph.shape[0], x0 : x0 + glyph.shape[1]][glyph] = (255, 255, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "tierpsy_overlay.png")
    a = ap.parse_args()
    frames = read_grey(a.video)
    masks, scores = track(frames)
    area = masks.reshape(len(masks), -1).sum(1)
    ok = (area > 0.5 * area[0]) & (area < 2.0 * area[0])
    print(
        f"tracked {int(ok.sum())}/{len(frames)} frames; area {area.min()}..{area.max()} "
        f"(frame 0: {area[0]}); lost {int(np.isinf(scores).sum())}"
    )
    picks = np.linspace(0, len(frames) - 1, 8).round().astype(int)
    grid = overlay_grid(frames, masks, picks)
    from skimage.io import imsave

    from napari_sam2_worms.utils import atomic_path

    a.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.out) as tmp:
        imsave(tmp, grid, check_contrast=False)
    a.out.chmod(0o644)  # a figure for the docs: readable by all
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
