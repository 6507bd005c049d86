"""Centerline accuracy on the real WormPose sample frames (ground truth in features.h5).

Masks: Otsu threshold of each frame (dark worm), largest component, holes filled.
Reports, for our skeletonizer and the naive one (skimage skeletonize, longest path,
resampled), on the frames with ground truth: the median point-to-point error at
N = 52 (min over the two orientations), the median point-to-curve error (mean over GT
points of the distance to our polyline), coverage, and the head/tail flip rate between
consecutive frames of our orientation-consistent output.

Run: ``python3 benchmarks/wormpose_eval.py [--limit N]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wormpose_sample"
N = 52


def load(limit: int | None = None):
    """(frames list, gt (T, 52, 2))."""
    import h5py
    from skimage.io import imread

    with h5py.File(DATA / "features.h5", "r") as f:
        gt = f["skeletons"][:]
    files = sorted(DATA.glob("*.png"))[: limit or None]
    return [imread(p) for p in files], gt[: len(files)]


def make_mask(img: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    img = img if img.ndim == 2 else img[..., 0]
    m = img < threshold_otsu(img)
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(m)


def point_error(p: np.ndarray, g: np.ndarray) -> float:
    a = np.hypot(*(p - g).T).mean()
    b = np.hypot(*(p[::-1] - g).T).mean()
    return float(min(a, b))


def curve_error(p: np.ndarray, g: np.ndarray) -> float:
    """Mean over GT points of the distance to the polyline ``p``."""
    a, b = p[:-1], p[1:]
    d = b - a
    ll = np.maximum((d**2).sum(1), 1e-12)
    t = np.clip(((g[:, None, :] - a[None]) * d[None]).sum(-1) / ll, 0, 1)
    q = a[None] + t[..., None] * d[None]
    return float(np.hypot(*(g[:, None, :] - q).transpose(2, 0, 1)).min(axis=1).mean())


def evaluate(limit: int | None = None) -> dict[str, float]:
    """Run both methods; return the figures as a dict."""
    from napari_sam2_worms.skeleton import skeletonize_mask
    from napari_sam2_worms.skeleton.centerline import naive_centerline

    images, gt = load(limit)
    has_gt = np.isfinite(gt).all(axis=(1, 2))
    ours = np.full((len(images), N, 2), np.nan)
    naive = np.full((len(images), N, 2), np.nan)
    prev = None
    for t, img in enumerate(images):
        m = make_mask(img)
        # crops move between frames: pass the previous shape centred on this mask
        p_in = None
        if prev is not None:
            yy, xx = np.nonzero(m)
            p_in = prev - prev.mean(axis=0) + np.array([xx.mean(), yy.mean()])
        sk = skeletonize_mask(m, N, prev=p_in)
        if np.isfinite(sk.points).all():
            ours[t] = sk.points
            prev = sk.points.astype(float)
        nv = naive_centerline(m, N)
        if nv is not None:
            naive[t] = nv
    res: dict[str, float] = {"frames": float(len(images)), "gt_frames": float(has_gt.sum())}
    for name, arr in (("ours", ours), ("naive", naive)):
        ok = has_gt & np.isfinite(arr).all(axis=(1, 2))
        res[f"{name}_coverage"] = float(ok.sum() / max(has_gt.sum(), 1))
        res[f"{name}_point_err"] = float(
            np.median([point_error(arr[t], gt[t]) for t in np.flatnonzero(ok)])
        )
        res[f"{name}_curve_err"] = float(
            np.median([curve_error(arr[t], gt[t]) for t in np.flatnonzero(ok)])
        )
    # flips: our consecutive frames (both with GT) whose orientation relative to GT changes
    same = np.array(
        [
            np.hypot(*(ours[t] - gt[t]).T).mean() <= np.hypot(*(ours[t][::-1] - gt[t]).T).mean()
            if has_gt[t] and np.isfinite(ours[t]).all()
            else np.nan
            for t in range(len(images))
        ],
        float,
    )
    pairs = np.isfinite(same[1:]) & np.isfinite(same[:-1])
    res["flip_rate"] = float((same[1:] != same[:-1])[pairs].mean()) if pairs.any() else 0.0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N frames")
    args = ap.parse_args()
    res = evaluate(args.limit)
    print(f"frames {res['frames']:.0f}, with ground truth {res['gt_frames']:.0f}")
    print(f"{'method':8s} {'coverage':>9s} {'point err px':>13s} {'curve err px':>13s}")
    for name in ("ours", "naive"):
        print(
            f"{name:8s} {100 * res[name + '_coverage']:8.1f}% "
            f"{res[name + '_point_err']:13.2f} {res[name + '_curve_err']:13.2f}"
        )
    print(f"head/tail flips between consecutive GT frames: {100 * res['flip_rate']:.2f}%")


if __name__ == "__main__":
    main()
