"""The review panel's "Swap identities" control, driven as a user does: the tracker docked
through the Plugins menu, the identity suspect flag in the list, the flagged frame, the
two objects, the button (real worker threads); the masks layer, the heads on screen and
the tracks exported through the File menu are swapped from that frame on."""

from __future__ import annotations

import numpy as np
import pytest
from _real import TIMEOUT, assert_heads_match, dock_tracker, menu_action, run_menu_with_dialog
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QPushButton

from fixtures.plates import swapped
from napari_sam2_worms.engine.session import TrackingSession
from napari_sam2_worms.napari._widget import MASKS
from napari_sam2_worms.skeleton import read_csv, skeletonize_labels
from napari_sam2_worms.skeleton.identity import IDENTITY_SUSPECT
from napari_sam2_worms.testing.oracle import OracleBackend
from napari_sam2_worms.video import ArrayVideo

pytestmark = pytest.mark.gui


def _items(panel) -> list[str]:
    return [panel.list.item(i).text() for i in range(panel.list.count())]


def test_swap_button_swaps_masks_and_exported_tracks(make_napari_viewer, qtbot, crossing, tmp_path):
    video, truth, after = crossing
    wrong = swapped(truth, 2, 3, after - 4)  # the tracker swapped 2 and 3 at the crossing
    viewer = make_napari_viewer()
    viewer.add_image(video, name="plate")
    widget = dock_tracker(viewer, qtbot)  # Plugins > SAM 2 worm tracker; real workers
    s = TrackingSession(ArrayVideo(video, fps=15.0), OracleBackend(wrong))
    for gt in (1, 2, 3):
        rows, cols = np.nonzero(truth[0] == gt)
        s.add_point(0, s.add_object(), float(cols[len(cols) // 2]), float(rows[len(rows) // 2]))
    widget.set_session(s)
    widget.propagate("forward")
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    masks = viewer.layers[MASKS]
    assert np.array_equal(masks.data, wrong)

    # the review lists the suspect parting; going there selects the object and frame
    panel = widget.review_panel
    update = next(b for b in panel.findChildren(QPushButton) if b.text() == "Update flags")
    qtbot.mouseClick(update, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any(IDENTITY_SUSPECT in t for t in _items(panel)), timeout=TIMEOUT)
    row = next(
        i
        for i, f in enumerate(panel.flags)
        if f.object_id == 2 and IDENTITY_SUSPECT in _items(panel)[i]
    )
    panel.list.setCurrentRow(row)
    assert widget.current_frame() == after and widget.current_object == 2

    swap = panel.swap
    assert swap.first.object_id() == 2  # follows the current object
    assert swap.second.object_id() == 3  # the other object flagged there
    assert swap.until.text() == "end"
    qtbot.mouseClick(swap.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: np.array_equal(masks.data[after], truth[after]), timeout=TIMEOUT)
    assert np.array_equal(masks.data[after:], truth[after:])
    assert np.array_equal(masks.data[:after], wrong[:after])  # before k: untouched
    assert np.array_equal(s.labels, masks.data)
    # the flags listed are those after the swap: the suspect parting is gone
    qtbot.waitUntil(lambda: not any(IDENTITY_SUSPECT in t for t in _items(panel)), timeout=TIMEOUT)

    # the heads on screen are those of the swapped tracks; the File menu exports them
    qtbot.waitUntil(lambda: widget.tracks_fresh and not widget._workers, timeout=TIMEOUT)
    assert assert_heads_match(viewer, widget.tracks) > 0
    path = tmp_path / "tracks.csv"

    def fill(dialog):
        dialog.fmt.setCurrentIndex(dialog.fmt.findData("csv"))
        dialog.path.setText(str(path))
        dialog.accept()

    export = menu_action(
        viewer, "File", "IO Utilities", "SAM 2 worm tracker", "Export skeleton tracks..."
    )
    run_menu_with_dialog(qtbot, export, fill)
    qtbot.waitUntil(path.is_file, timeout=TIMEOUT)
    back = read_csv(path)
    want = skeletonize_labels(truth, [1, 2, 3], fps=15.0)
    before = skeletonize_labels(wrong, [1, 2, 3], fps=15.0)
    for obj in (2, 3):
        k = back.index_of(obj)
        np.testing.assert_allclose(
            back.features["area"][after:, k], want.features["area"][after:, k], rtol=1e-5
        )
        np.testing.assert_allclose(
            back.features["area"][: after - 4, k],
            before.features["area"][: after - 4, k],
            rtol=1e-5,
        )
    assert IDENTITY_SUSPECT not in set(back.reason.ravel())
