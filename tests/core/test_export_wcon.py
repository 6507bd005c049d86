"""WCON export: schema validity, round trip, units, and the reader on the spec's examples."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from napari_sam2_worms.export import export_tracks
from napari_sam2_worms.export.wcon import FEATURE_ID, WconError, load_wcon_json, read_wcon
from napari_sam2_worms.tracks import SkeletonTracks

FPS = 15.0


@pytest.fixture(scope="module")
def tracks(small_plate) -> SkeletonTracks:
    t, k = small_plate.centerlines.shape[:2]
    tr = SkeletonTracks.empty(t, small_plate.object_ids, fps=FPS)
    tr.points[:] = small_plate.centerlines
    tr.widths[:] = small_plate.widths
    tr.good[:] = True
    tr.reason[:] = ""
    tr.points[3, 1] = np.nan
    tr.good[3, 1] = False
    tr.reason[3, 1] = "missing"
    tr.good[1, 0] = False
    tr.reason[1, 0] = "coiled"
    for name in tr.features:
        tr.features[name][:] = np.arange(t * k, dtype=np.float32).reshape(t, k)
    return tr


@pytest.fixture(scope="module")
def schema(shared_data):
    """A validator of the WCON schema (draft 4 style, as its "definitions" are)."""
    import jsonschema

    doc = json.loads((shared_data / "wcon" / "wcon_schema.json").read_text())
    return jsonschema.Draft4Validator(doc)


def test_wcon_in_pixels_validates_and_round_trips(tracks, tmp_path, schema):
    path = export_tracks(tracks, tmp_path / "out.wcon", "wcon")
    doc = load_wcon_json(path)
    schema.validate(doc)
    assert doc["units"]["x"] == doc["units"]["y"] == "px"  # no pixel size: pixels
    assert doc["units"]["t"] == "s"
    assert doc["metadata"]["software"]["name"] == "napari-sam2-worms"
    assert doc[FEATURE_ID]["pixel_size_um"] is None
    rec = doc["data"][1]
    assert rec["id"] == "worm2" and rec["head"] == "L"
    assert rec["x"][3] == [None] * 49 and rec["ox"][3] is None  # NaN -> null, frame kept
    assert rec[FEATURE_ID]["reason"][3] == "missing"
    back = read_wcon(path)
    assert list(back) == tracks.names
    for k, name in enumerate(tracks.names):
        t, pts = back[name]
        np.testing.assert_allclose(t, tracks.frames / FPS, atol=1e-6)
        want = np.where(tracks.good[:, k, None, None], tracks.points[:, k], np.nan)
        np.testing.assert_allclose(pts, want, atol=2e-3)  # 1/1000 px rounding twice


def test_wcon_with_pixel_size_is_in_mm(tracks, tmp_path, schema):
    path = export_tracks(
        tracks, tmp_path / "mm.wcon", "wcon", pixel_size=2.5, objects=[3], frames=(6, 11)
    )
    doc = load_wcon_json(path)
    schema.validate(doc)
    assert doc["units"]["x"] == "mm" and doc["units"]["ox"] == "mm"
    assert doc["units"]["area"] == "mm^2" and doc["units"]["centroid_speed"] == "mm/s"
    assert doc[FEATURE_ID]["pixel_size_um"] == 2.5
    custom = doc["data"][0][FEATURE_ID]
    assert custom["frame"] == list(range(6, 12))
    np.testing.assert_allclose(custom["length"], tracks.features["length"][6:, 2] * 0.0025)
    (name,) = read_wcon(path)
    assert name == "worm3"
    t, pts = read_wcon(path)[name]
    np.testing.assert_allclose(t, np.arange(6, 12) / FPS, atol=1e-6)
    np.testing.assert_allclose(pts, tracks.points[6:, 2] * 0.0025, atol=1e-5)


def test_wcon_zip_holds_one_wcon(tracks, tmp_path, schema):
    path = export_tracks(tracks, tmp_path / "run.wcon.zip", "wcon-zip", frames=(0, 4))
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["run.wcon"]
    schema.validate(load_wcon_json(path))
    t, pts = read_wcon(path)["worm1"]
    assert len(t) == 5 and np.isnan(pts[1]).all() and np.isfinite(pts[0]).all()


# ------------------------------------------------------------ the spec's own examples


def test_reader_on_spec_examples(shared_data):
    ex = shared_data / "wcon" / "examples"
    t, pts = read_wcon(ex / "data" / "spine.wcon")["123"]
    np.testing.assert_allclose(t, [0])
    np.testing.assert_allclose(pts[0, :, 0], [1.6, 1.8, 2.0, 2.2, 2.4])
    np.testing.assert_allclose(pts[0, 2], [2.0, 1.7])  # "central spine point is at 2.0, 1.7"

    two = read_wcon(ex / "data" / "two-ids.wcon")
    np.testing.assert_allclose(two["123"][1][0, 0], [2.0, 1.7])
    np.testing.assert_allclose(two["124"][1][0, 0], [1.9, 9.9])

    t, pts = read_wcon(ex / "data" / "offsets.wcon")["123"]
    np.testing.assert_allclose(pts[:, 0], [[2.0, 1.7], [2.0, 1.7]])  # "at both times"

    # "All four offset_ files should represent the same spine points"
    ref = read_wcon(ex / "offset_none.wcon")
    for name in ("offset_only", "offset_and_centroid", "offset_no_centroid_yes"):
        other = read_wcon(ex / f"{name}.wcon")
        for wid in ("1", "2"):
            np.testing.assert_allclose(other[wid][1], ref[wid][1], err_msg=name)

    right = read_wcon(ex / "data" / "spine-head-right.wcon")["123"][1]
    np.testing.assert_allclose(right[0, 0], [2.4, 2.3])  # reversed: head first

    sep = read_wcon(ex / "data" / "two-times-separate.wcon")["123"]
    bare = read_wcon(ex / "data" / "two-times-arrayed-bare-xy.wcon")["123"]
    np.testing.assert_allclose(sep[0], bare[0])
    np.testing.assert_allclose(sep[1], bare[1])

    multi = read_wcon(ex / "multiworm.wcon")
    assert len(multi) > 5 and all(p.shape[-1] == 2 for _, p in multi.values())

    zipped = read_wcon(ex / "minimalzipped.wcon.zip")
    plain = read_wcon(ex / "minimal.wcon")
    assert zipped.keys() == plain.keys()


def test_reader_rejects_non_wcon(tmp_path):
    bad = tmp_path / "bad.wcon"
    bad.write_text('{"data": []}')
    with pytest.raises(WconError, match="units"):
        read_wcon(bad)
    bad.write_text("not json")
    with pytest.raises(WconError, match="not a WCON"):
        read_wcon(bad)
