"""The classic backend on real recordings: detection, masks, identities and speed.

Usage::

    OMP_NUM_THREADS=1 python3 benchmarks/classic_real.py [--only coco,touch,flies,jumps,speed]
        [--fly-frames 1500] [--big]

Parts (each prints one block of figures):

``coco``
    ``../shared/data/worm_plate_coco``: the 48 real frames (sorted by file name) stacked as
    one video so the background model has frames to work with. *Detect all* on each frame:
    recall (annotated worms with a detected point inside their polygon, dilated 3 px) and
    false points (points in no polygon). *One click per worm* (the polygon's most interior
    pixel) on each frame: per-worm mask IoU against the polygon (median, 10th percentile,
    mean; a click refused because another worm's click took the blob counts as IoU 0).
``touch``
    The touching pairs of ``worm_plate_coco`` (polygons closer than 3 px): each pair tracked
    from its annotated outlines on a copy of the frame 2 frames earlier in a 3-frame clip of
    the same image, so the merged real blob is split by the worms' previous shapes; IoU of
    each worm's share. Also a synthetic plate with a crossing (``make_plate``, worms 2 and 3):
    IoU while touching and identities kept.
``flies``
    ``../shared/data/flies_identity``: one click per fly (thorax) on frame 0, propagated over
    ``--fly-frames`` frames; identity kept = frames where each fly's mask centroid is nearer
    that fly's labelled nodes than the other fly's; lost frames counted apart.
``jumps``
    The synthetic crossing plate played at 4x speed (every 4th frame, worms move more than
    their width between frames): identities kept, frames lost. Then the 240-frame plate at
    8x and 12x speed with worms 1 and 4 erased on 4 or 8 frames (:func:`synthetic_vanish`;
    at 8x / 4 frames worm 1 comes back touching worm 3, which nobody prompted): identities
    kept, of the visible object-frames, the most possible, object-frames on another animal
    and lost.
``speed``
    Frames/s of ``propagate`` on a synthetic 640x480 plate with 10 worms (and 2048x1532 with
    ``--big``), best of 3, one click per worm.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from napari_sam2_worms.backends.base import BadPromptError, ObjectPrompts
from napari_sam2_worms.backends.classic import ClassicBackend
from napari_sam2_worms.synthetic import make_plate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def click(x: float, y: float) -> ObjectPrompts:
    return ObjectPrompts(np.array([[x, y]], np.float32), np.ones(1, np.int32))


def interior(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the most interior pixel of a mask."""
    from scipy import ndimage

    d = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(d)), d.shape)
    return float(c), float(r)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# -- worm_plate_coco ---------------------------------------------------------------------
def load_coco(root: Path = DATA / "worm_plate_coco"):
    """(T, H, W, 3) frames sorted by file name, and per frame a list of polygon masks."""
    from PIL import Image
    from skimage.draw import polygon

    d = json.loads((root / "annotations.coco.json").read_text())
    images = sorted(d["images"], key=lambda i: i["file_name"])
    frames, masks = [], []
    for im in images:
        frames.append(np.asarray(Image.open(root / "images" / im["file_name"]).convert("RGB")))
        h, w = frames[-1].shape[:2]
        ms = []
        for a in d["annotations"]:
            if a["image_id"] != im["id"]:
                continue
            m = np.zeros((h, w), bool)
            for seg in a["segmentation"]:
                xy = np.asarray(seg, float).reshape(-1, 2)
                rr, cc = polygon(xy[:, 1], xy[:, 0], (h, w))
                m[rr, cc] = True
            if m.any():
                ms.append(m)
        masks.append(ms)
    return np.stack(frames), masks


def coco_detection(video, gts, detect: dict | None = None, **kw) -> dict:
    from scipy import ndimage

    backend = ClassicBackend(**kw)
    backend.open(video)
    hit = total = false = 0
    for f, ms in enumerate(gts):
        pts = backend.detect(f, **(detect or {}))
        grown = [ndimage.binary_dilation(m, iterations=3) for m in ms]
        found = np.zeros(len(ms), bool)
        for x, y in pts:
            r, c = round(y), round(x)
            inside = [i for i, g in enumerate(grown) if g[r, c]]
            if inside:
                found[inside] = True
            else:
                false += 1
        hit += int(found.sum())
        total += len(ms)
    return {"recall": hit / max(total, 1), "false_points": false, "worms": total}


def coco_click_iou(video, gts, **kw) -> dict:
    backend = ClassicBackend(**kw)
    backend.open(video)
    ious, refused = [], 0
    for f, ms in enumerate(gts):
        for k, m in enumerate(ms, start=1):
            try:
                res = backend.set_prompts(f, k, click(*interior(m)))
                ious.append(iou(res.masks[k], m))
            except BadPromptError:
                refused += 1
                ious.append(0.0)
    a = np.array(ious)
    return {
        "iou_median": float(np.median(a)),
        "iou_p10": float(np.percentile(a, 10)),
        "iou_mean": float(a.mean()),
        "refused": refused,
        "worms": len(a),
    }


