"""Griffe extension for the API reference: our docstrings' reST habits as Markdown.

mkdocstrings renders docstrings as Markdown; ours are numpydoc with two reST habits:

- ``` ``code`` ``` and roles (``:func:`~.module.name```) become `` `code` `` and
  `` `name` `` (plain code, not links: a link to a page that is not in the reference
  would make ``mkdocs build --strict`` fail);
- a parameter written ``name : what it is`` (a description where numpydoc puts the
  type) becomes ``name`` with that description; ``name : int or None`` stays a type.

Loaded by ``mkdocs.yml`` (``extensions:`` of the python handler); the sources are not
changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`<]+?)(?:\s*<[^>]+>)?`")
_LITERAL = re.compile(r"``(.+?)``")
_SECTIONS = {"parameters", "other parameters", "attributes", "keyword arguments"}
_ITEM = re.compile(r"^(?P<name>\*{0,2}\w+(?:, \*{0,2}\w+)*) : (?P<text>.+)$")
#: lower-case words that name types in our docstrings
_TYPE_WORDS = {
    "int",
    "float",
    "str",
    "bool",
    "bytes",
    "none",
    "list",
    "dict",
    "tuple",
    "set",
    "callable",
    "object",
    "any",
    "path",
    "path-like",
    "array",
    "ndarray",
    "iterable",
    "iterator",
    "sequence",
    "mapping",
    "generator",
}
_GLUE = {"or", "of", "optional"}


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    target = target.strip()
    if tilde or target.startswith("."):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _is_type(text: str) -> bool:
    """Whether ``text`` after ``name :`` names a type (else it is a description)."""
    if text.endswith((".", ":")) or "(" in text or "`" in text:
        return False
    words = [w for w in re.split(r"[\s,|]+", text.strip()) if w and w not in _GLUE]
    return bool(words) and all(
        w.lower() in _TYPE_WORDS or w[:1].isupper() or "." in w or "[" in w for w in words
    )


def to_markdown(text: str) -> str:
    """One docstring, reST habits rewritten (see the module docstring)."""
    text = _ROLE.sub(_role, text)
    text = _LITERAL.sub(r"`\1`", text)
    lines = text.splitlines()
    out: list[str] = []
    section = None
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and set(nxt.strip()) == {"-"}:
            section = line.strip().lower()
        elif section in _SECTIONS and not line.startswith(" "):
            m = _ITEM.match(line)
            if m and not _is_type(m["text"]):
                out += [m["name"], f"    {m['text']}"]
                continue
        out.append(line)
    return "\n".join(out)


class MarkdownDocstrings(griffe.Extension):
    """Rewrite every loaded docstring with :func:`to_markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring (called by griffe for each object it loads)."""
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
