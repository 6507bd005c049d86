"""How responsive napari stays with the tracker: event-loop gaps, Cancel, stepping, flags.

Drives the real widget the way a user does (docked from the Plugins menu, propagation in
the real ``thread_worker``), with a QTimer firing every 50 ms as a probe: the worst gap
between two ticks is how long the viewer was frozen. Run it with a display::

    QT_API=pyqt6 xvfb-run -a -s "-screen 0 1280x1024x24" \\
        python3 benchmarks/gui_responsiveness.py [--sam2] [--tierpsy PATH]

Measured (one line each):

- classic propagation of the 120-frame 4-worm plate and of the 563-frame Tierpsy clip:
  worst gap, total time;
- Cancel during the Tierpsy propagation: time from the click to the worker's last frame,
  to the end of the run (after the autosave), frames done;
- the skeleton tracks after a run (worker) and "Update flags" (main thread);
- stepping through 30 frames with the tracker's layers and without them;
- ``--steps ROUNDS``: only the frame-step comparison, bare napari and napari with the
  tracker (the plate tracked, centerlines shown) interleaved in one process for ROUNDS
  rounds, wall and CPU time of a step, the ratio and the load average (the machine may be
  shared: interleaving keeps the load the same for both);
- clicks (classic) on the plate: worst gap;
- ``--sam2``: SAM 2 tiny with random weights (CPU, image size 256) on 4 frames: worst
  gap while propagating, Cancel after the first frame: time to the worker's stop.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

PROBE_MS = 50


class GapProbe:
    """A QTimer every 50 ms; ``worst`` is the longest interval between ticks (s)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(self._tick)
        self.ticks: list[float] = []

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        self.ticks.append(time.perf_counter())
        return self.worst

    @property
    def worst(self) -> float:
        return float(np.max(np.diff(self.ticks))) if len(self.ticks) > 1 else 0.0


def wait(cond, timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not cond():
        QApplication.processEvents()
        time.sleep(0.002)
        if time.monotonic() > end:
            raise TimeoutError("benchmark step did not finish")


def settle(widget) -> None:
    wait(lambda: not widget.running and widget.tracks_fresh and not widget._workers)


def dock(viewer):
    from napari_sam2_worms.napari._widget import widget_for

    bar = viewer.window._qt_window.menuBar()
    plugins = next(a for a in bar.actions() if a.text().replace("&", "") == "Plugins")
    action = next(a for a in plugins.menu().actions() if a.text().startswith("SAM 2 worm"))
    action.trigger()
    return widget_for(viewer)


def open_viewer(video, name: str, with_tracker: bool = True):
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 900)
    viewer.add_image(video, name=name, metadata={"fps": getattr(video, "fps", 15.0)})
    viewer.dims.set_current_step(0, 0)
    return viewer, (dock(viewer) if with_tracker else None)


def load(widget, backend: str = "classic", **sam2) -> None:
    widget.model_panel.set_backend(backend)
    widget.model_panel.sam2_options.update(sam2)
    widget.load_model()
    wait(lambda: widget.session is not None)


def click_objects(widget, points_rc, probe: GapProbe | None = None) -> float:
    """Add one object per (row, col) and click there (the points-layer path of a click)."""
    from napari_sam2_worms.napari._widget import PROMPTS

    layer = widget.viewer.layers[PROMPTS]
    if probe:
        probe.start()
    for r, c in points_rc:
        widget.add_object()
        layer.add(np.array([widget.current_frame(), r, c], float))
        wait(lambda: not widget._prompt_busy)
        pause = time.monotonic() + 0.3  # the user moves to the next animal
        wait(lambda pause=pause: time.monotonic() > pause)
    settle(widget)
    return probe.stop() if probe else 0.0


