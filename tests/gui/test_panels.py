"""The napari package's structure (panels know no widget, no import cycle) and the panels
on their own: built without a widget, their buttons emit the signals the widget wires."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

import napari_sam2_worms.napari as napari_pkg

PKG = Path(napari_pkg.__file__).parent
PANELS = ("_model_panel", "_objects_panel", "_propagate_panel", "_review_panel", "_identity_panel")


def _sibling_imports(path: Path) -> set[str]:
    """Modules of napari/ that ``path`` imports anywhere (top level, functions,
    TYPE_CHECKING blocks): ``from . import x``, ``from .x import y``, absolute forms."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1:
                if mod:
                    out.add(mod.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.level == 0 and mod.startswith("napari_sam2_worms.napari."):
                out.add(mod.split(".")[2])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("napari_sam2_worms.napari."):
                    out.add(a.name.split(".")[2])
    return out


def _graph() -> dict[str, set[str]]:
    mods = {p.stem: p for p in PKG.glob("*.py")}
    return {m: _sibling_imports(p) & set(mods) for m, p in mods.items()}


def test_panels_do_not_import_the_widget_or_the_menu():
    graph = _graph()
    assert set(PANELS) <= set(graph)
    for panel in PANELS:
        assert not graph[panel] & {"_widget", "_menu"}, (panel, graph[panel])
        source = (PKG / f"{panel}.py").read_text(encoding="utf-8")
        assert not re.search(r"\bTrackerWidget\b|\bhost\b", source), panel


def test_the_menu_uses_only_the_widgets_public_api():
    source = (PKG / "_menu.py").read_text(encoding="utf-8")
    assert "widget." in source
    assert not re.findall(r"widget\._\w+", source)  # no private attribute
    assert not re.findall(r"widget\.\w+_panel", source)  # nor the panels inside


#: The widget and its halves (the menu saves and opens sessions: session_io's job).
WIDGET_PARTS = (
    "_widget",
    "_object_actions",
    "_masks_layer",
    "_prompt_sync",
    "_propagation",
    "_painting",
    "_display",
    *PANELS,
)
DIRECT_EDIT = re.compile(
    r"\b(?:s|session|self\.session)\.(?:flips|objects|labels|prompts|scores|settings|stale)\b"
    r"(?:\s*=[^=]|\s*\[[^\]]*\]\s*=[^=]|\.(?:append|pop|clear|update|extend|remove)\()"
)


def test_the_widget_edits_the_session_only_through_its_api():
    assert DIRECT_EDIT.search("s.flips.append((1, 2, 3))")  # the scan finds one
    assert DIRECT_EDIT.search("self.session.labels[f] = 0")
    assert not DIRECT_EDIT.search("labels.data[f] = self.session.labels[f]")
    for mod in WIDGET_PARTS:
        source = (PKG / f"{mod}.py").read_text(encoding="utf-8")
        assert not DIRECT_EDIT.findall(source), mod


def test_the_widget_asks_backends_their_capabilities_not_their_name():
    name_or_probe = re.compile(r"backend\.name\b|hasattr\([^)]*backend")
    assert name_or_probe.search('if not hasattr(s.backend, "detect"):')
    for mod in WIDGET_PARTS:
        source = (PKG / f"{mod}.py").read_text(encoding="utf-8")
        assert not name_or_probe.findall(source), mod


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(mod: str, path: list[str]) -> list[str] | None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                return [*path, mod, dep]
            if dep not in state and (found := visit(dep, [*path, mod])):
                return found
        state[mod] = 2
        return None

    for mod in sorted(graph):
        if mod not in state and (found := visit(mod, [])):
            return found
    return None


def test_no_import_cycle_in_the_napari_package():
    graph = _graph()
    assert "_widget" in graph["_menu"]  # the scan sees TYPE_CHECKING imports too
    assert "_identity_panel" in graph["_review_panel"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_check_finds_cycles(tmp_path):
    (tmp_path / "_a.py").write_text("from ._b import x\n")
    (tmp_path / "_b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import _c\n"
    )
    (tmp_path / "_c.py").write_text("def f():\n    from napari_sam2_worms.napari._a import y\n")
    graph = {p.stem: _sibling_imports(p) for p in tmp_path.glob("*.py")}
    assert graph == {"_a": {"_b"}, "_b": {"_c"}, "_c": {"_a"}}
    assert _cycle(graph) == ["_a", "_b", "_c", "_a"]
    assert _cycle({"_a": {"_b"}, "_b": set()}) is None


# -- the panels alone ---------------------------------------------------------------------
@pytest.mark.gui
def test_objects_panel_alone(qtbot):
    from napari_sam2_worms.engine.session import TrackedObject
    from napari_sam2_worms.napari._objects_panel import WORM_MIN_ELONGATION, ObjectsPanel

    panel = ObjectsPanel()
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.add_requested) as add:
        qtbot.mouseClick(panel.add_button, Qt.MouseButton.LeftButton)
    assert add.args == [None]  # no objects shown yet: no session, the widget says so
    seen: list = []
    panel.current_changed.connect(seen.append)
    panel.refresh({1: TrackedObject(1, "worm1", "#ff0000"), 4: TrackedObject(4, "a", "#00ff00")})
    assert panel.current() == 4 and seen[-1] == 4  # the last one, announced
    panel.animal.setCurrentText("fly")
    with qtbot.waitSignal(panel.add_requested) as add:
        qtbot.mouseClick(panel.add_button, Qt.MouseButton.LeftButton)
    assert add.args == ["fly5"]
    panel.select(1)
    assert seen[-1] == 1
    panel.name.setText("alpha")
    with qtbot.waitSignal(panel.rename_requested) as rename:
        qtbot.mouseClick(panel.rename_button, Qt.MouseButton.LeftButton)
    assert rename.args == [1, "alpha"]
    with qtbot.waitSignal(panel.remove_requested) as remove:
        qtbot.mouseClick(panel.remove_button, Qt.MouseButton.LeftButton)
    assert remove.args == [1]
    with qtbot.waitSignal(panel.negative_changed) as neg:
        panel.toggle_negative()
    assert neg.args == [True] and panel.negative_clicks
    # Detect all: the filter; max below min is refused without a signal
    panel.animal.setCurrentText("worm")
    panel.min_area.setValue(10)
    with qtbot.waitSignal(panel.detect_requested) as det:
        qtbot.mouseClick(panel.detect_button, Qt.MouseButton.LeftButton)
    assert det.args == [{"min_area": 10, "max_area": None, "min_elongation": WORM_MIN_ELONGATION}]
    panel.max_area.setValue(5)
    with qtbot.assertNotEmitted(panel.detect_requested):
        qtbot.mouseClick(panel.detect_button, Qt.MouseButton.LeftButton)


@pytest.mark.gui
def test_propagate_panel_alone(qtbot):
    from napari_sam2_worms.napari._propagate_panel import PropagatePanel

    panel = PropagatePanel()
    qtbot.addWidget(panel)
    for button, signal in (
        (panel.run_button, panel.propagate_requested),
        (panel.paint_button, panel.paint_requested),
        (panel.repropagate_button, panel.repropagate_requested),
    ):
        with qtbot.waitSignal(signal):
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert panel.selection() == ("forward", None, None)
    panel.set_frames(20)
    panel.direction.setCurrentText("range")
    panel.start.setValue(12)
    panel.stop.setValue(3)
    assert panel.selection() == ("backward", 12, 3)
    assert panel.repropagate_direction() == "forward"
    assert panel.selection("both") == ("both", None, None)
    panel.running(True)
    assert not panel.run_button.isEnabled() and panel.cancel_button.isEnabled()
    with qtbot.waitSignal(panel.cancel_requested):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    panel.cancelling()
    assert panel.progress.format() == "Cancelling…" and not panel.cancel_button.isEnabled()
    panel.running(False)
    panel.show_progress(7, 20)
    assert panel.run_button.isEnabled() and panel.progress.value() == 7


@pytest.mark.gui
def test_review_panel_alone(make_napari_viewer, qtbot):
    from napari_sam2_worms.napari._layers import FlagEvent
    from napari_sam2_worms.napari._review_panel import ReviewPanel

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((30, 8, 8), np.uint8))
    panel = ReviewPanel(viewer)
    qtbot.addWidget(panel)
    panel.set_frames(30)
    events = [FlagEvent(1, "low score", 5, 6), FlagEvent(2, "short", 20, 20)]
    panel.set_flags(events, {1: "worm1", 2: "worm2"})
    assert [panel.list.item(i).text() for i in range(2)] == [
        "frames 5-6: worm1: low score",
        "frame 20: worm2: short",
    ]
    viewer.dims.set_current_step(0, 10)
    with qtbot.waitSignal(panel.goto_requested) as goto:
        qtbot.mouseClick(panel.next_button, Qt.MouseButton.LeftButton)
    assert goto.args == [20, 2]  # the first event after the frame on screen
    with qtbot.waitSignal(panel.goto_requested) as goto:
        qtbot.mouseClick(panel.prev_button, Qt.MouseButton.LeftButton)
    assert goto.args == [5, 1]  # the panel moves no frame itself: from the list row
    panel.flip_start.setValue(8)
    panel.flip_stop.setValue(3)
    with qtbot.waitSignal(panel.flip_requested) as flip:
        qtbot.mouseClick(panel.flip_button, Qt.MouseButton.LeftButton)
    assert flip.args == [8, 3]
    with qtbot.waitSignal(panel.skeletons_toggled) as shown:
        panel.show_skeletons.setChecked(False)
    assert shown.args == [False] and not panel.skeletons_shown
    with qtbot.waitSignal(panel.update_requested):
        qtbot.mouseClick(panel.update_button, Qt.MouseButton.LeftButton)
    # the swap control inside: objects in, its request out through the panel
    panel.show_objects({1: "worm1", 2: "worm2"}, 30)
    panel.follow(2)
    with qtbot.waitSignal(panel.swap_requested) as swap:
        qtbot.mouseClick(panel.swap.button, Qt.MouseButton.LeftButton)
    assert swap.args == [2, 1, None]


