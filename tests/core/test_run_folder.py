"""A run folder is one consistent unit: generations, atomic sets, locks, the overwrite rule,
fingerprints, damaged files; `track` autosaves, resumes and stops cleanly on Ctrl-C.

Faults are injected for real: subprocesses are ended at a named point
(``NAPARI_SAM2_WORMS_FAULT``, see ``engine/faults.py``) and the folder is reopened.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile

from fixtures.cli import cli_command, cli_env
from fixtures.plates import write_prompts
from napari_sam2_worms.cli import main
from napari_sam2_worms.engine.faults import EXIT_CODE
from napari_sam2_worms.engine.run_lock import (
    LOCK_FILE,
    RunFolderExistsError,
    RunFolderLockedError,
    RunLock,
    hold,
)
from napari_sam2_worms.engine.run_set import COMMIT_FILE
from napari_sam2_worms.engine.session_io import SessionFileError, load_session, save_session
from napari_sam2_worms.testing.oracle import OracleBackend
from napari_sam2_worms.video import open_video
from tmpfs import tmpfs

if TYPE_CHECKING:
    from pathlib import Path


def _env(**extra: str) -> dict[str, str]:
    return cli_env(**extra)  # tests/fixtures/cli.py


def _cli(*args: str, fault: str | None = None, new_session: bool = False):
    env = _env(**({"NAPARI_SAM2_WORMS_FAULT": fault} if fault else {}))
    return subprocess.run(
        cli_command(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=new_session,
    )


@pytest.fixture
def plate(tmp_path, small_plate):
    vpath = tmp_path / "plate.tif"
    tifffile.imwrite(vpath, small_plate.video)
    return vpath, write_prompts(tmp_path / "prompts.json", small_plate, 1)


def _track(vpath, prompts, out, *extra: str) -> list[str]:
    return [
        "track",
        str(vpath),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--backend",
        "classic",
        "--workers",
        "0",
        *extra,
    ]


def _csv_objects(path: Path) -> set[int]:
    with open(path, newline="") as fh:
        return {int(r["object"]) for r in csv.DictReader(fh)}


# -- 1. generations: an export never holds an older or deleted run ------------------------
def test_export_after_removing_an_object_does_not_list_it(tmp_path, plate, small_plate):
    vpath, prompts = plate
    run = tmp_path / "R"
    assert main(_track(vpath, prompts, run)) == 0
    assert _csv_objects(run / "skeletons.csv") == {1, 2, 3}
    old_csv = (run / "skeletons.csv").read_bytes()
    s = load_session(run, OracleBackend(small_plate.labels))
    s.remove_object(1)
    save_session(s, run)  # what the widget's Save into the track folder does
    assert not (run / "skeletons.csv").exists()  # the stale derived file went with the save
    assert main(["export", str(run), "--format", "csv", "--out", str(tmp_path / "a.csv")]) == 0
    assert _csv_objects(tmp_path / "a.csv") == {2, 3}
    # a skeletons.csv of an older generation (a crash, a copy) is never exported
    (run / "skeletons.csv").write_bytes(old_csv)
    assert main(["export", str(run), "--format", "csv", "--out", str(tmp_path / "b.csv")]) == 0
    assert _csv_objects(tmp_path / "b.csv") == {2, 3}
    doc = json.loads((run / "session.json").read_text())
    assert doc["generation"] >= 2 and "skeletons.csv" not in doc["derived"]


# -- 2. a save is atomic as a set -----------------------------------------------------------
_SAVE_SCRIPT = textwrap.dedent(
    """
    import sys
    from napari_sam2_worms.engine.session_io import load_session, save_session
    from napari_sam2_worms.synthetic import make_plate
    from napari_sam2_worms.testing.oracle import OracleBackend
    plate = make_plate(n_frames=12, height=120, width=160, n_worms=3, seed=1)
    s = load_session(sys.argv[1], OracleBackend(plate.labels))
    s.remove_object(2)
    s.remove_object(3)
    s.labels[5:] = 0
    s.settings["marker"] = "new"
    save_session(s, sys.argv[1])
    """
)


def _state(folder: Path, small_plate):
    s = load_session(folder, OracleBackend(small_plate.labels))
    out = (sorted(s.objects), s.labels.copy(), s.score_table()[1].copy(), s.settings.get("marker"))
    s.close()
    return out


@pytest.mark.parametrize(
    "fault",
    [f"save-write:{i}" for i in range(1, 5)]
    + ["save-commit:1"]
    + [f"save-rename:{i}" for i in range(1, 5)],
)
def test_killed_save_leaves_old_or_new_session_whole(tmp_path, small_plate, fault):
    vpath = tmp_path / "plate.tif"
    tifffile.imwrite(vpath, small_plate.video)
    s = load_or_track(vpath, small_plate)
    folder = save_session(s, tmp_path / "sess")
    old = _state(folder, small_plate)
    script = tmp_path / "save.py"
    script.write_text(_SAVE_SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), str(folder)],
        env=_env(NAPARI_SAM2_WORMS_FAULT=fault),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == EXIT_CODE, r.stderr
    got = _state(folder, small_plate)  # reopening finishes a committed save
    committed = fault.startswith(("save-commit", "save-rename"))
    if committed:
        assert got[0] == [1] and got[3] == "new"
        assert not got[1][5:].any() and got[2].shape[1] == 1
    else:
        assert got[0] == old[0] and got[3] == old[3]
        np.testing.assert_array_equal(got[1], old[1])
        np.testing.assert_array_equal(got[2], old[2])
    assert not (folder / COMMIT_FILE).exists()
    # the next save removes what the killed one left (staging folder, lock file)
    save_session(load_session(folder, OracleBackend(small_plate.labels)), folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "masks.tif",
        "painted.npz",
        "scores.npy",
        "session.json",
    ]


def load_or_track(vpath, small_plate):
    from napari_sam2_worms.engine.session import TrackingSession

    s = TrackingSession(open_video(vpath), OracleBackend(small_plate.labels))
    for o in (1, 2, 3):
        s.add_object()
        s.add_point(0, o, *small_plate.head_points(0)[o])
    s.set_mask(6, 2, small_plate.labels[6] == 2)
    list(s.propagate("forward"))
    s.settings["marker"] = "old"
    return s


# -- 4. locks and the overwrite rule ---------------------------------------------------------
_HOLD_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from napari_sam2_worms.engine.run_lock import RunLock
    RunLock(sys.argv[1], "test holder").acquire()
    print("held", flush=True)
    if sys.argv[2] == "die":
        os._exit(0)
    time.sleep(60)
    """
)


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path, small_plate, caplog):
    script = tmp_path / "hold.py"
    script.write_text(_HOLD_SCRIPT)
    folder = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, str(script), str(folder), "live"],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderLockedError, match=rf"test holder \(process {p.pid}"):
            RunLock(folder).acquire()
        with pytest.raises(RunFolderLockedError, match="in use by test holder"):
            save_session_into_locked(folder, tmp_path, small_plate)
    finally:
        p.kill()
        p.wait()
    # the holder died without releasing (kill -9): the lock is taken over with a notice
    r = subprocess.run(
        [sys.executable, str(script), str(folder), "die"], env=_env(), capture_output=True
    )
    assert r.returncode == 0 and (folder / LOCK_FILE).exists()
    with caplog.at_level(logging.WARNING), RunLock(folder) as lock:
        assert lock.held
    assert "is no longer running" in caplog.text and "test holder" in caplog.text
    assert not (folder / LOCK_FILE).exists()
    # re-entrant in the holding thread (a save inside a track holding the lock)
    with hold(folder), hold(folder):
        pass


