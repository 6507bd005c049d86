"""The batch command on Dask: real worker processes, real files, injected faults."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed", reason="the batch extra (dask[distributed]) is not installed")

from fixtures.cli import cli_command, cli_env
from fixtures.plates import write_prompts
from napari_sam2_worms.batch.cluster import gpu_assignment, local_cluster, parse_gpus
from napari_sam2_worms.batch.runner import BatchOptions, run_batch
from napari_sam2_worms.synthetic import make_plate


def _plate(seed: int):
    return make_plate(n_frames=8, height=96, width=128, n_worms=2, seed=seed)


def _write_mp4(path: Path, video: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        s.options = {"crf": "12", "g": "4"}
        for f in video:
            frame = av.VideoFrame.from_ndarray(np.repeat(f[..., None], 3, -1), format="rgb24")
            c.mux(s.encode(frame))
        c.mux(s.encode())


def _prompts(plate, path: Path, *, x_shift: float = 0.0) -> Path:
    return write_prompts(path, plate, 0, x_shift=x_shift)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The installed command as a user runs it (the package this test imported)."""
    return subprocess.run(
        cli_command("batch", *args),
        capture_output=True,
        text=True,
        env=cli_env(TQDM_DISABLE="1"),
        timeout=600,
    )


def _manifest(out: Path) -> dict:
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["format"] == "napari-sam2-worms-batch"
    return {Path(k).name: v for k, v in doc["videos"].items()}


def test_batch_two_done_one_corrupt_then_rerun_skips_done(tmp_path):
    videos, pdir, out = tmp_path / "plates", tmp_path / "prompts", tmp_path / "out"
    videos.mkdir()
    pdir.mkdir()
    plates = {"a": _plate(0), "b": _plate(1)}
    for name, plate in plates.items():
        _write_mp4(videos / f"{name}.mp4", plate.video)
    _prompts(plates["a"], videos / "a.prompts.json")  # beside the video
    _prompts(plates["b"], pdir / "b.prompts.json")  # in --prompts-dir
    (videos / "c.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    _prompts(plates["a"], videos / "c.prompts.json")

    args = [str(videos), "--out", str(out), "--backend", "classic", "--workers", "2"]
    args += ["--prompts-dir", str(pdir), "--dashboard-address", ":0"]
    r = _cli(*args)
    assert r.returncode == 1, r.stderr  # the exit status is the number of failed videos
    assert "2 done, 0 skipped (done before), 1 failed" in r.stdout
    assert "Dask dashboard: http://" in r.stderr
    m = _manifest(out)
    assert {k: v["status"] for k, v in m.items()} == {
        "a.mp4": "done",
        "b.mp4": "done",
        "c.mp4": "failed",
    }
    assert "c.mp4" in m["c.mp4"]["error"] and "video" in m["c.mp4"]["error"]
    assert f"failed: c: {m['c.mp4']['error']}" in r.stderr
    workers = {m[k]["worker"]["pid"] for k in ("a.mp4", "b.mp4", "c.mp4")}
    assert os.getpid() not in workers  # ran in the Dask worker processes

    from napari_sam2_worms.export.run_dir import load_run_tracks

    for name, plate in plates.items():
        e = m[f"{name}.mp4"]
        assert e["output"] == name and e["inputs"]["fingerprint"]["size"] > 0
        assert set(e["timings"]) >= {"open", "track", "write"}
        labels = tifffile.imread(out / name / "masks.tif")
        for o in (1, 2):  # each worm tracked on every frame
            inter = ((labels == o) & (plate.labels == o)).sum((1, 2))
            assert (inter > 0).all()
        tracks = load_run_tracks(out / name)
        assert tracks.n_frames == 8 and list(tracks.object_ids) == [1, 2]
    assert not list(out.glob(".*"))  # no half-written folder, no lock left

    with open(out / "report.csv") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"a", "b", "c"}
    assert rows["a"]["status"] == "done" and rows["a"]["frames"] == "8"
    assert rows["a"]["objects"] == "2" and float(rows["a"]["good_skeletons_pct"]) > 50
    assert float(rows["b"]["frames_per_s"]) > 0
    assert rows["c"]["status"] == "failed" and rows["c"]["error"] == m["c.mp4"]["error"]
    html = (out / "report.html").read_text()
    from PIL import Image

    for name in ("a", "b"):
        assert f'src="thumbnails/{name}.png"' in html
        with Image.open(out / "thumbnails" / f"{name}.png") as im:
            assert im.size == (128, 96)
            rgb = np.asarray(im.convert("RGB")).astype(int)
        assert (np.abs(rgb[..., 0] - rgb[..., 2]) > 40).any()  # coloured masks drawn

    # running again: the two done are skipped, the failed one is tried again
    r2 = _cli(*args)
    assert r2.returncode == 1, r2.stderr
    assert "0 done, 2 skipped (done before), 1 failed" in r2.stdout
    m2 = _manifest(out)
    for k in ("a.mp4", "b.mp4"):
        assert m2[k]["finished"] == m[k]["finished"]
    assert m2["c.mp4"]["finished"] > m["c.mp4"]["finished"]