@pytest.mark.gui
def test_swap_control_alone(qtbot):
    from napari_sam2_worms.napari._identity_panel import SwapIdentities, suspect_partner
    from napari_sam2_worms.napari._layers import FlagEvent
    from napari_sam2_worms.skeleton.identity import IDENTITY_SUSPECT

    swap = SwapIdentities()
    qtbot.addWidget(swap)
    swap.set_objects({1: "a", 2: "b", 3: "c"}, 50)
    assert (swap.first.object_id(), swap.second.object_id()) == (1, 2)
    flags = [FlagEvent(1, IDENTITY_SUSPECT, 9, 9), FlagEvent(3, IDENTITY_SUSPECT, 9, 9)]
    assert suspect_partner(9, 1, flags) == 3
    assert suspect_partner(8, 1, flags) is None and suspect_partner(9, 2, flags) is None
    swap.follow(1, suspect_partner(9, 1, flags))
    assert (swap.first.object_id(), swap.second.object_id()) == (1, 3)
    swap.until.setValue(40)
    with qtbot.waitSignal(swap.swap_requested) as req:
        qtbot.mouseClick(swap.button, Qt.MouseButton.LeftButton)
    assert req.args == [1, 3, 40]
    swap.until.setValue(-1)  # "end"
    swap.set_objects({1: "a", 3: "c"}, 50)  # b removed: the picks stay
    with qtbot.waitSignal(swap.swap_requested) as req:
        qtbot.mouseClick(swap.button, Qt.MouseButton.LeftButton)
    assert req.args == [1, 3, None]


