"""A weights-free threshold tracker with the same prompts as SAM 2.

Method (see docs/classic.md):

1. **Background**: median of ``background_frames`` frames sampled over the video,
   patched where animals paused (:mod:`.background`). Foreground is the
   contrast relative to the local background brightness above a threshold
   (automatic by default), for dark or bright animals (``polarity``).
2. **Blobs**: 8-connected components of the foreground; blobs smaller than
   ``min_area`` pixels are noise or debris and are dropped.
3. **Prompts pick blobs**: a positive point selects the blob under it, a box the
   blobs mostly inside it, a negative point removes the blob under it (or, inside a
   selected blob, takes the part nearer to it away); a mask prompt is the mask.
4. **Tracking**: each object's previous mask, moved by its velocity, is overlapped
   with the new blobs; each object takes the blob it overlaps most. Objects with no
   overlap are linked to free blobs by one global assignment
   (:func:`scipy.optimize.linear_sum_assignment`) on the distance to their motion
   prediction over a gate that grows while they are lost, plus the area change
   (gap closing; see :func:`.linking.match_by_distance`). A blob claimed by several objects
   (touching or crossing worms) is split by :func:`.split.split_blob`.
   An object with no plausible blob is *lost* on that frame: empty mask, score -inf.

Scores are bounded confidences: 1.0 prompted or a clean one-to-one match with a
plausible area; 0.6 for a share of a split blob; 0.5 for a match by distance only
(re-acquired after a jump or a loss); each multiplied by an area factor that falls
below 1 when the area leaves [0.7, 1.4] x the object's area on its anchor frame;
``-inf`` when lost.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import Capabilities, FrameResult, ObjectPrompts
from .background import BackgroundModel, colour_weights, estimate_background, to_grey
from .blobs import BlobFilter, Blobs, animal_blobs, blob_points, detect_worms, segment, typical_area
from .linking import (
    Leftovers,
    Track,
    add_fragments,
    area_factor,
    coasted_to,
    match_by_distance,
    predicted_region,
)
from .prompts import resolve
from .region import Region
from .shape import body_of
from .split import clip_to, split_blob

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

__all__ = ["BlobFilter", "ClassicBackend", "detect_worms"]

SCORE_MATCH = 1.0
SCORE_SPLIT = 0.6
SCORE_DISTANCE = 0.5
LOST = float("-inf")


class ClassicBackend:
    """Background subtraction + blob tracking behind the :class:`Backend` protocol.

    Parameters
    ----------
    polarity : "dark" animals on a bright background, "bright", or "auto".
    min_area : blobs smaller than this (pixels) are noise or debris.
    background_frames : number of frames sampled for the median background.
    threshold : contrast threshold, a fraction of the local background brightness
        (e.g. 0.25 = 25 % darker than the agar); None = automatic.
    snap_radius : a positive click up to this many pixels off a blob snaps onto it.
    max_jump : how far (pixels) a lost or fast object's centroid may jump and still be
        matched by distance; None = 1.5 x the square root of its area (about half a
        worm length).
    """

    name = "classic"
    capabilities = Capabilities(detect=True)  # :meth:`detect`: one click per animal

    def __init__(
        self,
        *,
        polarity: str = "auto",
        min_area: int = 20,
        background_frames: int = 50,
        threshold: float | None = None,
        snap_radius: int = 4,
        max_jump: float | None = None,
    ) -> None:
        if polarity not in ("auto", "dark", "bright"):
            raise ValueError(f"polarity must be 'auto', 'dark' or 'bright', not {polarity!r}")
        if min_area < 1 or background_frames < 1:
            raise ValueError("min_area and background_frames must be >= 1")
        self.polarity = polarity
        self.min_area = int(min_area)
        self.background_frames = int(background_frames)
        self.threshold = threshold
        self.snap_radius = int(snap_radius)
        self.max_jump = max_jump
        self.video: Any = None  # LazyVideo or (T, H, W[, 3]) array
        self.model: BackgroundModel | None = None
        self._weights: np.ndarray | None = None  # colour -> grey weights (None = luminance)
        self._typical: float | None = None  # typical animal area, for detect
        self._prompts: dict[tuple[int, int], ObjectPrompts] = {}
        self._prompt_regions: dict[tuple[int, int], Region] = {}
        self._cache: dict[int, dict[int, tuple]] = {}  # obj -> frame -> packed Region
        self._seg: tuple[tuple[int, int], Blobs] | None = None

    # -- video and segmentation ------------------------------------------------------
    def open(self, video) -> None:
        """Attach to a video ((T, H, W) or (T, H, W, 3)); the background is built lazily."""
        shape = tuple(video.shape)
        if len(shape) not in (3, 4) or shape[0] < 1:
            raise ValueError(f"expected a (T, H, W[, 3]) video, got shape {shape}")
        self.video = video
        self.n_frames = int(shape[0])
        self.frame_shape = (int(shape[1]), int(shape[2]))
        self.model = None
        self._weights = None
        self._typical = None
        self.reset()

    def _require_video(self):
        if self.video is None:
            raise RuntimeError("ClassicBackend.open(video) must be called first")

    def _grey(self, frame: int) -> np.ndarray:
        return to_grey(self.video[int(frame)], self._weights)

    def background_model(self) -> BackgroundModel:
        """Return the background model (built from sampled frames on first use).

        Colour video: the channel weights that make animals stand out most over the
        noise are measured first on up to 16 sampled frames
        (:func:`.background.colour_weights`), and every frame is reduced to grey
        with them.
        """
        self._require_video()
        if self.model is None:
            n = min(self.background_frames, self.n_frames)
            idx = np.unique(np.linspace(0, self.n_frames - 1, n).round().astype(int))
            self._weights = None
            first = np.asarray(self.video[int(idx[0])])
            if first.ndim == 3 and first.shape[2] >= 3:
                sub = idx[np.linspace(0, len(idx) - 1, min(len(idx), 16)).astype(int)]
                k = max(1, int(np.ceil(np.sqrt(first.shape[0] * first.shape[1] / 262144))))
                colour = np.stack([np.asarray(self.video[int(i)])[::k, ::k] for i in sub])
                self._weights = colour_weights(colour, self.polarity)
            frames = np.stack([self._grey(i) for i in idx])
            self.model = estimate_background(frames, self.polarity, self.threshold)
        return self.model

    def _blobs(self, frame: int, min_area: int | None = None) -> Blobs:
        key = (frame, self.min_area if min_area is None else min_area)
        if self._seg is not None and self._seg[0] == key:
            return self._seg[1]
        blobs = segment(self.background_model(), self._grey(frame), key[1])
        self._seg = (key, blobs)
        return blobs

    def detect(
        self,
        frame: int,
        max_objects: int | None = None,
        *,
        min_area: float | None = None,
        max_area: float | None = None,
        min_elongation: float | None = None,
        max_elongation: float | None = None,
        core: float = 2.0,
    ) -> list[tuple[float, float]]:
        """One positive point (x, y) inside each animal-sized blob of ``frame``.

        Blobs are ordered largest first; a blob of touching animals gets one point.
        Only blobs that pass the size and shape filter count (:class:`.BlobFilter`):
        ``min_area``/``max_area`` in pixels (None = 0.2 x / 5 x the typical animal
        area on this frame), ``min_elongation``/``max_elongation`` (long over short
        axis; None = no limit), and a dark (bright) core of ``core`` x the threshold.
        """
        self._require_video()
        self._check_frame(frame)
        flt = BlobFilter(min_area, max_area, min_elongation, max_elongation, core)
        floor = self.min_area if min_area is None else max(1, min(self.min_area, int(min_area)))
        blobs = self._blobs(frame, min_area=floor)
        counts = self._core_counts(frame, blobs, flt.core)
        typical = self.typical_area() if flt.core == 2.0 else None
        keep, (lo, hi) = animal_blobs(blobs, counts, flt, typical or None)
        log.info(
            "classic detect on frame %d: %d blobs in [%.0f, %.0f] px", frame, len(keep), lo, hi
        )
        return blob_points(blobs, None, max_objects, keep)

    def _core_counts(self, frame: int, blobs: Blobs, core: float) -> np.ndarray | None:
        """Per blob label, its pixels above ``core`` x the threshold (None: no test)."""
        if core <= 0:
            return None
        model = self.background_model()
        strong = model.contrast(self._grey(frame)) > core * model.body_threshold
        return np.bincount(blobs.labels[strong], minlength=len(blobs.areas))

    def typical_area(self) -> float:
        """Return the typical animal area (pixels).

        It is the median over 8 sampled frames of each frame's
        :func:`.blobs.typical_area` (0 when nothing stands out).
        """
        self._require_video()
        if self._typical is None:
            vals = []
            for f in np.unique(np.linspace(0, self.n_frames - 1, 8).round().astype(int)):
                blobs = self._blobs(int(f))
                a = typical_area(blobs, self._core_counts(int(f), blobs, 2.0))
                if a > 0:
                    vals.append(a)
            self._typical = float(np.median(vals)) if vals else 0.0
        return self._typical

    def _check_frame(self, frame: int) -> int:
        if not 0 <= int(frame) < self.n_frames:
            raise ValueError(f"frame {frame} is outside the video (0..{self.n_frames - 1})")
        return int(frame)

    # -- prompts ---------------------------------------------------------------------
    def _resolve(self, frame: int, object_id: int, p: ObjectPrompts) -> Region:
        """Select the mask of an object's prompts on one frame (raises BadPromptError)."""
        claimed = np.zeros(self.frame_shape, np.int32)
        for (f, o), reg in self._prompt_regions.items():
            if f == frame and o != object_id and reg.crop.size:
                y0, y1, x0, x1 = reg.bounds
                claimed[y0:y1, x0:x1][reg.crop] = o
        packed = self._cache.get(object_id, {}).get(frame)
        cached = Region.unpack(packed) if packed is not None else None
        return resolve(
            p, frame, object_id, self._blobs(frame, min_area=1), claimed, cached, self.snap_radius
        )

    def set_prompts(self, frame: int, object_id: int, prompts: ObjectPrompts) -> FrameResult:
        """Replace ``object_id``'s prompts on ``frame``; returns that frame's prompted masks."""
        self._require_video()
        frame = self._check_frame(frame)
        key = (frame, int(object_id))
        if prompts is None or prompts.is_empty():
            self._prompts.pop(key, None)
            self._prompt_regions.pop(key, None)
        else:
            region = self._resolve(frame, int(object_id), prompts)
            self._prompts[key] = prompts
            self._prompt_regions[key] = region
        masks, scores = {}, {}
        for (f, o), reg in self._prompt_regions.items():
            if f == frame:
                masks[o] = reg.to_mask(self.frame_shape)
                scores[o] = SCORE_MATCH
        if int(object_id) not in masks:
            cached = self._cache.get(int(object_id), {}).get(frame)
            got = Region.unpack(cached) if cached is not None else None
            masks[int(object_id)] = (
                got.to_mask(self.frame_shape)
                if got is not None
                else np.zeros(self.frame_shape, bool)
            )
            scores[int(object_id)] = SCORE_MATCH if got is not None and not got.empty else LOST
        return FrameResult(frame, masks, scores)

    def remove_object(self, object_id: int) -> None:
        """Forget an object: its prompts and tracked masks."""
        for key in [k for k in self._prompts if k[1] == object_id]:
            self._prompts.pop(key, None)
            self._prompt_regions.pop(key, None)
        self._cache.pop(object_id, None)

    def reset(self) -> None:
        """Forget every prompt and tracked mask (the video and background stay)."""
        self._prompts.clear()
        self._prompt_regions.clear()
        self._cache.clear()
        self._seg = None

    def close(self) -> None:
        """Release the video and the background model."""
        self.reset()
        self.video = None
        self.model = None

    # -- tracking --------------------------------------------------------------------
    def _objects(self) -> list[int]:
        return sorted({o for _, o in self._prompt_regions})

    def _initial_track(self, obj: int, start: int, step: int) -> Track:
        """Tracking memory for ``obj`` just before ``start`` (see docs/classic.md)."""
        frames = sorted(f for f, o in self._prompt_regions if o == obj)
        anchor = min(frames, key=lambda f: (abs(f - start), (f - start) * step > 0))
        ref_area = float(self._prompt_regions[(anchor, obj)].area)
        cache = self._cache.get(obj, {})
        prev = cache.get(start - step)
        if prev is not None:
            region = Region.unpack(prev)
            if not region.empty:
                before = cache.get(start - 2 * step)
                vel = (0.0, 0.0)
                if before is not None:
                    b = Region.unpack(before)
                    if not b.empty:
                        (x1, y1), (x0, y0) = region.centroid(), b.centroid()
                        vel = (x1 - x0, y1 - y0)
                return Track(region, ref_area, vel)
        return Track(self._prompt_regions[(anchor, obj)], ref_area)

    def propagate(self, start: int, stop: int, reverse: bool = False) -> Iterator[FrameResult]:
        """Track every prompted object from ``start`` to ``stop`` (inclusive), frame by frame."""
        self._require_video()
        start, stop = self._check_frame(start), self._check_frame(stop)
        if (stop < start and not reverse) or (stop > start and reverse):
            raise ValueError(
                f"propagate({start}, {stop}, reverse={reverse}): forward needs start <= stop, "
                "backward start >= stop"
            )
        step = -1 if reverse else 1
        tracks = {o: self._initial_track(o, start, step) for o in self._objects()}
        left: Leftovers | None = None  # what no object took on the previous frame
        for n, f in enumerate(range(start, stop + step, step)):
            result, left = self._step(f, tracks, left, n)
            yield result

    def _predict(self, others: list[int], tracks: dict[int, Track], blobs: Blobs, labels):
        """Move each object's mask by its velocity and find the blob it overlaps most.

        Returns the predictions, the crawled pre-merge bodies (templates), per object the
        overlap count with every blob label, and each object's most-overlapped blob.
        """
        shape = self.frame_shape
        preds: dict[int, Region] = {}
        templates: dict[int, Region] = {}
        overlaps: dict[int, np.ndarray] = {}
        primary: dict[int, int] = {}
        for o in others:
            t = tracks[o]
            dx, dy = (0, 0) if t.lost else (round(t.velocity[0]), round(t.velocity[1]))
            # (a lost object's overlap test uses where it was last seen: it may come back
            # there; matching by distance uses its motion prediction)
            preds[o] = t.region.shifted(dx, dy, shape) if (dx or dy) else t.region
            if t.template is not None:
                # while merged: the pre-merge body crawled on at the pre-merge speed
                k = t.merged_for + 1
                templates[o] = t.template.slid(k * float(np.hypot(*t.velocity))).render(shape)
            cnt = self._overlap(preds[o], blobs, labels)
            if cnt.max() == 0 and preds[o] is not t.region:
                # the motion prediction overlaps nothing (a wrong velocity, e.g. after
                # a jump): where it was last seen
                preds[o] = t.region
                cnt = self._overlap(t.region, blobs, labels)
            overlaps[o] = cnt
            if cnt.max() > 0:
                b = int(np.argmax(cnt))
                # a lost object comes back whole, not as a fragment of itself
                if not t.lost or blobs.areas[b] >= 0.4 * t.ref_area:
                    primary[o] = b
        return preds, templates, overlaps, primary

    @staticmethod
    def _overlap(pred: Region, blobs: Blobs, labels: np.ndarray) -> np.ndarray:
        """Count, per blob label, the pixels of ``pred`` on it (0 for small blobs)."""
        vals = pred.values_in(labels)
        cnt = np.bincount(vals, minlength=1) if vals.size else np.zeros(1, int)
        cnt[blobs.areas[: len(cnt)] == 0] = 0  # background and small blobs
        return cnt

    def _step(
        self, frame: int, tracks: dict[int, Track], left: Leftovers | None, n: int = 0
    ) -> tuple[FrameResult, Leftovers]:
        """Track every object onto ``frame``; returns the result and this frame's leftovers."""
        shape = self.frame_shape
        out: dict[int, tuple[Region, float]] = {}
        prompted = {o for (f, o) in self._prompt_regions if f == frame and o in tracks}
        blobs = self._blobs(frame)
        labels = blobs.labels
        if prompted:
            labels = labels.copy()
            for o in prompted:
                reg = self._prompt_regions[(frame, o)]
                y0, y1, x0, x1 = reg.bounds
                labels[y0:y1, x0:x1][reg.crop] = 0
                out[o] = (reg, SCORE_MATCH)
        others = [o for o in sorted(tracks) if o not in prompted]
        preds, templates, overlaps, primary = self._predict(others, tracks, blobs, labels)
        if left is not None:
            # a blob that continues an animal nobody tracked is not this object's
            primary = {
                o: b
                for o, b in primary.items()
                if not left.foreign([b], tracks[o], blobs, labels)[0]
            }
        claims: dict[int, list[int]] = {}
        for o, b in primary.items():
            claims.setdefault(b, []).append(o)
        # objects without overlap: one global assignment on the distance to free blobs
        unmatched = [o for o in others if o not in primary]
        taken = set(claims)
        merged: set[int] = set()
        coasted: set[int] = set()  # lost objects found in a merge where they coasted to
        if unmatched:
            self._reacquire(unmatched, tracks, blobs, labels, taken, left, out, coasted)
            merged.update(coasted)
        for b, objs in claims.items():
            blob = Region.from_labels(labels, blobs.slices[b - 1], [b])
            if blob.empty:
                continue
            ghost = None
            if left is not None:
                big = max(objs, key=lambda o: max(tracks[o].ref_area, tracks[o].region.area))
                found_ghost = left.ghost(blob, tracks[big])
                ghost = found_ghost[0] if found_ghost is not None else None
            if len(objs) == 1 and ghost is None:
                o = objs[0]
                t = tracks[o]
                score = SCORE_MATCH
                if blob.area > 1.5 * max(t.ref_area, t.region.area):
                    # debris merged in: keep what is near the body
                    blob = clip_to(blob, preds[o], 3.0 + np.hypot(*t.velocity), shape)
                    score = SCORE_SPLIT
                out[o] = (add_fragments(blob, overlaps[o], blobs, labels, taken, b), score)
            else:
                parts = self._share(blob, objs, tracks, preds, templates, ghost, coasted)
                out.update({o: (part, SCORE_SPLIT) for o, part in parts.items()})
                merged.update(parts)
        masks, scores = self._update(frame, tracks, out, merged, prompted, coasted)
        regions = [reg for reg, _ in out.values() if reg is not None and not reg.empty]
        return FrameResult(frame, masks, scores), Leftovers(blobs, regions, n, left)

    def _reacquire(
        self, objs, tracks, blobs, labels, taken: set, left, out: dict, coasted: set[int]
    ) -> None:
        """Link the objects that overlap nothing to free blobs (:func:`.linking.match_by_distance`).

        An object that comes back touching an animal nobody tracks takes its share of
        the merged blob only (split against the animal's leftovers, the object where
        its velocity carried it), and only when the share is whole (at least 0.4 x its
        area); it is then merged and keeps its velocity (``coasted``) when it is where
        its velocity carried it (:func:`.linking.coasted_to`), else it restarts with none.
        """
        shape = self.frame_shape
        found = match_by_distance(objs, tracks, blobs, labels, taken, self.max_jump, left)
        for o, reg in found.items():
            taken.update(int(b) for b in np.unique(reg.values_in(labels)))
            t = tracks[o]
            ghost = left.ghost(reg, t) if left is not None else None
            if ghost is not None:
                hint = predicted_region(t, shape).union(ghost[1])
                reg = split_blob(reg, [hint, ghost[0]], shape)[0]
                if reg.area - _inside(ghost[0], reg) < 0.4 * t.ref_area:
                    continue  # whole, and not the untracked animal's own pixels
                if not t.lost or coasted_to(t, reg, self.max_jump):
                    coasted.add(o)  # where its velocity carried it: merged, keeps it
                # else linked from far: no motion, as any re-acquisition by distance
            out[o] = (reg, SCORE_DISTANCE)

    def _share(
        self, blob, objs, tracks, preds, templates, ghost, coasted: set[int]
    ) -> dict[int, Region]:
        """Split a blob claimed by several objects (or by one and an untracked animal).

        The untracked animal's last leftover pixels (``ghost``) are one more prediction
        whose share nobody takes; with no motion model of its own, it also keeps what
        lies off each object's predicted body. A lost object is predicted where its
        velocity carried it while unseen when that overlaps the blob more than its last
        mask (it is then ``coasted``: it keeps its velocity); it takes its share only
        when the share is whole (at least 0.4 x its area) without the ghost's pixels.
        """
        shape = self.frame_shape
        preds = dict(preds)
        for o in objs:
            if tracks[o].lost:
                moved = predicted_region(tracks[o], shape)
                if _inside(moved, blob) > _inside(preds[o], blob):
                    # it kept moving while unseen: it is where its velocity carried it
                    preds[o] = moved
                    coasted.add(o)
        preds_b = [preds[o] for o in objs] + ([ghost] if ghost is not None else [])
        tmpl_b = [templates.get(o) for o in objs] + [None] * (ghost is not None)
        parts = split_blob(blob, preds_b, shape, tmpl_b)
        out: dict[int, Region] = {}
        for o, part in zip(objs, parts):
            t = tracks[o]
            if ghost is not None:
                body = preds[o].union(templates[o]) if o in templates else preds[o]
                part = clip_to(part, body, 2.0 + 0.25 * np.hypot(*t.velocity), shape)
            new = part.area - (_inside(ghost, part) if ghost is not None else 0)
            if t.lost and new < 0.4 * t.ref_area:
                # a lost object comes back whole (and not as the pixels the untracked
                # animal had on the frame before), or not yet
                continue
            out[o] = part
        # only this blob's objects that took no share leave ``coasted`` (it holds the
        # whole frame's: other blobs' and those :meth:`_reacquire` found)
        coasted.difference_update(o for o in objs if o not in out)
        return out

    def _update(self, frame, tracks, out, merged, prompted, coasted):
        """Move each track on to its region of this frame (or count it lost); cache it."""
        shape = self.frame_shape
        masks, scores = {}, {}
        for o in sorted(tracks):
            t = tracks[o]
            reg, base = out.get(o, (None, LOST))
            if reg is None or reg.empty:
                masks[o] = np.zeros(shape, bool)
                scores[o] = LOST
                t.lost += 1  # the velocity is kept: the prediction coasts on it
                self._cache.setdefault(o, {})[frame] = Region(0, 0, np.zeros((0, 0), bool)).pack()
                continue
            if o in prompted:
                t.ref_area = float(reg.area)
                score = SCORE_MATCH
            else:
                score = base * area_factor(reg.area, t.ref_area)
            if o in merged:
                # keep the pre-merge velocity (none after a loss, unless the object was
                # found where it coasted to); remember the body
                if o in coasted:
                    k = min(t.lost, 5)
                    dx, dy = round(k * t.velocity[0]), round(k * t.velocity[1])
                    t.template = body_of(t.region.shifted(dx, dy, shape), t.velocity)
                    t.merged_for = 0
                    t.velocity = _moved_on(t, reg)
                elif t.lost:
                    t.velocity = (0.0, 0.0)
                if t.template is None:
                    t.template, t.merged_for = body_of(t.region, t.velocity), 0
                t.merged_for += 1
            else:
                if o in prompted or (t.lost and not coasted_to(t, reg, self.max_jump)):
                    # a prompt re-anchors, a re-acquisition may come from far: no motion
                    # (unless it is where its velocity carried it while unseen)
                    t.velocity = (0.0, 0.0)
                elif t.template is None:
                    t.velocity = _moved_on(t, reg)
                t.template, t.merged_for = None, 0
            t.region, t.lost = reg, 0
            masks[o] = reg.to_mask(shape)
            scores[o] = float(score)
            self._cache.setdefault(o, {})[frame] = reg.pack()
        return masks, scores


def _moved_on(track: Track, region: Region) -> tuple[float, float]:
    """Return the track's velocity averaged with its displacement a frame since last seen."""
    (x1, y1), (x0, y0) = region.centroid(), track.region.centroid()
    n = track.lost + 1
    return 0.5 * (track.velocity[0] + (x1 - x0) / n), 0.5 * (track.velocity[1] + (y1 - y0) / n)


def _inside(region: Region, blob: Region) -> int:
    """Count the pixels of ``region`` inside ``blob``."""
    window = blob.bounds
    return int(np.count_nonzero(region.paste(window) & blob.paste(window)))
