"""Pure adapters between a :class:`TrackingSession` and napari layer data.

Nothing here touches a viewer: functions take session objects / arrays and return the
arrays napari layers want (``(t, row, col)`` coordinates), and back. All conversions
between napari's (row, col) and our (x, y) go through :mod:`napari_sam2_worms.coords`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..coords import frame_xy_to_napari, napari_to_frame_xy

#: Border colour of a positive / negative prompt point.
POSITIVE_BORDER = "#00ff00"
NEGATIVE_BORDER = "#ff0000"

#: Thresholds of the review flags.
LOW_SCORE = 0.0
AREA_JUMP = 0.4
LENGTH_JUMP = 0.3


def hex_to_rgba(color: str) -> np.ndarray:
    """'#rrggbb' -> float RGBA (4,)."""
    c = color.lstrip("#")
    return np.array([int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [1.0], float)


def label_colors(objects: dict) -> dict:
    """Object id -> RGBA colour, plus background (0) transparent and a default (None)."""
    colors = {0: np.zeros(4), None: np.array([0.5, 0.5, 0.5, 1.0])}
    for oid, obj in objects.items():
        colors[int(oid)] = hex_to_rgba(obj.color)
    return colors


def labels_colormap(objects: dict):
    """Return a napari ``DirectLabelColormap`` painting each object in its colour."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=label_colors(objects))


def prompts_to_points(session) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All click prompts of ``session`` as points-layer data.

    Returns
    -------
    data : (N, 3) napari (t, row, col).
    objects : (N,) int object ids.
    positive : (N,) bool polarity.
    """
    rows, objs, pos = [], [], []
    for (frame, obj), pts in sorted(session.prompts.points.items()):
        if not pts:
            continue
        xy = np.array([(p[0], p[1]) for p in pts], float)
        rows.append(frame_xy_to_napari(frame, xy))
        objs.extend([obj] * len(pts))
        pos.extend([bool(p[2]) for p in pts])
    if not rows:
        return np.zeros((0, 3)), np.zeros(0, int), np.zeros(0, bool)
    return np.concatenate(rows), np.asarray(objs, int), np.asarray(pos, bool)


def points_to_prompts(
    data: np.ndarray, objects: np.ndarray, positive: np.ndarray
) -> dict[tuple[int, int], list[tuple[float, float, bool]]]:
    """Points-layer data -> ``{(frame, object): [(x, y, positive), ...]}`` (layer order)."""
    out: dict[tuple[int, int], list[tuple[float, float, bool]]] = {}
    if len(data) == 0:
        return out
    frames, xy = napari_to_frame_xy(np.asarray(data)[:, -3:])
    for f, (x, y), o, p in zip(frames, xy, objects, positive):
        out.setdefault((int(f), int(o)), []).append((float(x), float(y), bool(p)))
    return out


def changed_prompt_keys(session, wanted: dict) -> list[tuple[int, int]]:
    """(frame, object) pairs whose clicks in ``wanted`` differ from the session's."""
    have = session.prompts.points
    keys = set(have) | set(wanted)
    changed = []
    for key in sorted(keys):
        a = [tuple(np.round(p[:2], 3)) + (bool(p[2]),) for p in have.get(key, [])]
        b = [tuple(np.round(p[:2], 3)) + (bool(p[2]),) for p in wanted.get(key, [])]
        if a != b:
            changed.append(key)
    return changed


def point_styles(objects_of_points: np.ndarray, positive: np.ndarray, session_objects: dict):
    """Face colours (object colour), border colours and symbols (polarity) per point."""
    grey = np.array([0.5, 0.5, 0.5, 1.0])
    face = np.array(
        [
            hex_to_rgba(session_objects[o].color) if o in session_objects else grey
            for o in objects_of_points
        ]
    ).reshape(-1, 4)
    border = np.array(
        [hex_to_rgba(POSITIVE_BORDER if p else NEGATIVE_BORDER) for p in positive]
    ).reshape(-1, 4)
    symbols = np.array(["disc" if p else "x" for p in positive], dtype=object)
    return face, border, symbols