@pytest.mark.gui
def test_model_panel_alone(qtbot, tmp_path, monkeypatch):
    from napari_sam2_worms.backends.factory import BackendSpec
    from napari_sam2_worms.napari._model_panel import ModelPanel

    monkeypatch.setenv("NAPARI_SAM2_WORMS_CACHE", str(tmp_path))  # nothing cached
    panel = ModelPanel()
    qtbot.addWidget(panel)
    assert "is not cached" in panel.status.text()
    with qtbot.waitSignal(panel.download_requested) as dl:
        qtbot.mouseClick(panel.download_button, Qt.MouseButton.LeftButton)
    assert dl.args == [panel.model.currentText()]
    panel.checkpoint.setText(str(tmp_path / "w.pt"))
    panel.device.setCurrentText("cpu")
    panel.input_size.setCurrentText("512")
    panel.sam2_options["image_cache_frames"] = 2
    spec = panel.spec()
    assert spec == BackendSpec(
        name="sam2",
        model=panel.model.currentText(),
        checkpoint=str(tmp_path / "w.pt"),
        device="cpu",
        download=False,  # never a silent download: the button is the explicit action
        input_size=512,
        options={"image_cache_frames": 2},
    )
    assert panel.loaded_choice is None
    panel.loaded(panel.choice(), "sam2 ready")
    assert panel.loaded_choice == (
        "sam2",
        panel.model.currentText(),
        str(tmp_path / "w.pt"),
        "cpu",
        "512",
    )
    assert panel.status.text() == "sam2 ready" and panel.load_button.isEnabled()
    panel.set_backend("classic")
    assert panel.spec() == BackendSpec(name="classic")
    assert "Press 'Load model' to use the new choice" in panel.status.text()
    with qtbot.waitSignal(panel.load_requested):
        qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    panel.busy("loading…")
    assert not panel.load_button.isEnabled() and panel.status.text() == "loading…"