def propagate(widget, probe: GapProbe) -> tuple[float, float]:
    probe.start()
    t0 = time.perf_counter()
    widget.propagate("forward")
    wait(lambda: not widget.running)
    total = time.perf_counter() - t0
    settle(widget)  # the skeleton tracks follow in a worker
    return probe.stop(), total


def step_times(viewer, frames: int = 30) -> tuple[list[float], list[float]]:
    """Wall and CPU (this process, all threads: software GL included) time of each step."""
    from qtpy.QtWidgets import QApplication

    n = viewer.dims.nsteps[0]
    for _ in range(3):
        QApplication.processEvents()
    wall, cpu = [], []
    for i in range(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        viewer.dims.set_current_step(0, (i * 3) % n)
        QApplication.processEvents()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def step_cost(viewer, frames: int = 30) -> float:
    return statistics.median(step_times(viewer, frames)[0])


def same_layers_viewer(plate, widget):
    """napari showing what the tracker shows, as plain layers and with no plugin.

    The video, the masks (a Labels layer of the same stack), the prompts (the same
    points) and every frame's centerline dots in one 3D Points layer that napari slices
    itself: what stepping costs when napari alone draws these results (e.g. opened
    from files), so that the ratio to it is the plugin's own per-step cost.
    """
    from napari_sam2_worms.video import ArrayVideo

    viewer, _ = open_viewer(ArrayVideo(plate.video, fps=plate.fps), "plain", with_tracker=False)
    src = widget.viewer.layers
    viewer.add_labels(np.asarray(src["masks"].data), name="masks", opacity=0.5)
    tracks = widget.session.skeletons()
    pts = np.asarray(tracks.points, float)  # (T, K, N, 2) (x, y)
    t, k, n = np.nonzero(np.isfinite(pts[..., 0]))
    dots = np.stack([np.asarray(tracks.frames)[t], pts[t, k, n, 1], pts[t, k, n, 0]], axis=1)
    viewer.add_points(dots, name="skeletons", size=2, face_color="white", border_width=0)
    viewer.add_points(np.asarray(src["prompts"].data), name="prompts", size=8)
    viewer.dims.set_current_step(0, 0)
    return viewer


def steps_case(report, rounds: int) -> None:
    """Bare napari vs napari with the tracker: frame steps interleaved, several rounds."""
    import os

    from napari_sam2_worms.synthetic import make_plate
    from napari_sam2_worms.video import ArrayVideo

    plate = make_plate(n_frames=120, height=240, width=320, n_worms=4)
    bare, _ = open_viewer(ArrayVideo(plate.video, fps=plate.fps), "bare", with_tracker=False)
    viewer, widget = open_viewer(ArrayVideo(plate.video, fps=plate.fps), "plate")
    load(widget)
    click_objects(widget, [(y, x) for x, y in plate.head_points(0).values()])
    propagate(widget, GapProbe())
    names = ", ".join(layer.name for layer in viewer.layers)
    print(f"layers with the tracker: {names}", flush=True)
    ours = [layer.name for layer in viewer.layers][1:]
    same = same_layers_viewer(plate, widget)
    load0 = os.getloadavg()
    kinds = ("bare", "same layers", "tracker")
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    hidden: dict[str, list[float]] = {name: [] for name in ours}
    for r in range(rounds):
        order = (("bare", bare), ("same layers", same), ("tracker", viewer))
        for name, v in order[:: 1 if r % 2 == 0 else -1]:
            wall, cpu = step_times(v, 20)
            walls[name] += wall
            cpus[name] += cpu
        for name in ours:  # what each layer costs: the same steps with it hidden
            viewer.layers[name].visible = False
            hidden[name] += step_times(viewer, 10)[1]
            viewer.layers[name].visible = True
            widget.refresh_skeletons()  # the overlay catches up with the frame on screen
        print(
            f"round {r + 1}: median step wall bare {statistics.median(walls['bare']):.3f} s, "
            f"tracker {statistics.median(walls['tracker']):.3f} s",
            flush=True,
        )
    load1 = os.getloadavg()
    med = {k: statistics.median(v) for k, v in walls.items()}
    cmed = {k: statistics.median(v) for k, v in cpus.items()}
    report(f"steps ({rounds} rounds x 20, interleaved): bare napari, wall (median)", med["bare"])
    report("steps: with the tracker, wall (median)", med["tracker"])
    report("steps: ratio tracker / bare, wall (x)", med["tracker"] / med["bare"])
    report("steps: bare napari, CPU of this process (median)", cmed["bare"])
    report("steps: with the tracker, CPU of this process (median)", cmed["tracker"])
    report("steps: ratio tracker / bare, CPU (x)", cmed["tracker"] / cmed["bare"])
    report("steps: napari with the same layers, no plugin, wall (median)", med["same layers"])
    report("steps: the same layers, no plugin, CPU (median)", cmed["same layers"])
    report("steps: ratio tracker / same layers, wall (x)", med["tracker"] / med["same layers"])
    report("steps: ratio tracker / same layers, CPU (x)", cmed["tracker"] / cmed["same layers"])
    for name, cpu in hidden.items():
        saved = cmed["tracker"] - statistics.median(cpu)
        report(f"steps: CPU saved with the {name!r} layer hidden (median)", saved)
    print(f"load average (1 min) before / after: {load0[0]:.2f} / {load1[0]:.2f}", flush=True)
    viewer.close()
    same.close()
    bare.close()


def plate_case(report) -> None:
    from napari_sam2_worms.napari._sample_data import synthetic_plate
    from napari_sam2_worms.synthetic import make_plate
    from napari_sam2_worms.video import ArrayVideo

    [(video, _meta, _)] = synthetic_plate(n_frames=120, height=240, width=320, n_worms=4)
    bare, _ = open_viewer(video, "bare", with_tracker=False)
    bare_step = step_cost(bare)
    bare.close()
    plate = make_plate(n_frames=120, height=240, width=320, n_worms=4)
    viewer, widget = open_viewer(ArrayVideo(plate.video, fps=plate.fps), "plate")
    load(widget)
    probe = GapProbe()
    heads = [(y, x) for x, y in plate.head_points(0).values()]
    report(
        "plate 120 frames, 4 worms: clicks (classic), worst gap",
        click_objects(widget, heads, probe),
    )
    gap, total = propagate(widget, probe)
    report("plate: classic propagation, worst gap", gap)
    report("plate: classic propagation, run time", total)
    t0 = time.perf_counter()
    widget.session.skeletons()
    report("plate: skeleton tracks of all frames (worker)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    widget.update_flags()
    report("plate: Update flags", time.perf_counter() - t0)
    report("plate: step one frame, bare napari (median)", bare_step)
    report("plate: step one frame, with the tracker (median)", step_cost(viewer))
    viewer.close()


def tierpsy_case(report, path: Path) -> None:
    from napari_sam2_worms.video import open_video

    video = open_video(path)
    viewer, widget = open_viewer(video, "tierpsy")
    load(widget)
    (x, y) = widget.session.backend.detect(0)[0]
    click_objects(widget, [(y, x)])
    probe = GapProbe()
    gap, total = propagate(widget, probe)
    report(f"tierpsy {len(video)} frames: classic propagation, worst gap", gap)
    report("tierpsy: classic propagation, run time", total)
    # Cancel 0.3 s into a second run
    s = widget.session
    s.scores[1][1:] = np.nan  # frames to do again
    stamps: list[float] = []
    real = s.propagate

    def timed(*a, **k):
        for step in real(*a, **k):
            stamps.append(time.perf_counter())
            yield step

    s.propagate = timed
    probe.start()
    widget.propagate("forward")
    t_start = time.perf_counter()
    wait(lambda: time.perf_counter() - t_start > 0.3)
    t_cancel = time.perf_counter()
    widget.cancel()
    text = widget.propagate_panel.progress.format()
    wait(lambda: not widget.running)
    t_end = time.perf_counter()
    settle(widget)
    probe.stop()
    after = [t for t in stamps if t > t_cancel]
    stop = (after[-1] if after else t_cancel) - t_cancel
    report("tierpsy: Cancel -> worker's last frame", stop)
    report("tierpsy: Cancel -> run finished (autosave included)", t_end - t_cancel)
    report(
        f"tierpsy: frames done at Cancel / of {len(video)} (progress said {text!r})", len(stamps)
    )
    report("tierpsy: worst gap around Cancel", probe.worst)
    viewer.close()


def sam2_case(report) -> None:
    import tempfile

    from napari_sam2_worms.synthetic import make_plate
    from napari_sam2_worms.testing.random_sam2 import make_random_checkpoint
    from napari_sam2_worms.video import ArrayVideo

    plate = make_plate(n_frames=4, height=96, width=128, n_worms=2)
    ckpt = make_random_checkpoint(Path(tempfile.mkdtemp()) / "sam2.1_hiera_tiny.pt")
    viewer, widget = open_viewer(ArrayVideo(plate.video, fps=plate.fps), "sam2")
    widget.model_panel.set_backend("sam2")
    widget.model_panel.checkpoint.setText(str(ckpt.path))
    widget.model_panel.device.setCurrentText("cpu")
    load(widget, "sam2", image_size=256)
    probe = GapProbe()
    heads = [(y, x) for x, y in plate.head_points(0).values()]
    report("sam2 (random, CPU): clicks, worst gap", click_objects(widget, heads, probe))
    gap, total = propagate(widget, probe)
    report("sam2: propagation of 4 frames, worst gap", gap)
    report("sam2: propagation of 4 frames, run time", total)
    s = widget.session
    for o in s.scores:
        s.scores[o][1:] = np.nan
    stamps: list[float] = []
    real = s.propagate

    def timed(*a, **k):
        for step in real(*a, **k):
            stamps.append(time.perf_counter())
            yield step

    s.propagate = timed
    probe.start()
    widget.propagate("forward")
    wait(lambda: len(stamps) >= 1)
    t_cancel = time.perf_counter()
    widget.cancel()
    wait(lambda: not widget.running)
    t_end = time.perf_counter()
    probe.stop()
    report("sam2: Cancel after the first frame -> run finished", t_end - t_cancel)
    report("sam2: frames done after Cancel (in flight)", len(stamps) - 1)
    report("sam2: worst gap around Cancel", probe.worst)
    viewer.close()


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sam2", action="store_true", help="also SAM 2 tiny, random weights")
    default = Path(__file__).resolve().parents[2] / "shared/data/videos/tierpsy_single_worm.avi"
    ap.add_argument("--tierpsy", type=Path, default=default)
    ap.add_argument(
        "--steps",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only the frame-step comparison (bare vs tracker, interleaved), ROUNDS rounds",
    )
    args = ap.parse_args()
    import os

    os.environ.setdefault("NAPARI_SAM2_WORMS_AUTOSAVE", tempfile_dir())
    rows: list[tuple[str, float]] = []

    def report(name: str, value: float) -> None:
        rows.append((name, value))
        counts = ("frames" in name and "/" in name) or "in flight" in name
        unit = "" if counts else " x" if name.endswith("(x)") else " s"
        shown = f"{value:.0f}" if not unit else f"{value:.2f}" if unit == " x" else f"{value:.3f}"
        print(f"{name}: {shown}{unit}", flush=True)

    if args.steps:
        steps_case(report, args.steps)
        return
    plate_case(report)
    if args.tierpsy.is_file():
        tierpsy_case(report, args.tierpsy)
    else:
        print(f"(no {args.tierpsy}: Tierpsy case skipped)")
    if args.sam2:
        sam2_case(report)


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="gui-bench-autosave-")


if __name__ == "__main__":
    main()