def save_session_into_locked(folder, tmp_path, small_plate):
    """The widget's Save and autosave into a folder another live process holds."""
    from napari_sam2_worms.engine.session_io import autosave

    vpath = tmp_path / "plate.tif"
    tifffile.imwrite(vpath, small_plate.video)
    s = load_or_track(vpath, small_plate)
    s.settings["session_dir"] = str(folder)
    assert autosave(s) is None  # logged, never raised; the session in memory is kept
    save_session(s, folder, lock_timeout=0.2)


def test_track_refuses_a_run_folder_unless_overwrite(tmp_path, plate, capsys):
    vpath, prompts = plate
    run = tmp_path / "R"
    assert main(_track(vpath, prompts, run)) == 0
    before = (run / "masks.tif").read_bytes()
    assert main(_track(vpath, prompts, run)) == 2
    err = capsys.readouterr().err
    assert "holds a run already" in err and "--overwrite" in err
    assert (run / "masks.tif").read_bytes() == before
    from napari_sam2_worms.engine.track_job import check_run_folder

    with pytest.raises(RunFolderExistsError):
        check_run_folder(run, overwrite=False, resume=False)
    assert main(_track(vpath, prompts, run, "--overwrite", "--frames", "1:3")) == 0
    labels = tifffile.imread(run / "masks.tif")
    assert labels[1:4].any() and not labels[5:].any()


