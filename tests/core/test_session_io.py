"""Save and reopen a session: every array and prompt comes back; bad folders are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_sam2_worms.engine.session import TrackingSession
from napari_sam2_worms.engine.session_io import SessionFileError, load_session, save_session
from napari_sam2_worms.testing.oracle import OracleBackend
from napari_sam2_worms.video import open_video


@pytest.fixture
def tracked(tmp_path, small_plate):
    vpath = tmp_path / "plate.tif"
    tifffile.imwrite(vpath, small_plate.video)
    s = TrackingSession(open_video(vpath), OracleBackend(small_plate.labels), pixel_size=2.5)
    a, b = s.add_object(), s.add_object(name="tail-biter")
    pts = small_plate.head_points(0)
    s.add_point(0, a, *pts[1])
    s.add_point(0, a, *pts[3], positive=False)
    s.set_box(2, b, (0, 0, 60, 60))
    s.set_mask(6, b, small_plate.labels[6] == 2)
    list(s.propagate("forward"))
    s.flips.append((a, 3, 5))
    s.settings["model"] = "oracle"
    return s, vpath


def test_round_trip_array_for_array(tmp_path, tracked, small_plate):
    s, _ = tracked
    folder = save_session(s, tmp_path / "sess")
    r = load_session(folder, OracleBackend(small_plate.labels))
    assert np.array_equal(r.labels, s.labels) and r.labels.dtype == s.labels.dtype
    for o in s.objects:
        np.testing.assert_array_equal(r.scores[o], s.scores[o])
        assert r.objects[o] == s.objects[o]
    assert r.prompts.points == s.prompts.points
    assert r.prompts.boxes == s.prompts.boxes
    assert r.prompts.masks.keys() == s.prompts.masks.keys()
    for k in s.prompts.masks:
        assert np.array_equal(r.prompts.masks[k], s.prompts.masks[k])
    assert r.flips == s.flips and r.settings == s.settings
    assert r.pixel_size == 2.5 and r.fps == s.fps
    # the reopened session keeps working: prompts reach the backend before the next run
    list(r.repropagate_from(6, "forward"))
    assert np.array_equal(r.labels[6] == 2, small_plate.labels[6] == 2)
    assert not any(p.suffix == ".pkl" for p in folder.iterdir())


def test_different_video_is_refused(tmp_path, tracked, small_plate):
    s, vpath = tracked
    folder = save_session(s, tmp_path / "sess")
    tifffile.imwrite(vpath, small_plate.video[::-1].copy())
    with pytest.raises(SessionFileError, match="not the video"):
        load_session(folder, OracleBackend(small_plate.labels))


def test_damaged_or_foreign_folder(tmp_path, tracked, small_plate):
    s, _ = tracked
    with pytest.raises(SessionFileError, match=r"session\.json is missing"):
        load_session(tmp_path, OracleBackend(small_plate.labels))
    folder = save_session(s, tmp_path / "sess")
    doc = json.loads((folder / "session.json").read_text())
    doc["format"] = "something-else"
    (folder / "session.json").write_text(json.dumps(doc))
    with pytest.raises(SessionFileError, match="not a napari-sam2-worms session"):
        load_session(folder, OracleBackend(small_plate.labels))


def test_failed_save_keeps_previous_session(tmp_path, tracked, small_plate, monkeypatch):
    s, _ = tracked
    folder = save_session(s, tmp_path / "sess")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    s.labels[:] = 0

    def boom(*a, **k):
        raise KeyboardInterrupt  # e.g. the user cancels mid-write

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_session(s, folder)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after.keys() == before.keys()  # no temp file left behind
    assert after["session.json"] == before["session.json"]
    assert after["scores.npy"] == before["scores.npy"]
    assert after["masks.tif"] == before["masks.tif"]


def test_autosave_goes_to_session_dir_or_user_folder(tmp_path, tracked, small_plate, monkeypatch):
    from napari_sam2_worms.engine.session_io import autosave

    s, _ = tracked
    monkeypatch.setenv("NAPARI_SAM2_WORMS_AUTOSAVE", str(tmp_path / "auto"))
    folder = autosave(s)
    assert folder.parent == tmp_path / "auto" and folder.name.startswith("plate-")
    r = load_session(folder, OracleBackend(small_plate.labels))
    assert np.array_equal(r.labels, s.labels)
    s.settings["session_dir"] = str(tmp_path / "mine")
    assert autosave(s) == tmp_path / "mine"
    # an unwritable place is logged, never raised: the session in memory is untouched
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    s.settings["session_dir"] = str(blocker / "sub")
    assert autosave(s) is None


def _set(doc, path, value):
    *parents, last = path
    for p in parents:
        doc = doc[p]
    if value is _DELETE:
        del doc[last]
    else:
        doc[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ((), "just a string", "must hold a JSON object, not str"),
        (("objects",), "worms", r"objects: 'worms' is not of type 'array'"),
        (("objects", 0), "worm1", r"objects\[0\]: 'worm1' is not of type 'object'"),
        (("objects", 1, "id"), "a", r"objects\[1\]\.id: 'a' is not of type 'integer'"),
        (("objects", 1, "id"), 1, r"objects\[1\]\.id: object 1 is listed twice"),
        (("objects", 0, "name"), _DELETE, r"objects\[0\]: 'name' is a required property"),
        (("video", "shape"), _DELETE, r"video: 'shape' is a required property"),
        (("video",), "plate.tif", r"video: 'plate.tif' is not of type 'object'"),
        (("video", "shape", 0), 0, r"video\.shape\[0\]: 0 is less than the minimum"),
        (("fps",), -1, r"fps: -1 is less than or equal to the minimum"),
        (("pixel_size",), "2.5", r"pixel_size: '2.5' is not of type 'number', 'null'"),
        (
            ("painted",),
            [{"frame": 3, "object": 1}],
            r"painted\[0\].*object 1 on frame 3 is missing",
        ),
        (("painted",), [{"frame": 99, "object": 2}], r"painted\[0\]\.frame: frame 99 is past"),
        (("flips", 0, "object"), 99, r"flips\[0\]\.object: there is no object 99"),
        (("flips", 0), {"object": 1}, r"flips\[0\]: 'start' is a required property"),
        (("score_objects",), [1], r"scores\.npy has shape \(12, 2\).*\(12, 1\)"),
        (("prompts", "points", 0, "x"), "left", r"prompts: points\[0\]"),
        (("version",), 7, "has version 7; this program reads 1"),
    ],
)
def test_malformed_session_json_names_the_field(
    tmp_path, tracked, small_plate, path, value, message
):
    s, _ = tracked
    folder = save_session(s, tmp_path / "sess")
    doc = json.loads((folder / "session.json").read_text())
    if path:
        _set(doc, path, value)
    else:
        doc = value
    (folder / "session.json").write_text(json.dumps(doc))
    with pytest.raises(SessionFileError, match=message):
        load_session(folder, OracleBackend(small_plate.labels))


def test_session_saved_with_duplicate_names_opens_with_unique_ones(tmp_path, tracked, small_plate):
    s, _ = tracked
    folder = save_session(s, tmp_path / "sess")
    doc = json.loads((folder / "session.json").read_text())
    doc["objects"][1]["name"] = "WORM1"  # as worm1, ignoring case (saved before the rule)
    (folder / "session.json").write_text(json.dumps(doc))
    r = load_session(folder, OracleBackend(small_plate.labels))
    assert [o.name for o in r.objects.values()] == ["worm1", "WORM1-2"]
    assert r.objects[2].color == s.objects[2].color


def test_one_reader_for_sessions_and_exports(tmp_path, tracked, small_plate):
    """Opening a session and exporting a run read session.json the same, strict way."""
    from napari_sam2_worms.engine.session_file import read_session_json
    from napari_sam2_worms.export.run_dir import RunDirError, load_run_tracks

    s, _ = tracked
    folder = save_session(s, tmp_path / "sess")
    doc = json.loads((folder / "session.json").read_text())
    doc["flips"][0]["object"] = 99  # a cross-check the JSON Schema cannot say
    (folder / "session.json").write_text(json.dumps(doc))
    message = r"flips\[0\]\.object: there is no object 99"
    with pytest.raises(SessionFileError, match=message):
        load_session(folder, OracleBackend(small_plate.labels))
    with pytest.raises(RunDirError, match=message):
        load_run_tracks(folder)
    # a file, not a folder; a folder written by hand (no "format"): only export takes it
    with pytest.raises(SessionFileError, match="is not a folder"):
        load_session(folder / "masks.tif", OracleBackend(small_plate.labels))
    hand = tmp_path / "hand"
    hand.mkdir()
    (hand / "session.json").write_text(json.dumps({"fps": 5, "objects": [{"id": 1}]}))
    assert read_session_json(hand, hand_written=True)["fps"] == 5
    with pytest.raises(SessionFileError, match="not a napari-sam2-worms session"):
        read_session_json(hand)
    (hand / "session.json").write_text(json.dumps({"fps": 0, "objects": []}))
    with pytest.raises(SessionFileError, match="'fps' must be a positive number"):
        read_session_json(hand, hand_written=True)
