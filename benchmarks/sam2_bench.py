"""SAM 2 end to end through our engine vs the raw ``SAM2VideoPredictor``, side by side.

Random weights (speed and memory do not depend on the weights; masks from random
weights say nothing about quality), a synthetic worm plate, one click per worm.

Ours is timed end to end through the TrackingSession: frames in (a lazy video),
clicks, propagation into the label stack, then skeletons (worker processes; with
random weights the skeletons timed are those of the plate's ground-truth masks, since
random weights make blobs, not worms). Configurations: ``eager`` (batched objects, no
graphs, no compilation), ``graphs`` (+ CUDA graphs), ``compile`` (+ torch.compile;
compilation is timed separately, in a warm-up run). The raw predictor is what users
run today: JPEG folder, ``init_state`` (preloads every frame), ``propagate_in_video``;
its frames/s is propagation only. For the mask comparison both read exactly the same
input tensors: the raw predictor's preloaded images are replaced by ours (made from
the decoded JPEGs), so the IoU measures the engines, not the resizing.

GPU (as in docs/performance.md)::

    python benchmarks/sam2_bench.py --objects 1,10 --raw-objects 1,10 --configs compile --workers 8
    python benchmarks/sam2_bench.py --objects 1,10 --no-raw --configs compile --workers 0,8 \\
        --cprofile 30
    python benchmarks/sam2_bench.py --objects 1 --no-raw --long 10000 --configs compile
    python benchmarks/sam2_bench.py --model sam2.1_hiera_large --objects 1 --raw-objects 1

CPU smoke run::

    python benchmarks/sam2_bench.py --device cpu --frames 4 --width 160 --height 120 \\
        --objects 1,2 --raw-objects 2 --image-size 256 --configs eager --long 12
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def _now_gib(device) -> float:
    import torch

    return torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def _rss_gib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except OSError:
        return float("nan")


def _autocast(device):
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class ArrayClip:
    """A (T, H, W, 3) uint8 array as a lazy video with fps (what the session reads)."""

    def __init__(self, frames: np.ndarray, n: int | None = None, fps: float = 15.0) -> None:
        self.frames, self.n, self.fps = frames, n or len(frames), fps

    @property
    def shape(self):
        return (self.n, *self.frames.shape[1:])

    @property
    def dtype(self):
        return self.frames.dtype

    @property
    def ndim(self):
        return self.frames.ndim

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        k = len(self.frames)  # ping-pong through the clip when n > k
        j = int(i) % (2 * k - 2) if k > 1 else 0
        return self.frames[j if j < k else 2 * k - 2 - j]


def jpeg_clip(plate, folder: Path) -> ArrayClip:
    """Dump the plate as JPEG files (the raw predictor's input) and decode them back."""
    from PIL import Image

    frames = []
    for i, frame in enumerate(plate.video):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(frame).convert("RGB").save(path, quality=95)
        frames.append(np.asarray(Image.open(path).convert("RGB")))
    return ArrayClip(np.stack(frames))


def as_session_labels(labels: np.ndarray) -> np.ndarray:
    """A ground-truth stack in the session's label type (uint8 below 256 objects), as the
    session's own frames reach the skeleton workers."""
    return labels.astype(np.uint8) if labels.max() < 256 else labels


def clicks(plate, n_obj: int) -> list[np.ndarray]:
    h, w = plate.video.shape[1:3]
    return [
        np.clip(plate.centerlines[0, k % plate.centerlines.shape[1], 24], 0, [w - 1, h - 1])
        for k in range(n_obj)
    ]


def new_predictor(args, device):
    import torch

    from napari_sam2_worms.backends.sam2.checkpoints import build_model, load_predictor

    torch.manual_seed(0)  # every configuration gets the same random weights
    if args.checkpoint:
        return load_predictor(args.model, args.checkpoint, device, image_size=args.image_size)
    return build_model(args.model, device, image_size=args.image_size)


def make_backend(predictor, config: str, device):
    """Our backend in one of the configurations (eager, graphs, compile)."""
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend

    return Sam2Backend(
        predictor=predictor,
        device=str(device),
        compile=config == "compile",
        cuda_graphs=config in ("graphs", "compile"),
    )


def run_ours(
    predictor, clip, pts, config: str, args, device, truth=None, profile: bool = False
) -> dict:
    """Clicks, propagation into the label stack, skeletons: timed end to end.

    ``truth``: a label stack of the same size whose skeletons are timed instead of the
    session's (masks from random weights are large blobs that no real run produces, and
    skeletonizing a blob costs ~100x a worm).
    """
    from napari_sam2_worms.engine.session import TrackingSession

    _peak_reset(device)
    rss0 = _rss_gib()
    t0 = time.perf_counter()
    backend = make_backend(predictor, config, device)
    session = TrackingSession(clip, backend)
    pool = None
    if truth is None:  # real weights: skeletons made while tracking (worker processes)
        session.skeleton_workers = args.workers
    elif args.workers > 0:  # started as the session starts its own (they start meanwhile)
        from napari_sam2_worms.skeleton.stream import SkeletonPool

        pool = SkeletonPool(args.workers)
    lat = []
    session.add_object()
    x, y = float(pts[0][0]), float(pts[0][1])
    for dx in (0.0, 1.0):  # a second click on object 1 finds the frame's features cached
        t = time.perf_counter()
        session.add_point(0, 1, x + dx, y, True)
        _sync(device)
        lat.append(time.perf_counter() - t)
    for k, xy in enumerate(pts[1:], 2):
        session.add_object()
        session.add_point(0, k, float(xy[0]), float(xy[1]), True)
    open_to_mask = time.perf_counter() - t0 - lat[1]  # open, then all first clicks
    workers = pool if pool is not None else session.skeleton_feed.pool
    if workers is not None and not args.cold_workers:
        # in the widget they start when the model loads, long before a propagation
        workers.wait_ready(60.0)
    ids = list(range(1, len(pts) + 1))
    stream = None
    t = time.perf_counter()
    if pool is not None:
        # as the session streams its own label frames: here the plate's, frame by frame
        stream = pool.stream(ids)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    for step in session.propagate("forward"):
        if stream is not None:
            stream.feed(step.frame, truth[step.frame])
    _sync(device)
    t_prop = time.perf_counter() - t
    if prof is not None:
        import pstats

        prof.disable()
        print(f"\nhost profile of the propagation, {len(pts)} objects, {config}:")
        stats = pstats.Stats(prof).strip_dirs()
        stats.sort_stats("tottime").print_stats(args.cprofile)
        stats.sort_stats("cumulative").print_stats(args.cprofile)
    t = time.perf_counter()
    t_wait = float("nan")
    if truth is None:
        tracks = session.skeletons(workers=args.workers)
    else:  # random weights make blobs, not worms: time the skeletons of worm-shaped masks
        from napari_sam2_worms.skeleton import skeletonize_labels

        cache = stream.cache() if stream is not None else None
        t_wait = time.perf_counter() - t  # the workers' last frames
        tracks = skeletonize_labels(truth, ids, workers=args.workers, cache=cache)
    t_skel = time.perf_counter() - t
    if pool is not None:  # the session keeps its pool until it closes
        pool.close()
    n = len(clip)
    out = dict(
        first=lat[0],
        cached=lat[1],
        open=open_to_mask,
        prop_fps=(n - 1) / t_prop,
        e2e_fps=n / (sum(lat) + t_prop + t_skel),
        skel_s=t_skel,
        wait_s=t_wait,
        peak=_peak_gib(device),
        rss=_rss_gib() - rss0,
        labels=session.labels,
        good=float(np.mean(tracks.good[1:])) if tracks.good.size else float("nan"),
    )
    session.close()
    return out


def run_raw(predictor, clip, folder: Path, pts, device, iou_frames: int = 60) -> dict:
    """JPEG folder + init_state + clicks + propagate_in_video, with our input tensors."""
    import torch

    from napari_sam2_worms.backends.sam2.frames import LazySam2Frames

    _peak_reset(device)
    with torch.inference_mode(), _autocast(device):
        t0 = time.perf_counter()
        state = predictor.init_state(str(folder))
        setup = time.perf_counter() - t0
        ours = LazySam2Frames(clip, predictor.image_size, device, cache_frames=1)
        images = torch.stack([ours[i] for i in range(len(clip))])
        state["images"] = images.to(state["images"].device)  # same input as ours
        state["cached_features"] = {}  # init_state encoded frame 0 from its own images
        lat = []
        x, y = float(pts[0][0]), float(pts[0][1])
        for p in ([[x, y]], [[x, y], [x + 1.0, y]]):  # as our session: points accumulate
            t = time.perf_counter()
            predictor.add_new_points_or_box(
                state, 0, 1, points=np.array(p, np.float32), labels=np.ones(len(p), np.int32)
            )
            _sync(device)
            lat.append(time.perf_counter() - t)
        # sam2 fed the first click's mask into the second; ours answers from the prompts
        # alone (see Sam2Backend): redo object 1 from its two points for the comparison
        predictor.clear_all_prompts_in_frame(state, 0, 1)
        predictor.add_new_points_or_box(
            state, 0, 1, points=np.array(p, np.float32), labels=np.ones(len(p), np.int32)
        )
        for k, xy in enumerate(pts[1:], 2):
            predictor.add_new_points_or_box(
                state, 0, k, points=np.array([xy], np.float32), labels=np.array([1], np.int32)
            )
        t = time.perf_counter()
        masks, per_object = [], []
        for f, _ids, video_res in predictor.propagate_in_video(state):
            lg = video_res[:, 0].float()
            best, win = lg.max(0)
            masks.append(torch.where(best > 0, win + 1, 0).to(torch.uint8).cpu().numpy())
            if f < iou_frames:
                per_object.append((lg > 0).cpu().numpy())
        _sync(device)
        fps = (len(clip) - 1) / (time.perf_counter() - t)
    peak = _peak_gib(device)
    del state, images
    return dict(
        setup=setup,
        first=lat[0],
        cached=lat[1],
        fps=fps,
        peak=peak,
        labels=masks,
        per_object=per_object,
    )


def per_object_masks(predictor, clip, pts, config: str, device, n_frames: int) -> list:
    """Our per-object masks before overlaps are resolved, frames 0..n_frames-1."""
    from napari_sam2_worms.engine.session import TrackingSession

    backend = make_backend(predictor, config, device)
    session = TrackingSession(clip, backend)
    session.add_object()
    x, y = float(pts[0][0]), float(pts[0][1])
    session.add_point(0, 1, x, y, True)
    session.add_point(0, 1, x + 1.0, y, True)
    for k, xy in enumerate(pts[1:], 2):
        session.add_object()
        session.add_point(0, k, float(xy[0]), float(xy[1]), True)
    out = {}
    backend.logits_hook = lambda f, ids, lg: out.__setitem__(f, (lg[:, 0] > 0).cpu().numpy())
    for _ in session.propagate("forward", stop=n_frames - 1):
        pass
    session.close()
    return [out[f] for f in sorted(out)]


def per_object_iou(ours: list, raw: list) -> tuple[float, float]:
    """Mean IoU of each object's own mask (before overlap resolution), frames 1..; and
    the share of the raw foreground claimed by two objects or more."""
    ious, shared, fg = [], 0, 0
    for a, b in zip(ours[1:], raw[1:]):
        for o in range(len(b)):
            union = (a[o] | b[o]).sum()
            if union:
                ious.append((a[o] & b[o]).sum() / union)
        count = b.sum(0)
        shared, fg = shared + (count > 1).sum(), fg + (count > 0).sum()
    return (float(np.mean(ious)) if ious else float("nan")), shared / max(fg, 1)


def mean_iou(labels: np.ndarray, raw: list[np.ndarray], n_obj: int) -> float:
    """Mean IoU over frames 1.. and objects between our label stack and the raw masks."""
    ious = []
    for t in range(1, len(raw)):
        for o in range(1, n_obj + 1):
            a, b = labels[t] == o, raw[t] == o
            union = (a | b).sum()
            if union:
                ious.append((a & b).sum() / union)
    return float(np.mean(ious)) if ious else float("nan")


def long_run(predictor, plate, n_frames: int, config: str, args, device) -> list[tuple]:
    """One object over an n-frame video (lazy, ping-pong): GPU and host memory."""
    from napari_sam2_worms.engine.session import TrackingSession

    clip = ArrayClip(np.stack([np.dstack([f] * 3) for f in plate.video]), n_frames)
    _peak_reset(device)
    backend = make_backend(predictor, config, device)
    rss0 = _rss_gib()
    session = TrackingSession(clip, backend)
    session.add_object()
    xy = clicks(plate, 1)[0]
    session.add_point(0, 1, float(xy[0]), float(xy[1]), True)
    every = max(1, n_frames // 10)
    rows = []
    t = time.perf_counter()
    for step in session.propagate("forward"):
        f = step.frame
        if f in (200, n_frames - 1) or f % every == 0:
            _sync(device)
            rows.append(
                (
                    f,
                    _now_gib(device),
                    _peak_gib(device),
                    _rss_gib() - rss0,
                    session.labels[: f + 1].nbytes / 2**30,
                    backend.stored_frames(),
                    (f + 1) / (time.perf_counter() - t),
                )
            )
    session.close()
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--objects", default="1,10,50")
    p.add_argument("--raw-objects", default="1,10", help="object counts run on the raw predictor")
    p.add_argument("--no-raw", action="store_true")
    p.add_argument("--configs", default="eager,graphs,compile")
    p.add_argument(
        "--workers",
        default=str(min(8, (os.cpu_count() or 2) - 1)),
        help="skeleton worker processes; a list (0,8) measures each in turn",
    )
    p.add_argument("--image-size", type=int, default=None, help="CPU smoke runs only")
    p.add_argument("--long", type=int, default=0, help="also track 1 object over N frames")
    p.add_argument("--checkpoint", default=None, help="real weights (default: random)")
    p.add_argument("--graph-max-objects", type=int, default=None, help="override GRAPH_MAX_OBJECTS")
    p.add_argument(
        "--cold-workers",
        action="store_true",
        help="propagate as soon as clicked (skeleton workers still starting)",
    )
    p.add_argument("--cprofile", type=int, default=0, help="print the N costliest host functions")
    p.add_argument("--iou-frames", type=int, default=60, help="frames compared per object")
    args = p.parse_args(argv)
    worker_counts = [int(x) for x in str(args.workers).split(",")]
    args.workers = worker_counts[0]

    import torch

    from napari_sam2_worms.backends.sam2.checkpoints import resolve_device
    from napari_sam2_worms.synthetic import make_plate

    device = resolve_device(args.device)
    if args.graph_max_objects is not None:
        from napari_sam2_worms.backends.sam2 import adapter

        adapter.GRAPH_MAX_OBJECTS = args.graph_max_objects
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    objects = [int(x) for x in args.objects.split(",")]
    raw_objects = set() if args.no_raw else {int(x) for x in args.raw_objects.split(",") if x}
    configs = [c for c in args.configs.split(",") if c]
    if device.type != "cuda":
        configs = [c for c in configs if c == "eager"] or ["eager"]
    plate = make_plate(
        n_frames=args.frames, height=args.height, width=args.width, n_worms=max(objects), seed=0
    )
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"\n{args.model}, {gpu}, torch {torch.__version__}, image_size "
        f"{args.image_size or 1024}, video {args.width}x{args.height}x{args.frames}, "
        f"skeleton workers {','.join(map(str, worker_counts))}, {time.strftime('%Y-%m-%d')}\n",
        flush=True,
    )
    predictors = {c: new_predictor(args, device) for c in configs}
    # the raw predictor gets its own copy: ours installs its forwards on the predictor
    raw_predictor = new_predictor(args, device) if raw_objects else None
    # warm-up: cuDNN autotune, compilation and graph capture need frames on CUDA; the
    # CPU path has none of them (its warm-up is only the first frame's allocations)
    warm_frames = 24 if device.type == "cuda" else 2
    warm = make_plate(
        n_frames=warm_frames, height=args.height, width=args.width, n_worms=max(objects)
    )
    with tempfile.TemporaryDirectory() as tmp:
        clip = jpeg_clip(plate, Path(tmp))
        warm_clip = ArrayClip(np.stack([np.dstack([f] * 3) for f in warm.video]))
        print(
            "| engine | objects | open to first mask s | click ms (cached) | propagate "
            "frames/s | end-to-end frames/s | skeletons s (waiting for workers) | peak GPU GiB | "
            "host GiB | "
            "x raw | IoU vs raw: per object / resolved (overlap) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for n_obj in objects:
            pts = clicks(plate, n_obj)
            raw = None
            if n_obj in raw_objects:
                raw = run_raw(raw_predictor, clip, Path(tmp), pts, device, args.iou_frames)
                print(
                    f"| raw SAM2VideoPredictor | {n_obj} | {raw['setup'] + raw['first']:.2f} | "
                    f"{1000 * raw['cached']:.0f} | {raw['fps']:.1f} | - | - | "
                    f"{raw['peak']:.2f} | - | 1.0 | - |",
                    flush=True,
                )
            for config in configs:
                pred = predictors[config]
                t = time.perf_counter()  # warm-up: cuDNN autotune, compilation, graphs
                warm_truth = as_session_labels(warm.labels)
                run_ours(pred, warm_clip, clicks(warm, n_obj), config, args, device, warm_truth)
                warm_s = time.perf_counter() - t
                for workers in worker_counts:
                    args.workers = workers
                    try:
                        truth = None if args.checkpoint else as_session_labels(plate.labels)
                        r = run_ours(pred, clip, pts, config, args, device, truth)
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        print(f"| ours, {config} | {n_obj} | out of GPU memory |", flush=True)
                        continue
                    ratio = f"{r['prop_fps'] / raw['fps']:.1f}" if raw else "-"
                    iou = "-"
                    if raw and workers == worker_counts[0]:
                        mine = per_object_masks(pred, clip, pts, config, device, args.iou_frames)
                        own, shared = per_object_iou(mine, raw["per_object"])
                        iou = (
                            f"{own:.3f} / {mean_iou(r['labels'], raw['labels'], n_obj):.3f} "
                            f"({100 * shared:.0f} %)"
                        )
                    print(
                        f"| ours, {config}, workers {workers} (warm-up {warm_s:.0f} s) | {n_obj} "
                        f"| {r['open']:.2f} | {1000 * r['cached']:.0f} | {r['prop_fps']:.3g} | "
                        f"{r['e2e_fps']:.3g} | {r['skel_s']:.2f} ({r['wait_s']:.2f}) | "
                        f"{r['peak']:.2f} | {r['rss']:.2f} | {ratio} | {iou} |",
                        flush=True,
                    )
                if args.cprofile:  # a separate run: the profiler slows the host down
                    args.workers = worker_counts[-1]
                    run_ours(pred, clip, pts, config, args, device, truth, profile=True)
    if args.long:
        config = configs[-1]
        print(f"\nLong video: 1 object, {args.long} frames (lazy, ping-pong), ours {config}\n")
        print(
            "| frame | GPU allocated GiB | GPU peak GiB | host growth GiB | label stack GiB "
            "| stored outputs | frames/s |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in long_run(predictors[config], plate, args.long, config, args, device):
            f, now, peak, rss, stack, stored, fps = row
            print(
                f"| {f} | {now:.3f} | {peak:.3f} | {rss:.2f} | {stack:.2f} | {stored} | "
                f"{fps:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