def test_two_tracks_into_one_folder(tmp_path, plate):
    """A second `track` while the first holds the folder is refused by name, exit 2."""
    vpath, prompts = plate
    run = tmp_path / "R"
    with RunLock(run, "napari-sam2-worms track"):
        r = _cli(*_track(vpath, prompts, run))
    assert r.returncode == 2 and "is in use by napari-sam2-worms track" in r.stderr
    assert not (run / "session.json").exists()


# -- 7. the video fingerprint ----------------------------------------------------------------
def test_session_refuses_another_video_of_the_same_shape(tmp_path, small_plate):
    vpath = tmp_path / "plate.tif"
    tifffile.imwrite(vpath, small_plate.video)
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, small_plate.video[::-1].copy())
    folder = save_session(load_or_track(vpath, small_plate), tmp_path / "sess")
    with pytest.raises(SessionFileError, match=r"other\.tif.*plate\.tif.*re-link"):
        load_session(folder, OracleBackend(small_plate.labels), video=open_video(other))
    s = load_session(
        folder, OracleBackend(small_plate.labels), video=open_video(other), relink=True
    )
    save_session(s, folder)  # the session now belongs to the other video
    doc = json.loads((folder / "session.json").read_text())
    assert doc["video"]["path"] == str(other.resolve())
    load_session(folder, OracleBackend(small_plate.labels), video=open_video(other))
    with pytest.raises(SessionFileError, match="not the video"):
        load_session(folder, OracleBackend(small_plate.labels), video=open_video(vpath))