def touching_pairs(gts, gap: float = 3.0, nested: bool = False):
    """(frame, i, j) of polygons closer than ``gap`` px. Pairs where one polygon lies
    mostly (> 50 %) inside the other (a small worm annotated on top of a big one) are
    left out, or returned alone with ``nested=True``."""
    from scipy import ndimage

    pairs = []
    for f, ms in enumerate(gts):
        for i in range(len(ms)):
            d = ndimage.distance_transform_edt(~ms[i])
            for j in range(i + 1, len(ms)):
                if d[ms[j]].min() <= gap:
                    inner = (ms[i] & ms[j]).sum() / min(ms[i].sum(), ms[j].sum())
                    if (inner > 0.5) == nested:
                        pairs.append((f, i, j))
    return pairs


def coco_touching(video, gts, **kw) -> dict:
    """Each touching pair split from its annotated outlines two frames earlier."""
    pairs = touching_pairs(gts)
    ious, kept = [], 0
    for f, i, j in pairs:
        clip = np.stack([video[f]] * 3)
        backend = ClassicBackend(**kw)
        backend.open(clip)
        backend.model = _coco_model(video, kw)  # the stacked video's background
        backend.set_prompts(0, 1, ObjectPrompts(mask=gts[f][i]))
        backend.set_prompts(0, 2, ObjectPrompts(mask=gts[f][j]))
        last = list(backend.propagate(0, 2))[-1]
        a, b = last.masks[1], last.masks[2]
        ious += [iou(a, gts[f][i]), iou(b, gts[f][j])]
        kept += iou(a, gts[f][i]) > iou(a, gts[f][j]) and iou(b, gts[f][j]) > iou(b, gts[f][i])
    a = np.array(ious) if ious else np.zeros(1)
    return {
        "pairs": len(pairs),
        "nested_left_out": len(touching_pairs(gts, nested=True)),
        "iou_median": float(np.median(a)),
        "iou_min": float(a.min()),
        "identities_kept": kept / max(len(pairs), 1),
    }


_MODEL: dict = {}


def _coco_model(video, kw):
    key = tuple(sorted(kw.items()))
    if key not in _MODEL:
        b = ClassicBackend(**kw)
        b.open(video)
        _MODEL[key] = b.background_model()
    return _MODEL[key]


# -- synthetic crossings and jumps -------------------------------------------------------
def track_plate(video, labels, heads: dict, **kw):
    """One click per worm on frame 0; per-frame IoU, identity, lost (T, K) arrays."""
    backend = ClassicBackend(**kw)
    backend.open(video)
    ids = sorted(heads)
    for o in ids:
        backend.set_prompts(0, o, click(*heads[o]))
    res = list(backend.propagate(0, len(video) - 1))
    t, k = len(res), len(ids)
    ious, ident, lost = np.zeros((t, k)), np.zeros((t, k), bool), np.zeros((t, k), bool)
    for f, r in enumerate(res):
        for i, o in enumerate(ids):
            m = r.masks[o]
            g = labels[f] == o
            ious[f, i] = iou(m, g)
            lost[f, i] = not m.any()
            v, c = np.unique(labels[f][m], return_counts=True)
            c = c[v > 0]
            v = v[v > 0]
            ident[f, i] = bool(len(v)) and v[np.argmax(c)] == o
    return ious, ident, lost


def synthetic_crossing(**kw) -> dict:
    p = make_plate(n_frames=120, height=300, width=400)
    ious, ident, _lost = track_plate(p.video, p.labels, p.head_points(0), **kw)
    return {
        "iou_touching_min": float(ious[p.touching].min()),
        "iou_touching_median": float(np.median(ious[p.touching])),
        "iou_apart_min": float(ious[~p.touching].min()),
        "identities_kept": float(ident.mean()),
    }


def synthetic_jumps(speedup: int = 4, **kw) -> dict:
    p = make_plate(n_frames=120, height=300, width=400)
    sub = slice(0, None, speedup)
    video, labels, touching = p.video[sub], p.labels[sub], p.touching[sub]
    ious, ident, lost = track_plate(video, labels, p.head_points(0), **kw)
    return {
        "speedup": speedup,
        "identities_kept": float(ident.mean()),
        "lost_frames": int(lost.sum()),
        "object_frames": int(lost.size),
        "iou_apart_median": float(np.median(ious[~touching])),
    }


