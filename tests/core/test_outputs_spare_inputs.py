"""What a user already has is never replaced by an output, and a stop keeps what was tracked.

From an adversarial run of the command line as a user would meet it: a masks-png export
into a folder of notes, an output path that is an input (the run's own masks, the video,
the folder of frames), a run folder whose file names a user had, a symlink or a pipe
as the output, a batch output that shares a user's folder name, a full disk at the first
or the last save, and SIGTERM (a batch system's time limit) during tracking.
"""

from __future__ import annotations

import errno
import json
import os
import signal

import numpy as np
import pytest
import tifffile

from fixtures.plates import write_prompts


@pytest.fixture(scope="module")
def plate_files(tmp_path_factory):
    """A 12-frame TIFF plate, its prompts and a finished run of it (classic)."""
    from napari_sam2_worms import cli
    from napari_sam2_worms.synthetic import make_plate

    folder = tmp_path_factory.mktemp("spare")
    plate = make_plate(n_frames=12, height=120, width=160, n_worms=3, seed=1)
    tifffile.imwrite(folder / "plate.tif", plate.video)
    write_prompts(folder / "p.json", plate, 0)
    run = folder / "run"
    status = cli.main([
        "track", str(folder / "plate.tif"), "--prompts", str(folder / "p.json"),
        "--out", str(run), "--backend", "classic", "--workers", "0",
    ])  # fmt: skip
    assert status == 0
    return folder, plate


def _track(folder, out, *extra):
    from napari_sam2_worms import cli

    return cli.main([
        "track", str(folder / "plate.tif"), "--prompts", str(folder / "p.json"),
        "--out", str(out), "--backend", "classic", "--workers", "0", *extra,
    ])  # fmt: skip


def _sigterm_after(monkeypatch, n: int) -> None:
    """Make ``track`` get a SIGTERM (a batch system's time limit) after ``n`` frames."""
    from napari_sam2_worms.engine import pipeline

    original = pipeline.track_run

    def terminated(*args, **kwargs):
        for i, step in enumerate(original(*args, **kwargs)):
            if i == n - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield step

    monkeypatch.setattr(pipeline, "track_run", terminated)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- masks-png never empties a folder that is not an earlier export --------------------------