def test_batch_detect_session_rerun_and_changed_inputs(tmp_path):
    """--init detect, a corrected session re-run as it is, bad prompts, changed inputs."""
    from distributed import Client, LocalCluster

    from napari_sam2_worms.backends.classic import ClassicBackend
    from napari_sam2_worms.engine.session_io import load_session, save_session

    plate = _plate(2)
    videos = tmp_path / "v"
    videos.mkdir()
    tifffile.imwrite(videos / "p1.tif", plate.video)
    out = tmp_path / "out"
    with (
        LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None)
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        s = run_batch(
            [videos / "p1.tif"],
            out,
            BatchOptions(backend="classic", init="detect"),
            scheduler=client,
            progress=False,
        )
        assert s.done == ["p1"] and s.exit_code == 0, s.failed
        doc = json.loads((out / "p1" / "session.json").read_text())
        assert len(doc["objects"]) == 2  # the detector found both worms
        assert {p["frame"] for p in doc["painted"]} == {0}  # its masks are the prompts
        labels = tifffile.imread(out / "p1" / "masks.tif")
        assert all(len(np.unique(f[f > 0])) == 2 for f in labels)

        # a user corrects the session in napari (removes object 2): re-run as it is
        corrected = tmp_path / "corrected"
        session = load_session(out / "p1", ClassicBackend())
        session.remove_object(2)
        save_session(session, corrected)
        session.close()
        # plus a video whose prompts file is bad
        tifffile.imwrite(videos / "p2.tif", plate.video)
        (videos / "p2.prompts.json").write_text(
            json.dumps({"version": 1, "points": [{"object": 1, "frame": 0, "x": 500, "y": 5}]})
        )
        out2 = tmp_path / "out2"
        s2 = run_batch(
            [corrected, videos / "p2.tif"],
            out2,
            BatchOptions(backend="classic"),
            scheduler=client,
            progress=False,
        )
        assert s2.done == ["corrected"]
        assert len(s2.failed) == 1 and s2.exit_code == 1
        assert s2.failed[0][0] == "p2" and "outside" in s2.failed[0][1]
        doc2 = json.loads((out2 / "corrected" / "session.json").read_text())
        assert [o["id"] for o in doc2["objects"]] == [1]
        relabels = tifffile.imread(out2 / "corrected" / "masks.tif")
        assert set(np.unique(relabels)) == {0, 1}

        # the same inputs: skipped; another video content under the same name: run again
        again = run_batch(
            [videos / "p1.tif"],
            out,
            BatchOptions(backend="classic", init="detect"),
            scheduler=client,
            progress=False,
        )
        assert again.skipped == ["p1"] and not again.done
        tifffile.imwrite(videos / "p1.tif", _plate(3).video)
        changed = run_batch(  # through the scheduler's address, as --scheduler does
            [videos / "p1.tif"],
            out,
            BatchOptions(backend="classic", init="detect"),
            scheduler=cluster.scheduler_address,
            progress=False,
        )
        assert changed.done == ["p1"]


