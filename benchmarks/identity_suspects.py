"""How often the "identity suspect" flag fires, right and wrong.

Synthetic plates (exact identities): every contact episode of the ground truth (must not
fire) and the same truth with the pair swapped after the contact (must fire). The
two-fly clip (``../shared/data/flies_identity``, user-labelled identities): the classic
backend tracks frames FIRST..LAST; each episode is checked as tracked (the tracker kept
the identities: must not fire) and with the pair swapped after it (should fire where the
flies can be told apart).

Run from the repository root::

    python3 benchmarks/identity_suspects.py [--flies FIRST LAST]

Figures (2-core dev machine, 2026-12-01, flies 900-1499): synthetic: 8 episodes on 4
plates, 0 false flags, 8 of 8 swaps flagged. Flies, classic backend at 30d8aea: the
tracker kept the identities on 596 of 600 frames; 1 episode with clean frames on both
sides (1173-1195), not flagged (right), its simulated swap not flagged either (costs
16.6 vs 15.7: the two flies' bodies and motion do not tell them apart there). With the
classic backend before 30d8aea: 5 episodes, 0 false flags, 2 of 5 simulated swaps
flagged (the other three within 20 %).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_sam2_worms.skeleton import skeletonize_labels
from napari_sam2_worms.skeleton.identity import identity_suspects

FLIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flies_identity"


def swapped(labels: np.ndarray, a: int, b: int, start: int) -> np.ndarray:
    out = labels.copy()
    part = out[start:]
    ma, mb = part == a, part == b
    part[ma], part[mb] = b, a
    return out


def swapped_columns(tracks, start: int):
    """Two-object ``tracks`` with the objects' rows exchanged from ``start`` on."""
    from dataclasses import replace

    def cross(v):
        v = np.array(v, copy=True)
        v[start:] = v[start:, ::-1]
        return v

    return replace(
        tracks,
        reason=cross(tracks.reason),
        good=cross(tracks.good),
        features={k: cross(v) for k, v in tracks.features.items()},
    )


def synthetic() -> tuple[int, int, int]:
    from napari_sam2_worms.synthetic import make_plate

    cases = [dict(n_frames=120, n_worms=8, seed=s) for s in (0, 1, 2)]
    cases.append(dict(n_frames=120, height=150, width=200, n_worms=3))
    episodes = false = caught = 0
    for args in cases:
        plate = make_plate(**args)
        events = identity_suspects(skeletonize_labels(plate.labels), plate.labels)
        for e in events:
            episodes += 1
            false += e.suspect
            wrong = swapped(plate.labels, e.a, e.b, e.frame)
            again = identity_suspects(skeletonize_labels(wrong), wrong)
            caught += any(x.suspect and (x.a, x.b, x.start) == (e.a, e.b, e.start) for x in again)
            print(f"  plate {args}: {e.a}-{e.b} {e.start}-{e.stop}: keep {e.cost_keep:.2f} "
                  f"swap {e.cost_swap:.2f}")  # fmt: skip
    return episodes, false, caught


def flies(first: int, last: int) -> tuple[int, int, int]:
    import sleap_io as sio

    from napari_sam2_worms.backends.classic import ClassicBackend
    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.video import ArrayVideo, open_video

    labels = sio.load_slp(str(FLIES / "clip.slp"))
    truth = np.full((1500, 2, 2), np.nan)
    for lf in labels.labeled_frames:
        for inst in lf.instances:
            truth[lf.frame_idx, labels.tracks.index(inst.track)] = np.nanmean(inst.numpy(), 0)
    truth = truth[first : last + 1]
    video = open_video(FLIES / "clip.mp4")
    frames = np.stack([np.asarray(video[i]) for i in range(first, last + 1)])
    s = TrackingSession(ArrayVideo(frames, fps=video.fps), ClassicBackend())
    for k in range(2):
        s.add_point(0, s.add_object(), *truth[0, k])
    t0 = time.perf_counter()
    list(s.propagate("forward"))
    tracks = s.skeletons()
    print(f"  flies: tracked and skeletonized in {time.perf_counter() - t0:.0f} s")
    xy = np.stack([tracks.features["centroid_x"], tracks.features["centroid_y"]], -1)
    kept = np.linalg.norm(xy - truth, axis=-1).sum(1) < np.linalg.norm(
        xy - truth[:, ::-1], axis=-1
    ).sum(1)
    print(f"  flies: identities kept on {kept.sum()} of {len(kept)} frames")
    events = identity_suspects(tracks, s.labels)
    false = caught = 0
    for e in events:
        false += e.suspect and bool(kept[e.frame])
        # the objects' columns exchanged from the parting on (= skeletons of the
        # swapped labels, without skeletonizing 1024x1024 frames again); contacts are
        # symmetric in the pair, so the labels as tracked serve
        again = identity_suspects(swapped_columns(tracks, e.frame), s.labels)
        caught += any(x.suspect and x.start == e.start for x in again)
        print(f"  flies {e.start + first}-{e.stop + first}: keep {e.cost_keep:.2f} "
              f"swap {e.cost_swap:.2f}")  # fmt: skip
    return len(events), false, caught


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flies", nargs=2, type=int, default=(900, 1499), metavar=("FIRST", "LAST"))
    args = ap.parse_args()
    n, false, caught = synthetic()
    print(f"synthetic: {n} episodes, {false} false flags, {caught} of {n} swaps flagged")
    if FLIES.is_dir():
        n, false, caught = flies(*args.flies)
        print(f"flies: {n} episodes, {false} false flags, {caught} of {n} swaps flagged")
    else:
        print(f"flies: {FLIES} is absent, skipped")


if __name__ == "__main__":
    main()