@dataclass
class Flag:
    """One flagged (frame, object) for review."""

    frame: int
    object_id: int
    reason: str

    def text(self, names: dict) -> str:
        return f"frame {self.frame}: {names.get(self.object_id, self.object_id)}: {self.reason}"


def flagged_frames(session, tracks) -> list[Flag]:
    """Frames to review: lost / low score, sudden area or length change, skeleton flags.

    Only frames with a result (see ``session.computed_frames``) are considered.
    """
    flags: list[Flag] = []
    computed = set(int(f) for f in session.computed_frames())
    for k, oid in enumerate(tracks.object_ids):
        oid = int(oid)
        scores = session.scores.get(oid)
        area = tracks.features["area"][:, k]
        length = tracks.features["length"][:, k]
        for ti, frame in enumerate(tracks.frames):
            frame = int(frame)
            if frame not in computed:
                continue
            reasons = []
            s = float(scores[frame]) if scores is not None else np.nan
            present = bool((session.labels[frame] == oid).any())
            if not present or (np.isfinite(s) is False and not np.isnan(s)):
                reasons.append("lost")
            elif np.isfinite(s) and s < LOW_SCORE:
                reasons.append(f"low score {s:.2f}")
            if ti > 0 and present:
                a0, a1 = area[ti - 1], area[ti]
                if np.isfinite(a0) and np.isfinite(a1) and a0 > 0 and abs(a1 / a0 - 1) > AREA_JUMP:
                    reasons.append("area change")
                l0, l1 = length[ti - 1], length[ti]
                if (
                    np.isfinite(l0)
                    and np.isfinite(l1)
                    and l0 > 0
                    and abs(l1 / l0 - 1) > LENGTH_JUMP
                ):
                    reasons.append("length change")
            why = str(tracks.reason[ti, k] or "")
            if present and why and why != "missing":
                reasons.append(why)
            if reasons:
                flags.append(Flag(frame, oid, ", ".join(reasons)))
    flags.sort(key=lambda f: (f.frame, f.object_id))
    return flags


def reason_kind(reason: str) -> str:
    """Return the kind of one reason ("low score -0.31" -> "low score")."""
    reason = reason.strip()
    return "low score" if reason.startswith("low score") else reason


@dataclass
class FlagEvent:
    """Consecutive flagged frames of one object for one kind of reason."""

    object_id: int
    kind: str
    start: int
    stop: int  # inclusive

    @property
    def frame(self) -> int:
        """The frame the review goes to (the event's first)."""
        return self.start

    def text(self, names: dict) -> str:
        name = names.get(self.object_id, self.object_id)
        span = (
            f"frame {self.start}"
            if self.start == self.stop
            else (f"frames {self.start}-{self.stop}")
        )
        return f"{span}: {name}: {self.kind}"


def group_flags(flags: list[Flag], computed=None, max_gap: int = 1) -> list[FlagEvent]:
    """Group flags into events, sorted by first frame then object.

    An event is a run of one object and kind whose frames follow each other (at most
    ``max_gap`` computed frames apart).

    ``computed``: the frames with a result (frames in between that were never computed do
    not break an event); default: every frame.
    """
    by: dict[tuple[int, str], list[int]] = {}
    for f in flags:
        for reason in f.reason.split(","):
            by.setdefault((int(f.object_id), reason_kind(reason)), []).append(int(f.frame))
    order = None
    if computed is not None:
        order = {int(fr): i for i, fr in enumerate(sorted(int(x) for x in computed))}
    events: list[FlagEvent] = []
    for (oid, kind), frames in by.items():
        frames = sorted(set(frames))
        pos = [order.get(fr, fr) for fr in frames] if order else frames
        a = prev = frames[0]
        prev_pos = pos[0]
        for fr, p in zip(frames[1:], pos[1:]):
            if p - prev_pos > max_gap:
                events.append(FlagEvent(oid, kind, a, prev))
                a = fr
            prev, prev_pos = fr, p
        events.append(FlagEvent(oid, kind, a, prev))
    events.sort(key=lambda e: (e.start, e.object_id, e.kind))
    return events