def test_batch_refuses_a_locked_output_folder(tmp_path, capsys):
    from napari_sam2_worms.cli import main

    plate = _plate(0)
    tifffile.imwrite(tmp_path / "p.tif", plate.video)
    out = tmp_path / "out"
    out.mkdir()
    import socket

    lock = {"pid": os.getpid(), "host": socket.gethostname(), "started": 0}
    (out / ".batch.lock").write_text(json.dumps(lock))
    rc = main(["batch", str(tmp_path / "p.tif"), "--out", str(out), "--backend", "classic"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "another batch" in err and str(os.getpid()) in err
    assert len(err.strip().splitlines()) == 1


def test_local_cluster_pins_one_gpu_per_worker():
    """Each worker process sees its own GPU (CUDA_VISIBLE_DEVICES); no GPU is needed."""
    from distributed import Client

    cluster, plugin = local_cluster(2, ["0", "1"], dashboard_address=None)
    with cluster, Client(cluster) as client:
        client.register_plugin(plugin)
        env = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(env.values()) == ["0", "1"]
        # workers may start the skeleton processes of their video
        daemon = client.run(lambda: multiprocessing.current_process().daemon)
        assert len(daemon) == 2 and not any(daemon.values())
    assert gpu_assignment(3, ["0"]) == {"0": "0", "1": "0", "2": "0"}  # two share one GPU
    assert gpu_assignment(3, ["2", "5"]) == {"0": "2", "1": "5", "2": "2"}
    assert parse_gpus("none") == [] and parse_gpus("0, 1") == ["0", "1"]
    with pytest.raises(ValueError, match="twice"):
        parse_gpus("0,0")


def test_slurm_recipe_job_script():
    """The documented SLURM recipe: one GPU, one single-threaded worker per job."""
    pytest.importorskip("dask_jobqueue")
    from napari_sam2_worms.batch.cluster import slurm_cluster

    cluster = slurm_cluster(
        queue="gpu", account="wormlab", walltime="02:00:00", cpus_per_job=6, memory="24GB"
    )
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in (
        "#SBATCH --gres=gpu:1",
        "#SBATCH -p gpu",
        "#SBATCH -A wormlab",
        "#SBATCH -t 02:00:00",
        "#SBATCH --cpus-per-task=6",
    ):
        assert directive in lines, script
    assert "export DASK_DISTRIBUTED__WORKER__DAEMON=False" in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--nthreads 1" in worker and "--resources GPU=1" in worker
    assert "#SBATCH --mem=23G" in lines  # the worker's 24 GB


def test_cuda_out_of_memory_is_one_video_failure(tmp_path, monkeypatch):
    """CUDA OOM in one video: recorded with its message; the worker's next video runs."""
    torch = pytest.importorskip("torch")
    from napari_sam2_worms.batch import task

    plate = _plate(0)
    tifffile.imwrite(tmp_path / "p.tif", plate.video)
    prompts = _prompts(plate, tmp_path / "p.prompts.json")
    job = {"key": "p", "video": str(tmp_path / "p.tif"), "name": "p", "init": "prompts",
           "prompts": str(prompts), "session": None}  # fmt: skip
    opts = {"backend": "classic", "points": 49, "skeleton_workers": 0}
    real = task._backend

    def oom(options):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(task, "_backend", oom)
    res = task.process_video(job, str(tmp_path / "out"), opts)
    assert res["status"] == "failed"
    assert res["error"] == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert not (tmp_path / "out" / "p").exists()
    monkeypatch.setattr(task, "_backend", real)
    res = task.process_video(job, str(tmp_path / "out"), opts)
    assert res["status"] == "done", res.get("error")
    assert (tmp_path / "out" / "p" / "session.json").is_file()
