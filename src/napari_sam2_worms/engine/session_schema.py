"""The JSON Schema of ``session.json`` and the checks a schema cannot express.

:func:`validate_session_doc` raises :class:`SessionFileError` naming the field
(``objects[1].id: 'a' is not of type 'integer'``) for every malformed document, so an
edited or damaged file never surfaces as a raw Python error.
"""

from __future__ import annotations

from typing import Any

SESSION_FORMAT = "napari-sam2-worms-session"
SESSION_VERSION = 1


class SessionFileError(ValueError):
    """A session folder that cannot be opened; the message says what is wrong."""


_INT = {"type": "integer"}
_POS_NUM_OR_NULL = {"type": ["number", "null"], "exclusiveMinimum": 0}
_RECORD = {
    "type": "object",
    "required": ["size", "sha256"],
    "properties": {
        "size": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "generation": {"type": "integer", "minimum": 0},
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "version", "video", "objects"],
    "properties": {
        "format": {"const": SESSION_FORMAT},
        "version": {"const": SESSION_VERSION},
        "generation": {"type": "integer", "minimum": 0},
        "video": {
            "type": "object",
            "required": ["shape"],
            "properties": {
                "shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1},
                    "minItems": 3,
                    "maxItems": 4,
                },
                "path": {"type": ["string", "null"]},
                "relative_path": {"type": ["string", "null"]},
                "fps": _POS_NUM_OR_NULL,
                "fingerprint": {"type": "object"},
            },
        },
        "backend": {"type": "object"},
        "fps": _POS_NUM_OR_NULL,
        "pixel_size": _POS_NUM_OR_NULL,
        "objects": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "name"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "name": {"type": "string", "minLength": 1},
                    "color": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                },
            },
        },
        "prompts": {"type": "object"},
        "painted": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["frame", "object"],
                "properties": {"frame": {"type": "integer", "minimum": 0}, "object": _INT},
            },
        },
        "flips": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "start", "stop"],
                "properties": {
                    "object": _INT,
                    "start": {"type": "integer", "minimum": 0},
                    "stop": {"type": "integer", "minimum": 0},
                },
            },
        },
        "score_objects": {"type": "array", "items": _INT},
        "settings": {"type": "object"},
        "files": {"type": "object", "additionalProperties": _RECORD},
        "derived": {"type": "object", "additionalProperties": _RECORD},
    },
}


def _field(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def validate_session_doc(doc: Any, where: str = "session.json") -> dict[str, Any]:
    """Check a parsed ``session.json``; returns it. Raises :class:`SessionFileError`."""
    import jsonschema

    if isinstance(doc, dict) and doc.get("format") != SESSION_FORMAT:
        raise SessionFileError(f"{where} is not a napari-sam2-worms session file")
    if isinstance(doc, dict) and doc.get("version") != SESSION_VERSION:
        raise SessionFileError(
            f"{where} has version {doc.get('version')!r}; this program reads {SESSION_VERSION}"
        )
    validator = jsonschema.Draft202012Validator(SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        raise SessionFileError(f"{where}: {_field(error.absolute_path)}: {error.message}")
    n_frames = doc["video"]["shape"][0]
    ids = [o["id"] for o in doc["objects"]]
    for i, o in enumerate(ids):
        if o in ids[:i]:
            raise SessionFileError(f"{where}: objects[{i}].id: object {o} is listed twice")
    for key, items, fields in (
        ("painted", doc.get("painted", []), ("frame",)),
        ("flips", doc.get("flips", []), ("start", "stop")),
    ):
        for i, item in enumerate(items):
            obj = item["object"]
            if obj not in ids:
                raise SessionFileError(f"{where}: {key}[{i}].object: there is no object {obj}")
            for f in fields:
                if item[f] >= n_frames:
                    raise SessionFileError(
                        f"{where}: {key}[{i}].{f}: frame {item[f]} is past the video's "
                        f"{n_frames} frames"
                    )
    for i, o in enumerate(doc.get("score_objects", [])):
        if o not in ids:
            raise SessionFileError(f"{where}: score_objects[{i}]: there is no object {o}")
    return doc