def test_overlay_export_checks_the_video(tmp_path, plate, small_plate, capsys):
    vpath, prompts = plate
    run = tmp_path / "R"
    assert main(_track(vpath, prompts, run, "--frames", "0:2")) == 0
    tifffile.imwrite(vpath, small_plate.video[::-1].copy())  # another video at that path
    out = tmp_path / "o.mp4"
    assert main(["export", str(run), "--format", "overlay-mp4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "plate.tif is not the video" in err and not out.exists()


# -- 8. damaged files --------------------------------------------------------------------------
def test_damaged_files_are_named_never_exported_in_part(tmp_path, plate, small_plate):
    vpath, prompts = plate
    run = tmp_path / "R"
    assert main(_track(vpath, prompts, run)) == 0
    good_csv = (run / "skeletons.csv").read_bytes()
    lines = good_csv.splitlines(keepends=True)
    (run / "skeletons.csv").write_bytes(b"".join(lines[: 1 + 8 * 3 * 49]))  # 8 of 12 frames
    r = _cli("export", str(run), "--format", "csv", "--out", str(tmp_path / "a.csv"))
    assert r.returncode == 2 and "skeletons.csv is damaged" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "a.csv").exists()
    # the same cut in a folder without records (written by hand / an older version)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    doc = json.loads((run / "session.json").read_text())
    for key in ("generation", "files", "derived"):
        doc.pop(key)
    (legacy / "session.json").write_text(json.dumps(doc))
    (legacy / "skeletons.csv").write_bytes(b"".join(lines[: 1 + 8 * 3 * 49]))
    assert main(["export", str(legacy), "--format", "csv", "--out", str(tmp_path / "b")]) == 2
    # a truncated masks.tif: export and load_session name the file
    (run / "skeletons.csv").write_bytes(good_csv)
    data = (run / "masks.tif").read_bytes()
    (run / "masks.tif").write_bytes(data[: len(data) // 2])
    for fmt in ("csv", "masks-tiff"):
        r = _cli("export", str(run), "--format", fmt, "--out", str(tmp_path / f"c.{fmt}"))
        assert r.returncode == 2 and "masks.tif is damaged" in r.stderr, r.stderr
        assert not (tmp_path / f"c.{fmt}").exists()
    with pytest.raises(SessionFileError, match=r"masks\.tif is damaged"):
        load_session(run, OracleBackend(small_plate.labels))
    # without records the decoder's error is still one named message
    doc = json.loads((run / "session.json").read_text())
    doc.pop("files")
    (run / "session.json").write_text(json.dumps(doc))
    with pytest.raises(SessionFileError, match=r"masks\.tif is damaged and cannot be read"):
        load_session(run, OracleBackend(small_plate.labels))


# -- 11. autosave, resume, Ctrl-C ----------------------------------------------------------------
def _computed(folder: Path, small_plate) -> np.ndarray:
    s = load_session(folder, OracleBackend(small_plate.labels))
    done = np.zeros(s.n_frames, bool)
    done[s.computed_frames()] = True
    s.close()
    return done


def test_track_killed_mid_run_resumes_from_last_autosave(tmp_path, plate, small_plate):
    vpath, prompts = plate
    run = tmp_path / "R"
    r = _cli(*_track(vpath, prompts, run, "--frames-per-save", "1"), fault="track-frame:6")
    assert r.returncode == EXIT_CODE, r.stderr
    done = _computed(run, small_plate)  # the folder reopens: frames 1..6 were saved
    assert done[1:6].all() and not done[8:].any()
    saved = tifffile.imread(run / "masks.tif")
    assert not (run / "skeletons.csv").exists()
    r = _cli(*_track(vpath, prompts, run))
    assert r.returncode == 2 and "--resume" in r.stderr
    r = _cli(*_track(vpath, prompts, run, "--resume"))
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert _computed(run, small_plate).all()
    labels = tifffile.imread(run / "masks.tif")
    np.testing.assert_array_equal(labels[1:5], saved[1:5])  # saved frames kept
    for o in (1, 2, 3):  # and the run went on tracking each worm
        assert ((labels[11] == o) & (small_plate.labels[11] == o)).sum() > 0
    assert _csv_objects(run / "skeletons.csv") == {1, 2, 3}
    doc = json.loads((run / "session.json").read_text())
    assert doc["settings"]["track"]["complete"] and doc["derived"]["skeletons.csv"]


def test_ctrl_c_writes_frames_done_exits_130_without_tracebacks(tmp_path, plate, small_plate):
    vpath, prompts = plate
    run = tmp_path / "R"
    args = _track(vpath, prompts, run)
    args[args.index("--workers") + 1] = "2"  # worker processes get the Ctrl-C too
    r = _cli(*args, fault="track-frame:4:sigint", new_session=True)
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr
    assert "--resume" in r.stderr
    done = _computed(run, small_plate)
    assert done[1:5].all() and not done.all()
    assert _csv_objects(run / "skeletons.csv") == {1, 2, 3}  # written for the frames done
    assert main(_track(vpath, prompts, run, "--resume")) == 0
    assert _computed(run, small_plate).all()


def test_resume_refuses_other_prompts_or_video(tmp_path, plate, small_plate, capsys):
    vpath, prompts = plate
    run = tmp_path / "R"
    r = _cli(*_track(vpath, prompts, run, "--frames-per-save", "1"), fault="track-frame:3")
    assert r.returncode == EXIT_CODE
    other = json.loads(prompts.read_text())
    other["points"] = other["points"][:1]
    p2 = tmp_path / "p2.json"
    p2.write_text(json.dumps(other))
    assert main(_track(vpath, p2, run, "--resume")) == 2
    assert "prompts differ" in capsys.readouterr().err
    v2 = tmp_path / "v2.tif"
    tifffile.imwrite(v2, small_plate.video[::-1].copy())
    assert main(_track(v2, prompts, run, "--resume")) == 2
    assert "v2.tif is not the video" in capsys.readouterr().err
    empty = tmp_path / "empty"
    assert main(_track(vpath, prompts, empty, "--resume")) == 2
    assert not empty.exists()  # nothing left behind by a refused command
    shutil.rmtree(run)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (mounted as root), to fill up."""
    with tmpfs(tmp_path / "disk", "size=1m") as folder:
        yield folder


def test_full_disk_while_tracking_over_a_run_keeps_the_old_run(tmp_path, plate, small_disk):
    """Item 1's first path: `track --overwrite` onto a disk that fills keeps the old run
    whole (session, masks and skeletons of one generation), and says so."""
    vpath, prompts = plate
    run = small_disk / "R"
    assert main(_track(vpath, prompts, run, "--frames", "0:5")) == 0
    assert main(["export", str(run), "--format", "csv", "--out", str(tmp_path / "before.csv")]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    stat = os.statvfs(small_disk)
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:  # leave ~16 KiB: too little for a new set
        fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - (16 << 10)))
    r = _cli(*_track(vpath, prompts, run, "--overwrite"))
    assert r.returncode == 2, r.stderr
    assert "Nothing was replaced" in r.stderr and "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # no staging left
    filler.unlink()
    assert main(["export", str(run), "--format", "csv", "--out", str(tmp_path / "after.csv")]) == 0
    assert (tmp_path / "after.csv").read_bytes() == (tmp_path / "before.csv").read_bytes()


def test_interrupted_save_in_a_read_only_folder_is_named(tmp_path, small_plate, small_disk):
    """A committed save a crash left unfinished is finished by the next reader; where the
    folder became read-only meanwhile, one clear error (and saving there says why)."""
    from napari_sam2_worms.utils import OutputError

    vpath = tmp_path / "plate.tif"
    tifffile.imwrite(vpath, small_plate.video)
    s = load_or_track(vpath, small_plate)
    folder = save_session(s, small_disk / "sess")
    script = tmp_path / "save.py"
    script.write_text(_SAVE_SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), str(folder)],
        env=_env(NAPARI_SAM2_WORMS_FAULT="save-commit:1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == EXIT_CODE and (folder / COMMIT_FILE).exists()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(SessionFileError, match="interrupted and the folder is not writable"):
            load_session(folder, OracleBackend(small_plate.labels))
        with pytest.raises(OutputError, match=r"Cannot write into .*Nothing was replaced"):
            save_session(s, folder)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert _state(folder, small_plate)[0] == [1]  # finished now: the new session


def test_sam2_track_resumes_after_a_kill(tmp_path, small_plate):
    """The real SAM 2 path (random weights: semantics only): killed at frame 3, resumed
    from the saved masks (mask prompts to sam2 on the resume frame), every frame done."""
    from napari_sam2_worms.testing.random_sam2 import make_random_checkpoint

    ckpt = make_random_checkpoint(tmp_path / "random_tiny.pt")
    vpath = tmp_path / "four.tif"
    tifffile.imwrite(vpath, small_plate.video[:4])
    prompts = write_prompts(tmp_path / "prompts.json", small_plate, 1)
    run = tmp_path / "R"
    args = [
        "track",
        str(vpath),
        "--prompts",
        str(prompts),
        "--out",
        str(run),
        "--checkpoint",
        str(ckpt.path),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--frames-per-save",
        "1",
    ]
    r = _cli(*args, fault="track-frame:3")  # killed before frame 3's save
    assert r.returncode == EXIT_CODE, r.stderr
    doc = json.loads((run / "session.json").read_text())
    assert doc["settings"]["track"]["done"] == [2, 0]
    saved = tifffile.imread(run / "masks.tif")
    from napari_sam2_worms.engine.pipeline import TrackPlan

    seen = []
    orig = TrackPlan.from_json.__func__

    def spy(cls, d):
        plan = orig(cls, d)
        seen.append(list(plan.done))
        return plan

    TrackPlan.from_json = classmethod(spy)
    try:
        assert main([*args, "--resume"]) == 0
    finally:
        TrackPlan.from_json = classmethod(orig)
    assert seen == [[2, 0]]
    doc = json.loads((run / "session.json").read_text())
    assert doc["settings"]["track"]["done"] == [3, 2] and doc["settings"]["track"]["complete"]
    scores = np.load(run / "scores.npy")
    assert scores.shape == (4, 3) and np.isfinite(scores).all()
    np.testing.assert_array_equal(tifffile.imread(run / "masks.tif")[1], saved[1])


def test_fingerprint_of_a_real_mp4_is_stable_across_seeks():
    """Decoded frames, not bytes: the same mp4 reopened and read out of order matches."""
    from conftest import need_shared
    from napari_sam2_worms.engine.session_io import frames_fingerprint

    path = need_shared("videos", "fly_pair_384.mp4")
    a = frames_fingerprint(open_video(path))
    v = open_video(path)
    for i in (v.shape[0] - 2, 7, v.shape[0] // 2 + 1):
        v[i]
    assert frames_fingerprint(v) == a
    assert a["frames"] == [0, v.shape[0] // 2, v.shape[0] - 1]


def test_kill_between_session_save_and_skeletons_never_exports_the_old_run(tmp_path, plate):
    """Item 1's second path: `track --overwrite` killed after its final session save and
    before skeletons.csv; the old run's skeletons (object 1) never reach an export."""
    vpath, prompts = plate
    run = tmp_path / "R"
    assert main(_track(vpath, prompts, run)) == 0
    assert _csv_objects(run / "skeletons.csv") == {1, 2, 3}
    doc = json.loads(prompts.read_text())
    doc["points"] = [p for p in doc["points"] if p["object"] != 1]
    p23 = tmp_path / "p23.json"
    p23.write_text(json.dumps(doc))
    # commits: 1 = the save at the start, 2 = the final session save, 3 = skeletons.csv
    r = _cli(*_track(vpath, p23, run, "--overwrite"), fault="save-commit:2")
    assert r.returncode == EXIT_CODE, r.stderr
    out = tmp_path / "t.csv"
    assert main(["export", str(run), "--format", "csv", "--out", str(out)]) == 0
    assert _csv_objects(out) == {2, 3}
    assert not (run / "skeletons.csv").exists()


def test_two_real_tracks_into_one_folder(tmp_path, plate, small_plate):
    """Two `track` processes, one folder: the second is refused by name (exit 2) while the
    first holds it, and the folder is the first's alone."""
    vpath, prompts = plate
    run = tmp_path / "R"
    go = tmp_path / "go"
    first = subprocess.Popen(
        cli_command(*_track(vpath, prompts, run)),
        env=_env(NAPARI_SAM2_WORMS_FAULT=f"track-frame:1:wait={go}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "session.json").exists() and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = _cli(*_track(vpath, prompts, run, "--overwrite"))
        assert second.returncode == 2
        assert f"in use by napari-sam2-worms track (process {first.pid}" in second.stderr
    finally:
        go.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert _computed(run, small_plate).all()
    assert _csv_objects(run / "skeletons.csv") == {1, 2, 3}


def test_a_lasting_holder_is_not_waited_for(tmp_path, monkeypatch):
    """A save meets a running `track` (a lasting holder): refused at once, no wait (the
    widget's Save would freeze); a short holder is waited for."""
    import napari_sam2_worms.engine.run_lock as run_lock

    naps = []
    monkeypatch.setattr(run_lock.time, "sleep", lambda s: naps.append(s))
    folder = tmp_path / "run"
    with (
        RunLock(folder, "napari-sam2-worms track", lasting=True),
        pytest.raises(RunFolderLockedError, match="track"),
    ):
        RunLock(folder).acquire(timeout=30)
    assert naps == []
    with RunLock(folder, "a save"), pytest.raises(RunFolderLockedError, match="a save"):
        RunLock(folder).acquire(timeout=0.3)
    assert naps  # it waited (polling) before giving up
