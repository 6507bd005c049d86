"""Where a propagated frame's wall time goes: host launching vs waiting for the GPU.

Propagates a synthetic plate (random weights: speed only) through the whole session
(labels composed, no skeletons) and splits each frame's wall time into: ``launch`` (the
host queueing the frame's GPU work: Python, sam2's bookkeeping, kernel launches or
graph replays), ``result`` (resolving overlaps, starting the host copy), ``wait`` (the
host waiting for the GPU to finish the previous frame) and ``other`` (the session).
A frame with ``wait`` > 0 is bound by the GPU; ``wait`` near 0 means the host is the
limit. Then prints the CUDA kernels of 10 frames (profiler, graphs as configured).

    export PYTHONPATH=$PWD/.devsite:$PWD/src
    python3 benchmarks/sam2_frame_time.py --objects 10 --frames 120 --graph-max-objects 16
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np


def _instrument(timers: dict[str, float]) -> None:
    """Time the host's wait for results, the batched launches and the result launches."""
    from napari_sam2_worms.backends.sam2 import adapter, batched, results

    finish = results.PendingResult.finish

    def timed_finish(self):
        t = time.perf_counter()
        if self.event is not None:
            self.event.synchronize()
        timers["wait"] += time.perf_counter() - t
        return finish(self)

    results.PendingResult.finish = timed_finish
    propagate = batched.propagate_batched

    def timed_propagate(*a, **k):
        inner = propagate(*a, **k)
        while True:
            t = time.perf_counter()
            try:
                item = next(inner)
            except StopIteration:
                return
            timers["launch"] += time.perf_counter() - t
            yield item

    batched.propagate_batched = timed_propagate
    launch = adapter.Sam2Backend._launch

    def timed_launch(self, *a):
        t = time.perf_counter()
        out = launch(self, *a)
        timers["result"] += time.perf_counter() - t
        return out

    adapter.Sam2Backend._launch = timed_launch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=10)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--graph-max-objects", type=int, default=None)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-profile", action="store_true", help="skip the kernel table")
    p.add_argument("--rows", type=int, default=30)
    args = p.parse_args(argv)

    import torch

    from napari_sam2_worms.backends.sam2 import adapter
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model
    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.synthetic import make_plate

    if args.graph_max_objects is not None:
        adapter.GRAPH_MAX_OBJECTS = args.graph_max_objects
    timers: dict[str, float] = collections.defaultdict(float)
    _instrument(timers)

    torch.manual_seed(0)
    n_obj = args.objects
    plate = make_plate(n_frames=args.frames, height=480, width=640, n_worms=n_obj)
    video = np.stack([np.dstack([f] * 3) for f in plate.video])
    predictor = build_model("sam2.1_hiera_tiny", "cuda")

    def new_session() -> TrackingSession:
        backend = Sam2Backend(predictor=predictor, device="cuda", compile=not args.no_compile)
        s = TrackingSession(video, backend)
        for k in range(n_obj):
            x, y = np.clip(plate.centerlines[0, k, 24], 0, [639, 479])
            s.add_object()
            s.add_point(0, k + 1, float(x), float(y), True)
        return s

    print(
        f"{torch.cuda.get_device_name()}, {n_obj} objects, {args.frames} frames, "
        f"graphs up to {adapter.GRAPH_MAX_OBJECTS} objects, compile {not args.no_compile}"
    )
    for label in ("warm-up", "run 1", "run 2"):
        s = new_session()
        torch.cuda.synchronize()
        timers.clear()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        n = sum(1 for _ in s.propagate("forward"))
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        ms = {k: 1e3 * v / n for k, v in timers.items()}
        other = 1e3 * wall / n - sum(ms.values())
        parts = ", ".join(f"{k} {v:.2f}" for k, v in ms.items())
        print(
            f"{label}: {n / wall:.1f} frames/s, {1e3 * wall / n:.2f} ms/frame ({parts}, other "
            f"{other:.2f}); peak GPU {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB",
            flush=True,
        )
        s.close()
    if args.no_profile:
        return
    from torch.profiler import ProfilerActivity, profile

    s = new_session()
    frames = s.propagate("forward")
    for _ in range(40):
        next(frames)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            next(frames)
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        t = e.self_cuda_time_total if t is None else t
        if t > 0:
            rows.append((t / 10 / 1e3, e.count / 10, e.key[:110]))
    rows.sort(reverse=True)
    print("\nGPU ms/frame (aten:: rows repeat their kernels' time) | calls/frame | name")
    for t, c, k in rows[: args.rows]:
        print(f"{t:7.3f} {c:6.1f} {k}")
    frames.close()
    s.close()


if __name__ == "__main__":
    main()