@pytest.mark.gui
def test_download_button_runs_the_download_in_a_worker(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """The model panel asks, the widget downloads in a real worker with progress; a
    failure says so and leaves the panel usable."""
    import threading

    from napari_sam2_worms.backends.sam2 import checkpoints
    from napari_sam2_worms.napari._widget import TrackerWidget

    seen: list[int] = []
    release = threading.Event()

    def fake_download(model, progress=None, **_):
        progress(30, 100)
        release.wait(10)  # the worker reports 30 % meanwhile
        progress(100, 100)
        return tmp_path / f"{model}.pt"

    monkeypatch.setattr(checkpoints, "download_checkpoint", fake_download)
    viewer = make_napari_viewer()
    widget = TrackerWidget(viewer)
    viewer.window.add_dock_widget(widget)
    panel = widget.model_panel
    panel.set_backend("sam2")
    panel.progress.valueChanged.connect(seen.append)
    qtbot.mouseClick(panel.download_button, Qt.MouseButton.LeftButton)
    assert not panel.load_button.isEnabled()  # busy while it downloads
    qtbot.waitUntil(lambda: 30 in seen, timeout=10_000)
    release.set()
    qtbot.waitUntil(lambda: panel.status.text().startswith("downloaded"), timeout=10_000)
    assert str(tmp_path / f"{panel.model.currentText()}.pt") in panel.status.text()
    assert panel.load_button.isEnabled() and not panel.progress.isVisible()

    def broken(model, progress=None, **_):
        raise OSError("no route to host")

    monkeypatch.setattr(checkpoints, "download_checkpoint", broken)
    qtbot.mouseClick(panel.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.status.text() == "download failed", timeout=10_000)
    assert panel.load_button.isEnabled()


def _docked_session(make_napari_viewer, qtbot, plate):
    from _real import dock_tracker

    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.testing.oracle import OracleBackend
    from napari_sam2_worms.video import ArrayVideo

    viewer = make_napari_viewer()
    viewer.add_image(plate.video, name="plate")
    widget = dock_tracker(viewer, qtbot)  # Plugins menu, real workers
    s = TrackingSession(ArrayVideo(plate.video, fps=10.0), OracleBackend(plate.labels))
    for x, y in plate.head_points(0).values():
        s.add_point(0, s.add_object(), x, y)
    widget.set_session(s)
    qtbot.waitUntil(lambda: widget.tracks_fresh and not widget._workers, timeout=30_000)
    return viewer, widget, s


@pytest.mark.gui
def test_the_docked_widget_answers_each_panel_button(make_napari_viewer, qtbot, small_plate):
    """Buttons the user-path tests do not press reach the widget through the signals:
    Rename, the negative toggle (also the key n), Show centerlines."""
    from napari_sam2_worms.napari._style import LAYERS

    viewer, widget, s = _docked_session(make_napari_viewer, qtbot, small_plate)
    panel = widget.objects_panel
    panel.select(2)
    panel.name.setText("bob")
    qtbot.mouseClick(panel.rename_button, Qt.MouseButton.LeftButton)
    assert s.objects[2].name == "bob" and panel.list.currentItem().text() == "2: bob"
    assert widget.review_panel.swap.first.itemText(1) == "bob"  # the swap pickers too
    panel.name.setText("BOB")
    panel.select(1)
    qtbot.mouseClick(panel.rename_button, Qt.MouseButton.LeftButton)  # taken: refused
    assert s.objects[1].name == "worm1"
    # negative clicks: the box, and the key n on the prompts layer, set the next click
    points = viewer.layers["prompts"]
    panel.select(3)
    panel.negative.click()  # (scrolled out of the dock's view: a mouse click misses it)
    assert panel.negative_clicks
    assert points.feature_defaults["positive"][0] == False  # noqa: E712 (a numpy bool)
    widget._toggle_negative(points)  # what the key n calls (bound on the layer)
    assert not panel.negative_clicks and points.feature_defaults["positive"][0] == True  # noqa: E712
    # Show centerlines and heads
    review = widget.review_panel
    qtbot.waitUntil(lambda: widget.tracks_fresh and not widget._workers, timeout=30_000)
    review.show_skeletons.setChecked(False)
    assert not any(viewer.layers[name].visible for name in LAYERS)
    review.show_skeletons.setChecked(True)
    assert all(viewer.layers[name].visible for name in LAYERS)


@pytest.mark.gui
def test_the_remove_button_removes_the_object_everywhere(make_napari_viewer, qtbot, small_plate):
    viewer, widget, s = _docked_session(make_napari_viewer, qtbot, small_plate)
    panel = widget.objects_panel
    panel.select(1)
    qtbot.mouseClick(panel.remove_button, Qt.MouseButton.LeftButton)
    assert sorted(s.objects) == [2, 3] and panel.list.count() == 2
    assert not (viewer.layers["masks"].data == 1).any()
    assert 1 not in set(viewer.layers["prompts"].features["object"])
    assert [widget.review_panel.swap.first.itemData(i) for i in range(2)] == [2, 3]
    qtbot.waitUntil(lambda: widget.tracks_fresh and not widget._workers, timeout=30_000)
    assert list(widget.tracks.object_ids) == [2, 3]
