"""export_tracks: movement formats round trips, subsets, units, NaN policy, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_sam2_worms.export import FORMATS, ExportError, export_tracks, format_for_path
from napari_sam2_worms.tracks import SkeletonTracks
from napari_sam2_worms.utils import OutputError

FPS = 15.0


def tracks_from_plate(plate) -> SkeletonTracks:
    """Ground-truth tracks with a missing frame and flagged (touching) frames."""
    t, k = plate.centerlines.shape[:2]
    tr = SkeletonTracks.empty(t, plate.object_ids, plate.centerlines.shape[2], fps=FPS)
    tr.points[:] = plate.centerlines
    tr.widths[:] = plate.widths
    tr.good[:] = True
    tr.reason[:] = ""
    tr.good[1, 0] = False  # a flagged skeleton: points present, not good
    tr.reason[1, 0] = "coiled"
    tr.points[3, 1] = np.nan  # a missing skeleton
    tr.widths[3, 1] = np.nan
    tr.good[3, 1] = False
    tr.reason[3, 1] = "missing"
    rng = np.random.default_rng(0)
    for name in tr.features:
        tr.features[name][:] = rng.random((t, k)).astype(np.float32)
    return tr


@pytest.fixture(scope="module")
def tracks(small_plate) -> SkeletonTracks:
    return tracks_from_plate(small_plate)


def expected_points(tr: SkeletonTracks, scale: float = 1.0) -> np.ndarray:
    """(T, K, N, 2): NaN where not good (the default policy)."""
    pts = np.where(tr.good[:, :, None, None], tr.points.astype(np.float64), np.nan)
    return pts * scale


def expected_confidence(tr: SkeletonTracks) -> np.ndarray:
    present = np.isfinite(tr.points).all(-1)
    conf = np.where(present, 0.0, np.nan)
    conf[present & tr.good[:, :, None]] = 1.0
    return conf


def as_tkn2(ds) -> np.ndarray:
    """movement (time, space, keypoints, individuals) -> (T, K, N, 2)."""
    return ds.position.transpose("time", "individuals", "keypoints", "space").values


# ----------------------------------------------------------------- movement round trips


@pytest.mark.parametrize(("fmt", "name"), [("dlc", "out.h5"), ("dlc-csv", "out.csv")])
def test_dlc_round_trip(tracks, tmp_path, fmt, name):
    from movement.io import load_poses

    path = export_tracks(tracks, tmp_path / name, fmt)
    ds = load_poses.from_dlc_file(path, fps=FPS)
    assert list(ds.individuals.values) == tracks.names
    assert list(ds.keypoints.values) == [f"p{i:02d}" for i in range(49)]
    np.testing.assert_allclose(as_tkn2(ds), expected_points(tracks), rtol=0, atol=1e-4)
    conf = ds.confidence.transpose("time", "individuals", "keypoints").values
    np.testing.assert_array_equal(conf, expected_confidence(tracks))
    assert np.isnan(as_tkn2(ds)[3, 1]).all()  # the missing frame is kept, NaN


def test_dlc_frame_subset_rows_are_video_frames(tracks, tmp_path):
    from movement.io import load_poses

    path = export_tracks(tracks, tmp_path / "sub.h5", "dlc", frames=(4, 9), objects=[3, 1])
    ds = load_poses.from_dlc_file(path, fps=FPS)
    assert list(ds.individuals.values) == ["worm3", "worm1"]
    pos = as_tkn2(ds)
    assert pos.shape[0] == 10  # rows 0..9: row = video frame
    assert np.isnan(pos[:4]).all()
    want = expected_points(tracks)[4:10][:, [2, 0]]
    np.testing.assert_allclose(pos[4:], want, atol=1e-4)


def test_sleap_round_trip(tracks, tmp_path):
    from movement.io import load_poses

    path = export_tracks(tracks, tmp_path / "out.analysis.h5", "sleap", frames=(2, 11))
    ds = load_poses.from_sleap_file(path, fps=FPS)
    assert list(ds.individuals.values) == tracks.names
    pos = as_tkn2(ds)
    assert pos.shape[0] == 12 and np.isnan(pos[:2]).all()
    np.testing.assert_allclose(pos[2:], expected_points(tracks)[2:], atol=1e-4)
    conf = ds.confidence.transpose("time", "individuals", "keypoints").values
    np.testing.assert_array_equal(conf[2:], expected_confidence(tracks)[2:])


def test_nwb_single_object_loads_with_movement(tracks, tmp_path):
    import pynwb
    from movement.io import load_poses

    path = export_tracks(tracks, tmp_path / "w2.nwb", "nwb", objects=[2], pixel_size=4.0)
    ds = load_poses.from_nwb_file(path)
    assert list(ds.individuals.values) == ["worm2"]
    assert ds.fps == pytest.approx(FPS)
    want = expected_points(tracks)[:, [1]]
    np.testing.assert_allclose(as_tkn2(ds), want, atol=1e-4)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        series = io.read().processing["behavior"]["PoseEstimation"].pose_estimation_series["p00"]
        assert series.unit == "meters"
        assert series.conversion == pytest.approx(4.0e-6)  # the pixel size is recorded
        assert series.timestamps is None  # evenly spaced frames: rate + starting time
        assert series.rate == pytest.approx(FPS)
        assert series.starting_time == pytest.approx(tracks.frames[0] / FPS)


def test_nwb_several_objects(tracks, tmp_path):
    from movement.io import load_poses

    from napari_sam2_worms.export.movement_formats import read_nwb

    path = export_tracks(
        tracks, tmp_path / "all.nwb", "nwb", frames=(5, 11), units="um", pixel_size=2.0
    )
    ds = read_nwb(path)
    assert list(ds.individuals.values) == tracks.names
    np.testing.assert_allclose(ds.time.values, np.arange(5, 12) / FPS)
    np.testing.assert_allclose(as_tkn2(ds), expected_points(tracks, 2.0)[5:], atol=1e-4)
    # each object also loads with movement's own loader
    one = load_poses.from_nwb_file(path, pose_estimation_key="worm3")
    np.testing.assert_allclose(as_tkn2(one)[:, 0], expected_points(tracks, 2.0)[5:, 2], atol=1e-4)


def test_netcdf_round_trip_keeps_units_flags_features(tracks, tmp_path):
    import xarray as xr

    path = export_tracks(tracks, tmp_path / "out.nc", "nc", units="mm", pixel_size=5.0, fps=30)
    with xr.open_dataset(path) as ds:
        ds.load()
    assert ds.attrs["pixel_size_um"] == 5.0
    assert ds.attrs["space_unit"] == "millimeters"
    assert ds.attrs["fps"] == 30
    np.testing.assert_allclose(ds.time.values, tracks.frames / 30.0)
    np.testing.assert_array_equal(ds.frame.values, tracks.frames)
    np.testing.assert_allclose(as_tkn2(ds), expected_points(tracks, 0.005), atol=1e-9)
    np.testing.assert_array_equal(ds.good.transpose("time", "individuals").values, tracks.good)
    assert ds.reason.values[3, 1] == "missing"
    np.testing.assert_allclose(ds.area.values, tracks.features["area"] * 0.005**2, rtol=1e-6)
    assert ds.area.attrs["units"] == "mm^2"
    assert list(ds.object_id.values) == [1, 2, 3]


def test_include_flagged_keeps_points_with_zero_confidence(tracks, tmp_path):
    import xarray as xr

    path = export_tracks(tracks, tmp_path / "f.nc", "nc", include_flagged=True)
    with xr.open_dataset(path) as ds:
        pos = as_tkn2(ds)
        conf = ds.confidence.transpose("time", "individuals", "keypoints").values
    np.testing.assert_allclose(pos[1, 0], tracks.points[1, 0], atol=1e-4)  # flagged, kept
    assert (conf[1, 0] == 0.0).all()
    assert np.isnan(pos[3, 1]).all() and np.isnan(conf[3, 1]).all()  # missing stays NaN


# ----------------------------------------------------------------- requests and errors


def test_formats_and_guessing():
    assert {"csv", "dlc", "dlc-csv", "sleap", "nwb", "nc", "wcon", "wcon-zip"} <= set(FORMATS)
    assert format_for_path("a/b.wcon.zip") == "wcon-zip"
    assert format_for_path("x.analysis.h5") == "sleap"
    assert format_for_path("x.h5") == "dlc"
    with pytest.raises(ExportError, match="format"):
        format_for_path("x.mov")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fmt": "xls"}, "Unknown export format"),
        ({"fmt": "nc", "objects": [7]}, "not in these tracks"),
        ({"fmt": "nc", "frames": (50, 60)}, "selects no frame"),
        ({"fmt": "nc", "units": "mm"}, "pixel size is unknown"),
        ({"fmt": "nc", "units": "furlong"}, "Unknown units"),
        ({"fmt": "dlc", "name": "x.nc"}, "must end in .h5"),
    ],
)
def test_bad_requests_are_clear(tracks, tmp_path, kwargs, match):
    name = kwargs.pop("name", "out.nc")
    with pytest.raises(ExportError, match=match):
        export_tracks(tracks, tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_target_untouched(tracks, tmp_path, monkeypatch, exc):
    import napari_sam2_worms.export as ex

    def flaky(table, tmp, final, **opts):
        Path(tmp).write_bytes(b"half a file")
        raise exc("stopped midway")

    target = tmp_path / "out.wcon"
    target.write_text("previous export")
    monkeypatch.setitem(ex._WRITERS, "wcon", flaky)
    with pytest.raises(exc):
        export_tracks(tracks, target, "wcon")
    assert target.read_text() == "previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wcon"]


def test_interrupted_movement_save_leaves_target_untouched(tracks, tmp_path, monkeypatch):
    from movement.io import save_poses

    def broken(filepath, df):
        Path(filepath).write_bytes(b"partial hdf5")
        raise OSError("no space left on device")

    target = tmp_path / "out.h5"
    target.write_bytes(b"previous")
    monkeypatch.setattr(save_poses, "_save_dlc_df", broken)
    with pytest.raises(OutputError, match="Nothing was replaced"):
        export_tracks(tracks, target, "dlc")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder we cannot write into, even as root (where chmod does not stop writes)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.write_text("x")
    except OSError:
        return folder  # chmod works: not root
    probe.unlink()
    folder.chmod(0o755)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    return blocker  # nothing can be created under a file


@pytest.mark.parametrize("fmt", ["wcon", "nc"])
def test_read_only_folder_gives_output_error(tracks, tmp_path, fmt):
    folder = unwritable_folder(tmp_path)
    try:
        with pytest.raises(OutputError, match=r"not writable|Cannot write"):
            export_tracks(tracks, folder / f"out{FORMATS[fmt].extension}", fmt)
    finally:
        if folder.is_dir():
            folder.chmod(0o755)
            assert os.listdir(folder) == []


def test_csv_uses_skeleton_table(tracks, tmp_path):
    from napari_sam2_worms import skeleton

    path = export_tracks(
        tracks, tmp_path / "s.csv", "csv", objects=[2], frames=(2, 5), pixel_size=3.0
    )
    back = skeleton.read_csv(path)
    assert list(back.object_ids) == [2]
    np.testing.assert_array_equal(back.frames, [2, 3, 4, 5])
    np.testing.assert_allclose(back.points, tracks.points[2:6, [1]], atol=1e-3)
    np.testing.assert_array_equal(back.good, tracks.good[2:6, [1]])


def test_sleap_warns_about_a_track_without_points(tracks, tmp_path, caplog):
    from movement.io import load_poses

    tr = tracks_from_plate_copy(tracks)
    tr.points[:, 2] = np.nan
    tr.good[:, 2] = False
    with caplog.at_level("WARNING", logger="napari_sam2_worms"):
        path = export_tracks(tr, tmp_path / "s.h5", "sleap")
    assert "worm3" in caplog.text
    ds = load_poses.from_sleap_file(path, fps=FPS)
    assert list(ds.individuals.values) == ["worm1", "worm2"]


def tracks_from_plate_copy(tr: SkeletonTracks) -> SkeletonTracks:
    from dataclasses import replace

    return replace(tr, points=tr.points.copy(), good=tr.good.copy())


def test_fps_override_rescales_speeds(tracks, tmp_path):
    import xarray as xr

    path = export_tracks(tracks, tmp_path / "v.nc", "nc", fps=2 * FPS)
    with xr.open_dataset(path) as ds:
        speed = ds.centroid_speed.values
        length = ds.length.values
    np.testing.assert_allclose(speed, 2 * tracks.features["centroid_speed"], rtol=1e-6)
    np.testing.assert_allclose(length, tracks.features["length"], rtol=1e-6)


def test_one_registry_for_every_export():
    """FORMATS holds the track, mask and overlay formats; the export command offers them all."""
    from napari_sam2_worms.cli import build_parser
    from napari_sam2_worms.export import _WRITERS, export_formats

    assert set(export_formats("tracks")) == set(_WRITERS)  # each track format has a writer
    assert list(export_formats("masks")) == ["masks-tiff", "masks-png"]
    assert list(export_formats("overlay")) == ["overlay-mp4"]
    assert [n for n, f in FORMATS.items() if f.folder] == ["masks-png"]
    assert FORMATS["masks-png"].extension == "" and FORMATS["overlay-mp4"].extension == ".mp4"
    assert FORMATS["csv"].label == "csv (.csv)"
    assert FORMATS["masks-tiff"].label == "masks-tiff (label stack TIFF)"
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    (fmt,) = [a for a in sub.choices["export"]._actions if a.dest == "format"]
    assert list(fmt.choices) == list(FORMATS)


def test_mask_format_is_not_a_track_format(tracks, tmp_path):
    with pytest.raises(ExportError, match="written from the masks or the video"):
        export_tracks(tracks, tmp_path / "m.tif", "masks-tiff")
    assert not (tmp_path / "m.tif").exists()
