"""Our export files read back by the third-party readers of each ecosystem.

A run folder is made by the real ``track`` command (classic backend, a subprocess) on a
synthetic plate; each test exports it with the ``export`` command and reads the result
with the other project's own reader: movement (DeepLabCut, SLEAP, NWB, netCDF),
sleap-io (SLEAP), pynwb validation and nwbinspector (NWB), the official WCON JSON
schema (WCON), tifffile (masks).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile

from conftest import need_shared
from fixtures.cli import cli_command, cli_env
from fixtures.plates import write_prompts
from napari_sam2_worms.cli import main
from napari_sam2_worms.export.run_dir import load_run_tracks

if TYPE_CHECKING:
    from pathlib import Path

FPS = 10.0
NAMES = {1: "alpha", 2: "beta", 3: "gamma"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder written by ``napari-sam2-worms track`` (classic backend)."""
    from napari_sam2_worms.synthetic import make_plate

    folder = tmp_path_factory.mktemp("readers")
    plate = make_plate(n_frames=16, height=120, width=160, n_worms=3, seed=1)
    video = folder / "plate.tif"
    tifffile.imwrite(video, plate.video)
    names = {str(k): v for k, v in NAMES.items()}
    prompts = write_prompts(folder / "prompts.json", plate, 1, names=names)
    out = folder / "run"
    cmd = cli_command("track", str(video), "--prompts", str(prompts), "--out", str(out))
    cmd += ["--backend", "classic", "--workers", "0", "--fps", str(FPS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def export(run: Path, fmt: str, out: Path, *extra: str) -> Path:
    assert main(["export", str(run), "--format", fmt, "--out", str(out), *extra]) == 0
    return out


def good_points(run: Path) -> np.ndarray:
    """(T, K, N, 2) of the run's skeletons, NaN where not good (the export policy)."""
    tr = load_run_tracks(run)
    return np.where(tr.good[:, :, None, None], tr.points.astype(np.float64), np.nan)


def as_tkn2(ds) -> np.ndarray:
    return ds.position.transpose("time", "individuals", "keypoints", "space").values


# ------------------------------------------------------------------------ DeepLabCut


def test_dlc_reads_with_movement_and_pandas(run, tmp_path, caplog):
    import pandas as pd
    from movement.io import load_poses

    path = export(run, "dlc", tmp_path / "plateDLC_napari-sam2-worms.h5")
    assert "DLC" not in caplog.text  # a DLC-style name: no naming warning
    ds = load_poses.from_dlc_file(path, fps=FPS)
    assert list(ds.individuals.values) == list(NAMES.values())
    np.testing.assert_allclose(as_tkn2(ds), good_points(run), atol=1e-4)
    df = pd.read_hdf(path)
    assert df.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    with caplog.at_level("WARNING", logger="napari_sam2_worms"):
        export(run, "dlc", tmp_path / "plain.h5")
    assert "DLC" in caplog.text  # the name DeepLabCut's tools would not find is pointed out


# ------------------------------------------------------------------------ SLEAP


def test_sleap_reads_with_sleap_io_and_movement(run, tmp_path):
    import sleap_io as sio
    from movement.io import load_poses

    path = export(run, "sleap", tmp_path / "plate.analysis.h5")
    labels = sio.load_analysis_h5(str(path))
    skeleton = labels.skeletons[0]
    n = len(skeleton.nodes)
    assert [node.name for node in skeleton.nodes] == [f"p{i:02d}" for i in range(n)]
    assert skeleton.edge_inds == [(i, i + 1) for i in range(n - 1)]  # the centerline chain
    assert labels.videos[0].filename == str(run.parent / "plate.tif")
    assert [t.name for t in labels.tracks] == list(NAMES.values())
    want = good_points(run)
    got = np.full_like(want, np.nan)
    for lf in labels.labeled_frames:
        for inst in lf.instances:
            got[lf.frame_idx, list(NAMES.values()).index(inst.track.name)] = inst.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    ds = load_poses.from_sleap_file(path, fps=FPS)
    np.testing.assert_allclose(as_tkn2(ds), want, atol=1e-4)


# ------------------------------------------------------------------------ NWB


def inspector_problems(path: Path) -> list[str]:
    from nwbinspector import Importance, inspect_nwbfile

    bad = {Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION}
    return [
        f"{m.importance.name} {m.check_function_name}: {m.message}"
        for m in inspect_nwbfile(nwbfile_path=str(path))
        if m.importance in bad
    ]


@pytest.mark.parametrize(
    "subject",
    [
        (),  # the defaults: an animal of unrecorded species, age and sex
        ("--species", "C. elegans", "--sex", "XX", "--age", "P3D/P4D"),
        ("--species", "Drosophila melanogaster", "--sex", "F", "--age", "P5D"),
    ],
)
def test_nwb_passes_pynwb_validation_and_nwbinspector(run, tmp_path, subject):
    import pynwb

    path = export(run, "nwb", tmp_path / "plate.nwb", *subject)
    assert list(pynwb.validate(path=str(path))) == []
    assert inspector_problems(path) == []
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        pe = nwb.processing["behavior"]["beta"]
        assert list(pe.original_videos[:]) == [str(run.parent / "plate.tif")]
        video = nwb.acquisition["video"]  # also linked as an external file, relative
        assert pe.source_video.external_file[0] == video.external_file[0]
        assert (path.parent / video.external_file[0]).resolve() == run.parent / "plate.tif"
        assert video.num_samples == 16
        series = pe.pose_estimation_series["p00"]
        assert series.timestamps is None and series.rate == pytest.approx(FPS)
        assert "(-0.5, -0.5)" in series.reference_frame
        assert nwb.subject.description.startswith("3 animals")
        if subject:
            assert nwb.subject.species in ("Caenorhabditis elegans", "Drosophila melanogaster")
            assert nwb.subject.sex == subject[3]


def test_nwb_single_object_reads_with_movement(run, tmp_path):
    import pynwb
    from movement.io import load_poses

    path = export(run, "nwb", tmp_path / "beta.nwb", "--objects", "2", "--frames", "3:12")
    assert inspector_problems(path) == []
    ds = load_poses.from_nwb_file(path)
    assert list(ds.individuals.values) == ["beta"]
    assert ds.fps == pytest.approx(FPS)
    np.testing.assert_allclose(as_tkn2(ds), good_points(run)[3:13, [1]], atol=1e-4)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.subject.description.startswith("1 animal tracked")
        series = nwb.processing["behavior"]["PoseEstimation"].pose_estimation_series["p00"]
        assert series.starting_time == pytest.approx(3 / FPS)


def test_nwb_several_objects_read_back_with_times(run, tmp_path):
    from napari_sam2_worms.export.nwb import read_nwb

    path = export(run, "nwb", tmp_path / "all.nwb", "--frames", "2:9")
    ds = read_nwb(path)
    assert list(ds.individuals.values) == list(NAMES.values())
    np.testing.assert_allclose(ds.time.values, np.arange(2, 10) / FPS)
    np.testing.assert_allclose(as_tkn2(ds), good_points(run)[2:10], atol=1e-4)


def test_nwb_uneven_frames_keep_timestamps(run, tmp_path):
    from dataclasses import replace

    import pynwb

    from napari_sam2_worms.export import export_tracks
    from napari_sam2_worms.export.nwb import read_nwb

    tr = load_run_tracks(run)
    rows = [0, 1, 2, 5, 6]
    uneven = replace(
        tr,
        points=tr.points[rows],
        widths=tr.widths[rows],
        good=tr.good[rows],
        reason=tr.reason[rows],
        features={k: v[rows] for k, v in tr.features.items()},
        frames=tr.frames[rows],
    )
    path = export_tracks(uneven, tmp_path / "gaps.nwb", "nwb")
    assert inspector_problems(path) == []
    np.testing.assert_allclose(read_nwb(path).time.values, np.array(rows) / FPS)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        series = io.read().processing["behavior"]["alpha"].pose_estimation_series["p00"]
        np.testing.assert_allclose(series.timestamps[:], np.array(rows) / FPS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--species", "C. elegans"), "XX (hermaphrodite) or XO (male)"),
        (("--species", "worms"), "Latin binomial"),
        (("--age", "3 days"), "ISO 8601 duration"),
        (("--sex", "hermaphrodite"), "Sex must be one of"),
    ],
)
def test_nwb_bad_subject_is_one_line_and_writes_nothing(run, tmp_path, capsys, args, message):
    code = main(["export", str(run), "--format", "nwb", "--out", str(tmp_path / "x.nwb"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ netCDF


def test_netcdf_is_a_valid_movement_dataset(run, tmp_path):
    import xarray as xr
    from movement.kinematics import compute_velocity
    from movement.validators.datasets import ValidPosesInputs

    path = export(run, "nc", tmp_path / "plate.nc", "--pixel-size", "2.5", "--units", "um")
    with xr.open_dataset(path) as ds:
        ds.load()
    # what movement's napari loader does with a netCDF file
    assert ds.attrs["ds_type"] == "poses"
    ValidPosesInputs.validate(ds)
    np.testing.assert_allclose(as_tkn2(ds), good_points(run) * 2.5, atol=1e-6)
    assert "(-0.5, -0.5)" in ds.position.attrs["reference_frame"]
    assert compute_velocity(ds.position).shape == ds.position.shape


# ------------------------------------------------------------------------ WCON


@pytest.mark.parametrize("fmt", ["wcon", "wcon-zip"])
def test_wcon_validates_against_the_official_schema(run, tmp_path, fmt):
    import jsonschema

    from napari_sam2_worms.export.wcon import load_wcon_json, read_wcon

    schema = json.loads(need_shared("wcon", "wcon_schema.json").read_text())
    name = "plate.wcon" if fmt == "wcon" else "plate.wcon.zip"
    path = export(run, fmt, tmp_path / name, "--pixel-size", "4")
    doc = load_wcon_json(path)
    jsonschema.validate(doc, schema)
    assert doc["units"]["x"] == "mm"
    assert "(-0.5, -0.5)" in doc["@napari-sam2-worms"]["coordinates"]
    back = read_wcon(path)
    np.testing.assert_allclose(back["gamma"][1], good_points(run)[:, 2] * 0.004, atol=1e-6)


# ------------------------------------------------------------------------ the CLI's options


def test_include_flagged_writes_flagged_points(run, tmp_path):
    import xarray as xr

    from napari_sam2_worms.skeleton import write_csv

    # a run folder as an older release saved it (no generations): its table is read as is
    flagged = tmp_path / "run"
    flagged.mkdir()
    for f in run.iterdir():
        (flagged / f.name).write_bytes(f.read_bytes())
    session = json.loads((run / "session.json").read_text())
    session.pop("generation", None)
    session.pop("derived", None)
    (flagged / "session.json").write_text(json.dumps(session))
    tr = load_run_tracks(run)
    tr.good[4, 0] = False
    tr.reason[4, 0] = "coiled"
    write_csv(tr, flagged / "skeletons.csv")
    plain = export(flagged, "nc", tmp_path / "plain.nc")
    kept = export(flagged, "nc", tmp_path / "kept.nc", "--include-flagged")
    with xr.open_dataset(plain) as a, xr.open_dataset(kept) as b:
        pa, pb = as_tkn2(a), as_tkn2(b)
        conf = b.confidence.transpose("time", "individuals", "keypoints").values
    assert np.isnan(pa[4, 0]).all()
    np.testing.assert_allclose(pb[4, 0], tr.points[4, 0], atol=1e-3)
    assert (conf[4, 0] == 0.0).all()


def test_masks_tiff_keeps_the_frame_interval(run, tmp_path):
    path = export(run, "masks-tiff", tmp_path / "m.tif")
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["finterval"] == pytest.approx(1 / FPS)  # the session's
    path = export(run, "masks-tiff", tmp_path / "m25.tif", "--fps", "25", "--frames", "4:9")
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["finterval"] == pytest.approx(0.04)
        stack = tif.asarray()
    np.testing.assert_array_equal(stack, tifffile.imread(run / "masks.tif")[4:10])


def test_masks_png_names_objects_frames_and_permissions(run, tmp_path):
    from PIL import Image

    out = export(run, "masks-png", tmp_path / "pngs", "--objects", "3,1", "--frames", "5:8")
    assert sorted(p.name for p in out.iterdir()) == ["alpha", "gamma"]
    assert sorted(p.name for p in (out / "gamma").iterdir()) == [
        f"{i:05d}.png" for i in range(5, 9)
    ]
    labels = tifffile.imread(run / "masks.tif")
    mask = np.asarray(Image.open(out / "gamma" / "00007.png"))
    np.testing.assert_array_equal(mask == 255, labels[7] == 3)
    umask = os.umask(0)
    os.umask(umask)
    for folder in (out, out / "alpha"):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_masks_png_unknown_object_is_one_line(run, tmp_path, capsys):
    out = tmp_path / "pngs"
    assert (
        main(["export", str(run), "--format", "masks-png", "--out", str(out), "--objects", "9"])
        == 2
    )
    assert "have no mask" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------ coordinates


def test_pixel_centres_are_at_integer_coordinates():
    """What every file says about (0, 0) is true of our skeletons."""
    from napari_sam2_worms.skeleton import skeletonize_labels

    labels = np.zeros((1, 40, 80), np.uint8)
    labels[0, 18:23, 10:70] = 1  # rows 18..22: the centre row is 20
    tr = skeletonize_labels(labels, n_points=11)
    pts = tr.points[0, 0]
    np.testing.assert_allclose(pts[:, 1], 20.0, atol=0.05)  # y of the centre row, not 20.5
    assert pts[:, 0].min() >= 9.5 and pts[:, 0].max() <= 69.5