def synthetic_vanish(speedup: int = 8, gap: tuple[int, int] = (6, 10), **kw) -> dict:
    """A 240-frame crossing plate at ``speedup`` x (worms move more than their width
    between frames); worms 1 and 4 erased (agar painted) on frames ``gap``: they come
    back elsewhere and must be re-acquired. Identity over all frames of all worms."""
    from scipy import ndimage

    p = make_plate(n_frames=240, height=300, width=400)
    video, labels = p.video[::speedup].copy(), p.labels[::speedup]
    agar = np.percentile(p.video, 90, axis=0)
    for f in range(*gap):
        m = ndimage.binary_dilation(np.isin(labels[f], (1, 4)), iterations=3)
        video[f][m] = agar[m].astype(np.uint8)
    h, w = labels.shape[1:]
    heads = {o: xy for o, xy in p.head_points(0).items() if 0 <= xy[0] < w and 0 <= xy[1] < h}
    _ious, ident, lost = track_plate(video, labels, heads, **kw)
    ids = sorted(heads)
    # visible: the worm is in the frame (>= 20 px) and not erased
    visible = np.array(
        [
            [
                (labels[f] == o).sum() >= 20 and not (gap[0] <= f < gap[1] and o in (1, 4))
                for o in ids
            ]
            for f in range(len(labels))
        ]
    )
    return {
        "speedup": speedup,
        "gap": f"{gap[0]}-{gap[1] - 1}",
        "identities_kept": float(ident.mean()),
        "kept_of_visible": float(ident[visible].mean()),
        "best_possible": float(visible.mean()),
        "wrong_object_frames": int((~ident & ~lost).sum()),
        "lost_object_frames": int(lost.sum()),
        "object_frames": int(lost.size),
    }


# -- flies_identity ----------------------------------------------------------------------
def flies(n_frames: int, **kw) -> dict:
    import sleap_io as sio

    from napari_sam2_worms.video import open_video

    root = DATA / "flies_identity"
    labels = sio.load_slp(str(root / "clip.slp"))
    names = ["female", "male"]
    pts = np.full((labels.video.shape[0], 2, 13, 2), np.nan)
    for lf in labels.labeled_frames:
        for inst in lf.instances:
            if inst.track is not None:
                pts[lf.frame_idx, names.index(inst.track.name)] = inst.numpy()
    video = open_video(root / "clip.mp4")
    n = min(n_frames, len(video))
    backend = ClassicBackend(**kw)
    backend.open(video)
    t0 = time.perf_counter()
    backend.background_model()
    t_bg = time.perf_counter() - t0
    for o in (1, 2):
        x, y = pts[0, o - 1, 1]  # thorax
        backend.set_prompts(0, o, click(x, y))
    kept = lost = 0
    t0 = time.perf_counter()
    for r in backend.propagate(0, n - 1):
        f = r.frame
        centres = np.nanmean(pts[f], axis=1)  # (2, 2) node mean per fly
        for o in (1, 2):
            m = r.masks[o]
            if not m.any():
                lost += 1
                continue
            ys, xs = np.nonzero(m)
            d = np.hypot(centres[:, 0] - xs.mean(), centres[:, 1] - ys.mean())
            kept += int(np.nanargmin(d) == o - 1)
    dt = time.perf_counter() - t0
    return {
        "frames": n,
        "identity_kept": kept / (2 * n),
        "lost_object_frames": lost,
        "fps_1024": n / dt,
        "background_s": t_bg,
    }


# -- speed -------------------------------------------------------------------------------
def speed(width: int, height: int, worms: int = 10, frames: int = 100, repeat: int = 3) -> dict:
    p = make_plate(n_frames=frames, height=height, width=width, n_worms=worms)
    best, n_obj = 0.0, 0
    for _ in range(repeat):
        b = ClassicBackend()
        b.open(p.video)
        b.background_model()
        n_obj = 0
        for o, (x, y) in p.head_points(0).items():
            try:
                b.set_prompts(0, o, click(x, y))
                n_obj += 1
            except BadPromptError:
                continue
        t0 = time.perf_counter()
        n = sum(1 for _ in b.propagate(0, frames - 1))
        best = max(best, n / (time.perf_counter() - t0))
    return {"size": f"{width}x{height}", "worms": worms, "prompted": n_obj, "fps": best}


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="coco,touch,flies,jumps,speed")
    ap.add_argument("--fly-frames", type=int, default=1500)
    ap.add_argument("--big", action="store_true", help="also time 2048x1532")
    a = ap.parse_args()
    parts = set(a.only.split(","))
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    if parts & {"coco", "touch"}:
        video, gts = load_coco()
    if "coco" in parts:
        print("worm_plate_coco detect all:", _fmt(coco_detection(video, gts)))
        if hasattr(ClassicBackend, "typical_area"):  # the shape filter (issue 18 item 9)
            worm = {"min_elongation": 2.5}
            print(
                "worm_plate_coco detect all, min_elongation=2.5:",
                _fmt(coco_detection(video, gts, worm)),
            )
        print("worm_plate_coco one click per worm:", _fmt(coco_click_iou(video, gts)))
    if "touch" in parts:
        print("worm_plate_coco touching pairs:", _fmt(coco_touching(video, gts)))
        print("synthetic crossing plate:", _fmt(synthetic_crossing()))
    if "jumps" in parts:
        print("synthetic plate at 4x speed:", _fmt(synthetic_jumps()))
        for sp, gap in ((8, (6, 10)), (8, (6, 14)), (12, (6, 10))):
            print("synthetic, worms 1 and 4 vanish:", _fmt(synthetic_vanish(sp, gap)))
    if "flies" in parts:
        print("flies_identity:", _fmt(flies(a.fly_frames)))
    if "speed" in parts:
        print("speed:", _fmt(speed(640, 480)))
        if a.big:
            print("speed:", _fmt(speed(2048, 1532, frames=40)))


if __name__ == "__main__":
    main()
