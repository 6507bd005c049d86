"""docs/architecture.md is true: its module map is the source tree, its import rules hold.

The map (the first code block of the page) names every module of the package; the
rules are read from the sources' import statements (AST, no import), so a module that
moves, appears or imports the wrong way fails here with its name.
"""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING

import pytest

from fixtures.data import REPO

if TYPE_CHECKING:
    from pathlib import Path

PKG = REPO / "src" / "napari_sam2_worms"
DOC = REPO / "docs" / "architecture.md"
GUI = {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy"}


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name relative to it (``video._base``)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(absolute module, line, at module level) of every import in ``path``.

    ``from .pkg import name`` also yields ``pkg.name`` (the name may be a module).
    Imports under ``if TYPE_CHECKING:`` count as module level.
    """
    here = list(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    for node in tree.body:
        if isinstance(node, ast.If):
            top.update(id(n) for n in node.body)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            out.append((mod, node.lineno, id(node) in top))
            out += [(f"{mod}.{a.name}", node.lineno, id(node) in top) for a in node.names]
    return out


def _ours(mod: str) -> str | None:
    """``mod`` relative to the package (``engine.session``), or None for another library."""
    if mod == "napari_sam2_worms":
        return ""
    if mod.startswith("napari_sam2_worms."):
        return mod[len("napari_sam2_worms.") :]
    return None


def _violations(sources: list[str], forbidden: list[str]) -> list[str]:
    """``"module:line imports target"`` for each import of ``sources`` into ``forbidden``."""
    found = []
    mods = _modules()
    for name in sources:
        for mod, line, _ in _imports(mods[name]):
            rel = _ours(mod)
            if rel is not None and any(rel == f or rel.startswith(f + ".") for f in forbidden):
                found.append(f"{name}:{line} imports {rel}")
    return sorted(set(found))


def _in(*packages: str) -> list[str]:
    return [m for m in _modules() if any(m == p or m.startswith(p + ".") for p in packages)]


def _doc_map() -> set[str]:
    """The modules the map names, as paths relative to the package (``video/_base.py``)."""
    block = re.search(r"```\n(src/napari_sam2_worms/\n.*?)```", DOC.read_text(), re.S)
    assert block, "docs/architecture.md has no module map"
    paths, stack = set(), []
    for line in block.group(1).splitlines()[1:]:
        m = re.match(r"( *)(\S+)", line)
        if not m or not (m.group(2).endswith("/") or m.group(2).endswith(".py")):
            continue
        depth = (len(m.group(1)) - 2) // 2
        stack = stack[:depth]
        if m.group(2).endswith("/"):
            stack.append(m.group(2).rstrip("/"))
            paths.add("/".join([*stack, "__init__.py"]))  # a package named is its __init__
        else:
            paths.add("/".join([*stack, m.group(2)]))
    return paths


def test_the_map_names_every_module_and_only_real_ones():
    real = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")}
    named = _doc_map()
    assert sorted(real - named) == [], "modules missing from docs/architecture.md's map"
    assert sorted(named - real) == [], "the map names modules that do not exist"


def test_the_map_reader_sees_nesting():
    """The check above reads indentation as nesting (a flat reading would pass less)."""
    named = _doc_map()
    assert "backends/sam2/accel/patches.py" in named and "skeleton/ring.py" in named
    assert "patches.py" not in named


def test_the_core_imports_no_gui_cli_or_napari_adapter():
    core = [m for m in _modules() if not m.startswith("napari")]
    found = []
    for name in core:
        for mod, line, _ in _imports(_modules()[name]):
            if mod.split(".")[0] in GUI:
                found.append(f"{name}:{line} imports {mod}")
    found += _violations([m for m in core if m != "cli"], ["napari", "cli"])
    assert found == []
    adapters = [mod.split(".")[0] for m in _in("napari") for mod, _, _ in _imports(_modules()[m])]
    assert GUI & set(adapters), "the scan does not see the adapters' napari/Qt imports"


def test_foundation_modules_import_no_upper_layer():
    base = _in("video", "skeleton", "coords", "tracks", "palette", "run_files", "utils")
    base += ["synthetic"]
    assert _violations(base, ["backends", "engine", "export", "batch", "cli", "napari"]) == []


def test_backends_import_no_engine_export_batch():
    assert _violations(_in("backends"), ["engine", "export", "batch", "cli", "napari"]) == []
    assert _violations(_in("backends.classic"), ["backends.sam2"]) == []
    assert _violations(_in("backends.sam2"), ["backends.classic"]) == []


def test_engine_imports_no_export_batch():
    assert _violations(_in("engine"), ["export", "batch", "cli", "napari"]) == []
    assert _violations(_in("engine"), ["backends"]), "the scan sees no import at all"


def test_export_reads_runs_only_through_the_engine_readers():
    readers = ("session_file", "session_schema", "session_io", "run_set")
    found = _violations(_in("export"), ["backends", "batch", "cli", "napari", "engine"])
    others = [f for f in found if f.split(" imports ")[1].split(".")[1] not in readers]
    assert found and others == []  # export reads runs through the readers, nothing else


def test_only_the_sam2_backend_imports_sam2_and_torch_at_module_level():
    found = []
    for name, path in _modules().items():
        inside = name.startswith("backends.sam2")
        for mod, line, top in _imports(path):
            root = mod.split(".")[0]
            if root == "sam2" and not inside:
                found.append(f"{name}:{line} imports sam2")
            if root == "torch" and top and not inside:
                found.append(f"{name}:{line} imports torch at module level")
    assert found == []


@pytest.mark.parametrize("library", ["pickle", "cloudpickle", "dill"])
def test_no_pickle(library):
    found = [
        f"{name}:{line}"
        for name, path in _modules().items()
        for mod, line, _ in _imports(path)
        if mod.split(".")[0] == library
    ]
    assert found == []


def test_sam2_objects_change_class_only_through_the_patch_log():
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr == "__class__":
                    found.append(f"{name}:{node.lineno}")
    assert {f.split(":")[0] for f in found} <= {"backends.sam2.accel.patches"}
    assert found, "the patch log's class change was not found: the scan reads nothing"
