"""Object names are distinct from their creation: the session API and the prompts file."""

from __future__ import annotations

import json

import pytest

from napari_sam2_worms.engine.prompts import PromptsFileError, read_prompts_file
from napari_sam2_worms.engine.session import DuplicateNameError, TrackingSession
from napari_sam2_worms.testing.oracle import OracleBackend
from napari_sam2_worms.video import ArrayVideo


@pytest.fixture
def session(small_plate):
    s = TrackingSession(ArrayVideo(small_plate.video, fps=15), OracleBackend(small_plate.labels))
    yield s
    s.close()


def test_add_and_rename_refuse_a_name_in_use(session):
    a = session.add_object("alpha")
    b = session.add_object("beta")
    with pytest.raises(DuplicateNameError, match=r"object 1 is already called 'alpha'"):
        session.add_object("alpha")
    with pytest.raises(DuplicateNameError):
        session.add_object(" ALPHA ")  # case and spaces do not make another name
    assert sorted(session.objects) == [a, b]  # nothing was added
    with pytest.raises(DuplicateNameError, match="beta"):
        session.rename_object(a, "Beta")
    assert session.objects[a].name == "alpha"
    session.rename_object(a, "alpha")  # its own name again is fine
    session.rename_object(a, "Alpha")
    assert session.objects[a].name == "Alpha"
    with pytest.raises(ValueError, match="empty"):
        session.rename_object(a, "  ")


def test_default_names_are_made_unique(session):
    first = session.add_object()  # worm1
    session.rename_object(first, "worm2")
    second = session.add_object()  # worm2 is taken: a unique default
    names = [o.name for o in session.objects.values()]
    assert len({n.casefold() for n in names}) == len(names)
    assert session.objects[second].name.startswith("worm2")
    assert session.add_object("") > second  # an empty name means the default


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"1": "w", "2": "W"}, "objects 1 and 2 are both called"),
        ({"2": "worm1"}, "objects 1 and 2 are both called 'worm1'"),  # an unnamed one's default
        ({"1": "  "}, "cannot be empty"),
    ],
)
def test_prompts_file_with_duplicate_names_is_refused(tmp_path, names, message):
    path = tmp_path / "p.json"
    pts = [{"object": o, "frame": 0, "x": 5, "y": 5} for o in (1, 2)]
    path.write_text(json.dumps({"version": 1, "points": pts, "names": names}))
    with pytest.raises(PromptsFileError, match=message) as info:
        read_prompts_file(path)
    assert str(path) in str(info.value)


def test_non_utf8_prompts_file_is_named(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"version": 1, "names": {"1": "würm"}}'.encode("latin-1"))
    with pytest.raises(PromptsFileError, match="UTF-8") as info:
        read_prompts_file(path)
    assert str(path) in str(info.value)
    with pytest.raises(PromptsFileError, match="cannot be read") as info:
        read_prompts_file(tmp_path)  # a folder
    assert str(tmp_path) in str(info.value)