def test_masks_png_refuses_a_folder_of_other_files(plate_files, tmp_path, capsys):
    from napari_sam2_worms import cli

    folder, _ = plate_files
    mine = tmp_path / "myresults"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    status = cli.main(["export", str(folder / "run"), "--format", "masks-png", "--out", str(mine)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "notes.txt" in err and "Traceback" not in err
    assert (mine / "notes.txt").read_text() == "precious"
    # an earlier export is replaced, as before
    fresh = tmp_path / "pngs"
    argv = ["export", str(folder / "run"), "--format", "masks-png", "--out", str(fresh)]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 0
    assert sorted(p.name for p in fresh.iterdir()) == ["worm1", "worm2", "worm3"]


@pytest.mark.parametrize("target", ["run", "parent"])
def test_masks_png_never_replaces_the_run_or_its_folder(plate_files, capsys, target):
    from napari_sam2_worms import cli

    folder, _ = plate_files
    run = folder / "run"
    before = _snapshot(run)
    out = run if target == "run" else folder
    status = cli.main(["export", str(run), "--format", "masks-png", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and "an output never replaces an input" in err, err
    assert _snapshot(run) == before


# -- an output path that is an input ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("masks-tiff", "masks.tif"), ("csv", "skeletons.csv"), ("csv", "session.json")],
)
def test_export_onto_the_runs_own_files_is_refused(plate_files, capsys, fmt, name):
    from napari_sam2_worms import cli

    folder, _ = plate_files
    run = folder / "run"
    before = _snapshot(run)
    status = cli.main(["export", str(run), "--format", fmt, "--out", str(run / name)])
    err = capsys.readouterr().err
    assert status == 2 and f"the run's own {name}" in err, err
    assert _snapshot(run) == before


def test_export_onto_the_video_or_a_link_to_an_input_is_refused(plate_files, tmp_path, capsys):
    from napari_sam2_worms import cli

    folder, _ = plate_files
    run = folder / "run"
    video = folder / "plate.tif"
    before = video.read_bytes()
    argv = ["export", str(run), "--format", "overlay-mp4", "--out", str(video)]
    assert cli.main(argv) == 2
    assert "the session's video" in capsys.readouterr().err
    link = tmp_path / "link.tif"
    link.symlink_to(run / "masks.tif")
    assert cli.main(["export", str(run), "--format", "masks-tiff", "--out", str(link)]) == 2
    assert "the run's own masks.tif" in capsys.readouterr().err
    assert video.read_bytes() == before


def test_skeletonize_onto_its_own_input_is_refused(plate_files, tmp_path, capsys):
    from napari_sam2_worms import cli

    _, plate = plate_files
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, plate.labels)
    before = labels.read_bytes()
    assert cli.main(["skeletonize", str(labels), "--out", str(labels)]) == 2
    assert "the label stack being read" in capsys.readouterr().err
    assert labels.read_bytes() == before


def test_tracking_a_folder_of_frames_into_itself_is_refused(plate_files, tmp_path, capsys):
    from PIL import Image

    from napari_sam2_worms import cli

    folder, plate = plate_files
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(plate.video):
        Image.fromarray(frame).save(frames / f"{i:03d}.png")
    argv = ["track", str(frames), "--prompts", str(folder / "p.json"), "--out", str(frames)]
    assert cli.main([*argv, "--backend", "classic", "--workers", "0"]) == 2
    assert "the video being tracked" in capsys.readouterr().err
    assert sorted(p.suffix for p in frames.iterdir()) == [".png"] * 12


def test_an_empty_out_is_refused_not_the_current_folder(plate_files, tmp_path, capsys, monkeypatch):
    folder, _ = plate_files
    monkeypatch.chdir(tmp_path)
    assert _track(folder, "") == 2
    assert "--out is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_track_refuses_a_folder_holding_a_runs_file_names(plate_files, tmp_path, capsys):
    folder, _ = plate_files
    mine = tmp_path / "userdata"
    mine.mkdir()
    (mine / "masks.tif").write_bytes(b"the user's own masks")
    assert _track(folder, mine) == 2
    err = capsys.readouterr().err
    assert "holds masks.tif but no session" in err and "--overwrite" in err
    assert (mine / "masks.tif").read_bytes() == b"the user's own masks"
    assert _track(folder, mine, "--overwrite") == 0  # said so: replaced
    assert (mine / "session.json").is_file()


# -- links and pipes as outputs --------------------------------------------------------------


def test_an_output_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    from napari_sam2_worms.utils import atomic_path

    target = tmp_path / "results" / "tracks.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    with atomic_path(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_pipe_as_the_output_is_refused(plate_files, tmp_path, capsys):
    from napari_sam2_worms import cli
    from napari_sam2_worms.utils import OutputError, atomic_path

    fifo = tmp_path / "tracks.csv"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"), atomic_path(fifo):
        pass
    folder, _ = plate_files
    assert cli.main(["export", str(folder / "run"), "--format", "csv", "--out", str(fifo)]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert fifo.exists() and not fifo.is_file()  # still the pipe


# -- batch never replaces a user's folder ----------------------------------------------------


def test_batch_never_replaces_a_users_folder_of_the_videos_name(plate_files, tmp_path):
    from napari_sam2_worms.batch.task import refuse_foreign_folder
    from napari_sam2_worms.utils import OutputError

    mine = tmp_path / "plate"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(OutputError, match="holds no run"):
        refuse_foreign_folder(mine)
    folder, _ = plate_files
    refuse_foreign_folder(folder / "run")  # an earlier run: replaced, as before
    refuse_foreign_folder(tmp_path / "new")  # nothing there


# -- a full disk at the first and the last save ----------------------------------------------


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_first_save_that_fails_stops_before_tracking(plate_files, tmp_path, capsys, monkeypatch):
    from napari_sam2_worms.engine import session_io

    folder, _ = plate_files
    monkeypatch.setattr(session_io, "save_session", _no_space)
    out = tmp_path / "run"
    assert _track(folder, out) == 2
    err = capsys.readouterr().err
    assert "could not save the run" in err and "nothing was tracked" in err, err
    assert not out.exists()


def test_a_last_save_that_fails_says_what_is_kept(plate_files, tmp_path, capsys, monkeypatch):
    from napari_sam2_worms.engine import pipeline

    folder, _ = plate_files
    monkeypatch.setattr(pipeline, "write_run", _no_space)
    out = tmp_path / "run"
    assert _track(folder, out) == 2
    err = capsys.readouterr().err
    assert "keeps the last autosave (0 of 12 frames)" in err and "--resume" in err, err
    assert json.loads((out / "session.json").read_text())["settings"]["track"]
    monkeypatch.undo()
    assert _track(folder, out, "--resume") == 0  # space freed: the run goes on


# -- SIGTERM while tracking saves the frames tracked ---------------------------------------


def test_sigterm_while_tracking_saves_what_was_tracked(plate_files, tmp_path, capsys, monkeypatch):
    folder, _ = plate_files
    _sigterm_after(monkeypatch, 4)
    out = tmp_path / "run"
    assert _track(folder, out, "--autosave", "3600") == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "terminated: saved the" in err and "continue with --resume" in err, err
    assert "Traceback" not in err
    done = sum(json.loads((out / "session.json").read_text())["settings"]["track"]["done"])
    assert 4 <= done < 12, done  # the frames tracked, not the first save's 0
    masks = tifffile.imread(out / "masks.tif")
    assert np.count_nonzero(masks[:4].reshape(4, -1), axis=1).all()
    monkeypatch.undo()
    assert _track(folder, out, "--resume") == 0
    assert (out / "skeletons.csv").is_file()


def test_overlay_of_a_run_whose_video_moved_takes_video(plate_files, tmp_path, capsys):
    from napari_sam2_worms import cli

    folder, plate = plate_files
    video = tmp_path / "plate.tif"
    tifffile.imwrite(video, plate.video)
    run = tmp_path / "run"
    argv = ["track", str(video), "--prompts", str(folder / "p.json"), "--out", str(run)]
    assert cli.main([*argv, "--backend", "classic", "--workers", "0"]) == 0
    moved = tmp_path / "moved.tif"
    video.rename(moved)
    out = tmp_path / "overlay.mp4"
    export = ["export", str(run), "--format", "overlay-mp4", "--out", str(out)]
    assert cli.main(export) == 2
    assert "--video" in capsys.readouterr().err  # the message names the way out
    assert cli.main([*export, "--video", str(moved)]) == 0
    assert out.stat().st_size > 0
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, plate.video[::-1])  # same size, another video: still refused
    assert cli.main([*export, "--video", str(other)]) == 2


# -- inputs a user may hand over ---------------------------------------------------------


def test_a_prompts_file_with_a_byte_order_mark_is_read(plate_files, tmp_path):
    from napari_sam2_worms.engine.prompts import read_prompts_file

    folder, _ = plate_files
    text = (folder / "p.json").read_text(encoding="utf-8")
    bom = tmp_path / "p.json"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Windows PowerShell 5 saves it
    assert read_prompts_file(bom)[0].points == read_prompts_file(folder / "p.json")[0].points


def test_a_huge_or_endless_prompts_file_is_refused_unread(plate_files, tmp_path, monkeypatch):
    from napari_sam2_worms.engine import prompts

    folder, _ = plate_files
    monkeypatch.setattr(prompts, "MAX_PROMPTS_BYTES", 100)
    with pytest.raises(prompts.PromptsFileError, match="is it the right file"):
        prompts.read_prompts_file(folder / "p.json")
    with pytest.raises(prompts.PromptsFileError, match="not a regular file"):
        prompts.read_prompts_file("/dev/zero")


def test_a_hand_edited_manifest_is_one_line(tmp_path):
    from napari_sam2_worms.batch.manifest import Manifest
    from napari_sam2_worms.utils import OutputError

    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": "napari-sam2-worms-batch", "version": 1, "videos": {"a": "done"}})
    )
    with pytest.raises(OutputError, match="is damaged"):
        Manifest(tmp_path)


def test_out_of_memory_is_one_line(plate_files, tmp_path, capsys, monkeypatch):
    from napari_sam2_worms.engine import session

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 29.3 GiB")

    monkeypatch.setattr(session.TrackingSession, "__init__", too_big)
    folder, _ = plate_files
    assert _track(folder, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "error: not enough memory (Unable to allocate 29.3 GiB)" in err
    assert "Traceback" not in err


def test_resume_applies_a_new_fps_and_says_so(plate_files, tmp_path, capsys, monkeypatch):
    folder, _ = plate_files
    _sigterm_after(monkeypatch, 2)
    out = tmp_path / "run"
    assert _track(folder, out, "--fps", "25") == 143
    monkeypatch.undo()
    capsys.readouterr()
    assert _track(folder, out, "--resume", "--fps", "3") == 0
    assert "--fps 3 replaces the run's 25.0" in capsys.readouterr().err
    assert json.loads((out / "session.json").read_text())["fps"] == 3.0


def test_exporting_an_unfinished_run_says_so(plate_files, tmp_path, capsys, monkeypatch):
    from napari_sam2_worms import cli

    folder, _ = plate_files
    _sigterm_after(monkeypatch, 3)
    out = tmp_path / "run"
    assert _track(folder, out) == 143
    monkeypatch.undo()
    capsys.readouterr()
    csv = tmp_path / "tracks.csv"
    assert cli.main(["export", str(out), "--format", "csv", "--out", str(csv)]) == 0
    err = capsys.readouterr().err
    assert "is unfinished: " in err and "of 12 frames tracked" in err and "--resume" in err, err
    finished = folder / "run"
    assert cli.main(["export", str(finished), "--format", "csv", "--out", str(csv)]) == 0
    assert "unfinished" not in capsys.readouterr().err
