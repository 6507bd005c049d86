"""User prompts (points, boxes, painted masks) and the prompts file, version 1.

Prompts file (x = column, y = row, pixels of the original video)::

    {"version": 1,
     "points": [{"object": 1, "frame": 0, "x": 120.5, "y": 88.0, "positive": true}, ...],
     "boxes":  [{"object": 2, "frame": 0, "x0": 10, "y0": 20, "x1": 60, "y1": 45}],
     "names":  {"1": "worm1"}}

``names`` is optional. Invalid files raise :class:`PromptsFileError` naming the bad entry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backends.base import ObjectPrompts
from ..utils import atomic_write_text

PROMPTS_VERSION = 1


class PromptsFileError(ValueError):
    """A prompts file that cannot be used; the message names the bad entry."""


@dataclass
class PromptStore:
    """All prompts of a session, keyed by (frame, object id).

    Points are kept in click order so that a point can be removed by index.
    """

    points: dict[tuple[int, int], list[tuple[float, float, bool]]] = field(default_factory=dict)
    boxes: dict[tuple[int, int], tuple[float, float, float, float]] = field(default_factory=dict)
    masks: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def keys(self) -> set[tuple[int, int]]:
        """Every (frame, object) that holds a prompt or a painted mask."""
        return set(self.points) | set(self.boxes) | set(self.masks)

    def for_frame_object(self, frame: int, object_id: int) -> ObjectPrompts:
        """Convert one object's prompts on one frame to the backend's view."""
        key = (frame, object_id)
        pts = self.points.get(key, [])
        return ObjectPrompts(
            points=np.array([[p[0], p[1]] for p in pts], np.float32).reshape(-1, 2),
            labels=np.array([1 if p[2] else 0 for p in pts], np.int32),
            box=self.boxes.get(key),
            mask=self.masks.get(key),
        )

    def frames(self, object_id: int | None = None) -> list[int]:
        """Sorted frames with prompts (for one object, or any)."""
        return sorted({f for f, o in self.keys() if object_id is None or o == object_id})

    def objects(self) -> list[int]:
        """Sorted ids of the objects with prompts."""
        return sorted({o for _, o in self.keys()})

    def drop(self, frame: int | None = None, object_id: int | None = None) -> None:
        """Remove prompts matching ``frame`` and/or ``object_id`` (None matches all)."""
        for store in (self.points, self.boxes, self.masks):
            for key in list(store):
                if (frame is None or key[0] == frame) and (
                    object_id is None or key[1] == object_id
                ):
                    del store[key]

    # -- prompts file --------------------------------------------------------------
    def to_json_dict(self, names: dict[int, str] | None = None) -> dict:
        """Points and boxes as a version-1 prompts dict (painted masks are not included)."""
        points = [
            {"object": o, "frame": f, "x": float(x), "y": float(y), "positive": bool(pos)}
            for (f, o), pts in sorted(self.points.items())
            for (x, y, pos) in pts
        ]
        boxes = [
            {"object": o, "frame": f, "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3]}
            for (f, o), b in sorted(self.boxes.items())
        ]
        out: dict = {"version": PROMPTS_VERSION, "points": points, "boxes": boxes}
        if names:
            out["names"] = {str(k): v for k, v in names.items()}
        return out


def _number(entry: dict, key: str, where: str) -> float:
    if key not in entry:
        raise PromptsFileError(f"{where}: missing '{key}'")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PromptsFileError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _index(entry: dict, key: str, where: str, minimum: int) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PromptsFileError(f"{where}: '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _parse_entry(
    store: PromptStore,
    kind: str,
    entry: object,
    where: str,
    n_frames: int | None,
    size: tuple[int, int] | None,
) -> None:
    """Check one entry of the ``points`` or ``boxes`` list and add it to ``store``."""
    if not isinstance(entry, dict):
        raise PromptsFileError(f"{where}: must be an object")
    obj = _index(entry, "object", where, 1)
    frame = _index(entry, "frame", where, 0)
    if n_frames is not None and frame >= n_frames:
        raise PromptsFileError(
            f"{where}: frame {frame} is past the video's end ({n_frames} frames)"
        )
    if kind == "points":
        x, y = _number(entry, "x", where), _number(entry, "y", where)
        _check_inside(where, [(x, y)], size)
        positive = entry.get("positive", True)
        if not isinstance(positive, bool):
            raise PromptsFileError(f"{where}: 'positive' must be true or false")
        store.points.setdefault((frame, obj), []).append((x, y, positive))
        return
    x0, y0, x1, y1 = (_number(entry, k, where) for k in ("x0", "y0", "x1", "y1"))
    if x1 <= x0 or y1 <= y0:
        raise PromptsFileError(f"{where}: the box needs x1 > x0 and y1 > y0")
    _check_inside(where, [(x0, y0), (x1, y1)], size)
    if (frame, obj) in store.boxes:
        raise PromptsFileError(f"{where}: object {obj} already has a box on frame {frame}")
    store.boxes[(frame, obj)] = (x0, y0, x1, y1)


def _parse_names(names_raw: object) -> dict[int, str]:
    """Check the ``names`` mapping (object id -> name); return it with int keys."""
    if not isinstance(names_raw, dict):
        raise PromptsFileError("'names' must map object ids to names")
    names = {}
    for k, v in names_raw.items():
        if not str(k).isdigit() or not isinstance(v, str):
            raise PromptsFileError(f"names[{k!r}]: must map an object id to a string")
        if not v.strip():
            raise PromptsFileError(f"names[{k!r}]: a name cannot be empty")
        names[int(k)] = v.strip()
    return names


def parse_prompts(
    data: dict, n_frames: int | None = None, size: tuple[int, int] | None = None
) -> tuple[PromptStore, dict[int, str]]:
    """Validate a version-1 prompts dict.

    Parameters
    ----------
    data : the decoded JSON.
    n_frames : number of frames of the video, to check frame indices.
    size : (width, height) of the video, to check coordinates.

    Returns
    -------
    (PromptStore, names) where names maps object id -> name (may be empty).
    """
    if not isinstance(data, dict):
        raise PromptsFileError("the prompts file must hold a JSON object")
    if data.get("version") != PROMPTS_VERSION:
        raise PromptsFileError(
            f"unsupported prompts version {data.get('version')!r}; this program reads version 1"
        )
    store = PromptStore()
    for kind in ("points", "boxes"):
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise PromptsFileError(f"'{kind}' must be a list")
        for i, entry in enumerate(entries):
            _parse_entry(store, kind, entry, f"{kind}[{i}]", n_frames, size)
    names = _parse_names(data.get("names", {}))
    if not store.keys():
        raise PromptsFileError("the prompts file holds no points and no boxes")
    check_distinct_names(names, store.objects())
    return store, names


def check_distinct_names(names: dict[int, str], objects: list[int] | None = None) -> None:
    """Raise :class:`PromptsFileError` when two objects would have the same name.

    Names compare ignoring case: two given names, or a given name and the default
    ``worm<id>`` of an unnamed object among ``objects``. Exports (DeepLabCut, SLEAP,
    NWB...) need distinct names.
    """
    final = dict(names)
    for obj in objects or ():
        final.setdefault(int(obj), f"worm{obj}")
    seen: dict[str, int] = {}
    for obj in sorted(final):
        key = final[obj].casefold()
        if key in seen:
            raise PromptsFileError(
                f"names: objects {seen[key]} and {obj} are both called {final[obj]!r} "
                "(names must differ, ignoring case; unnamed objects are worm<id>)"
            )
        seen[key] = obj


def _check_inside(where: str, pts, size: tuple[int, int] | None) -> None:
    if size is None:
        return
    w, h = size
    for x, y in pts:
        if not (0 <= x <= w and 0 <= y <= h):
            raise PromptsFileError(
                f"{where}: ({x}, {y}) is outside the {w}x{h} video (x = column, y = row)"
            )


#: the largest prompts file read (a million clicks is about 80 MiB of JSON)
MAX_PROMPTS_BYTES = 256 * 2**20


def read_prompts_file(
    path: str | Path, n_frames: int | None = None, size: tuple[int, int] | None = None
) -> tuple[PromptStore, dict[int, str]]:
    """Read and validate a prompts file (see module docstring)."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            raise PromptsFileError(f"{path} is not a regular file (a pipe or a device)")
        if path.is_file() and path.stat().st_size > MAX_PROMPTS_BYTES:
            raise PromptsFileError(
                f"{path} is {path.stat().st_size / 2**20:.0f} MiB; a prompts file is a small "
                f"JSON text (at most {MAX_PROMPTS_BYTES // 2**20} MiB): is it the right file?"
            )
        # utf-8-sig: the byte-order mark some Windows editors put first is not an error
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError as exc:
        raise PromptsFileError(f"prompts file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise PromptsFileError(
            f"{path} is not a UTF-8 text file (byte {exc.start} cannot be decoded); "
            "a prompts file is JSON text: save it as UTF-8"
        ) from exc
    except json.JSONDecodeError as exc:
        raise PromptsFileError(f"{path} is not valid JSON: {exc}") from exc
    except OSError as exc:  # a folder, no permission...
        raise PromptsFileError(
            f"prompts file {path} cannot be read ({exc.strerror or exc})"
        ) from exc
    try:
        return parse_prompts(data, n_frames, size)
    except PromptsFileError as exc:
        raise PromptsFileError(f"{path}: {exc}") from None


def apply_prompts(session, store: PromptStore, names: dict[int, str]) -> None:
    """Add the objects of a read prompts file to ``session`` with their boxes and clicks.

    The objects come from :func:`read_prompts_file` with their names (used by ``track``
    and ``batch``).
    """
    for obj in store.objects():
        session.add_object(name=names.get(obj), object_id=obj)
    for frame, obj in sorted(store.keys()):
        p = store.for_frame_object(frame, obj)
        if p.box is not None:
            session.set_box(frame, obj, p.box)
        if len(p.points):
            session.set_points(frame, obj, p.points, p.labels.astype(bool))


def write_prompts_file(
    path: str | Path, store: PromptStore, names: dict[int, str] | None = None
) -> None:
    """Write points and boxes as a version-1 prompts file (atomic)."""
    atomic_write_text(path, json.dumps(store.to_json_dict(names), indent=1))
