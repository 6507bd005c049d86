"""Benchmark our SAM 2 backend against the raw ``SAM2VideoPredictor`` (JPEG folder).

Random weights (the speed and memory of SAM 2 do not depend on the weights), a
synthetic worm plate, 1/5/20 objects. Reports propagation frames/s, click-to-mask
latency (first click on a frame, then a click on the same frame: features cached),
setup time and peak GPU memory, as a markdown table. ``--long N`` also tracks one
object over an N-frame video (frames repeated lazily, nothing preloaded) and prints
the memory every few hundred frames: it stays flat.

GPU (the lead's H100)::

    python benchmarks/sam2_bench.py --model sam2.1_hiera_tiny --long 10000

CPU smoke run (small sizes)::

    python benchmarks/sam2_bench.py --device cpu --frames 6 --width 160 --height 120 \
        --objects 1,2 --image-size 256 --long 40
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


def _inside(plate, xy: np.ndarray) -> np.ndarray:
    """A click (1, 2) clipped into the frame (some synthetic worms leave the plate)."""
    h, w = plate.video.shape[1:3]
    return np.clip(xy, 0, [w - 1, h - 1])[None].astype(np.float32)


class RepeatVideo:
    """A lazy (T, H, W) video of ``n`` frames cycling through ``frames`` (ping-pong)."""

    def __init__(self, frames: np.ndarray, n: int) -> None:
        self.frames, self.n = frames, n

    @property
    def shape(self):
        return (self.n, *self.frames.shape[1:])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        k = len(self.frames)
        j = int(i) % (2 * k - 2) if k > 1 else 0
        return self.frames[j if j < k else 2 * k - 2 - j]


def bench_ours(predictor, plate, n_obj, args, batch_objects: bool = True) -> dict:
    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2_backend import Sam2Backend

    device = next(predictor.parameters()).device
    _peak_reset(device)
    t0 = time.perf_counter()
    be = Sam2Backend(
        predictor=predictor,
        device=str(device),
        read_ahead=args.read_ahead,
        batch_objects=batch_objects,
    )
    be.open(plate.video)
    setup = time.perf_counter() - t0
    lat = []
    for k in [0, *range(n_obj)]:  # object 1 twice: the second click finds features cached
        xy = _inside(
            plate, plate.centerlines[0, k % plate.centerlines.shape[1], 24 + (len(lat) == 1)]
        )
        t = time.perf_counter()
        be.set_prompts(0, k + 1, ObjectPrompts(points=xy, labels=np.array([1])))
        _sync(device)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    masks = [r.masks for r in be.propagate(0, len(plate.video) - 1)]
    _sync(device)
    fps = len(masks) / (time.perf_counter() - t)
    peak = _peak_gib(device)
    be.close()
    return dict(
        setup=setup,
        first=lat[0],
        cached=float(np.median(lat[1:])),
        fps=fps,
        peak=peak,
        masks=masks,
    )


def bench_ours_per_object(predictor, plate, n_obj, args) -> dict:
    return bench_ours(predictor, plate, n_obj, args, batch_objects=False)


def mean_iou(a: list[dict], b: list[np.ndarray], ids: list[int]) -> float:
    """Mean IoU over frames and objects between our masks and raw (N, H, W) masks.

    The raw masks are made non-overlapping as ours (highest logit wins); the raw
    predictor reads JPEG frames resized by PIL, ours the exact frames, so with random
    weights (masks sensitive to every input pixel) the IoU is below 1.
    """
    ious = []
    for ours, raw in zip(a, b):
        for k, o in enumerate(ids):
            m, r = ours.get(o), raw[k]
            if m is None:
                continue
            union = (m | r).sum()
            ious.append(1.0 if union == 0 else (m & r).sum() / union)
    return float(np.mean(ious)) if ious else float("nan")


def bench_raw(predictor, plate, n_obj, args) -> dict:
    """What users do today: dump JPEGs, init_state (preloads all frames), click, propagate."""
    import torch
    from PIL import Image

    device = next(predictor.parameters()).device
    _peak_reset(device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i, frame in enumerate(plate.video):
            Image.fromarray(frame).convert("RGB").save(Path(tmp) / f"{i:05d}.jpg", quality=95)
        with torch.inference_mode(), _autocast(device):
            state = predictor.init_state(tmp)
            _sync(device)
            setup = time.perf_counter() - t0
            lat = []
            for k in [0, *range(n_obj)]:  # object 1 twice (see bench_ours)
                xy = _inside(
                    plate,
                    plate.centerlines[0, k % plate.centerlines.shape[1], 24 + (len(lat) == 1)],
                )
                t = time.perf_counter()
                predictor.add_new_points_or_box(
                    state, 0, k + 1, points=xy, labels=np.array([1], np.int32)
                )
                _sync(device)
                lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = []
            for _f, _ids, masks in predictor.propagate_in_video(state):
                lg = masks[:, 0].float()  # resolved like ours (highest logit wins), for IoU
                win = (
                    lg.argmax(0, keepdim=True)
                    == torch.arange(len(lg), device=lg.device)[:, None, None]
                )
                out.append(((lg > 0) & win).cpu().numpy())  # users take masks off the GPU
            _sync(device)
            fps = len(out) / (time.perf_counter() - t)
        peak = _peak_gib(device)
        del state
    # the init_state warm-up encodes frame 0, so the first click is already "cached"
    return dict(
        setup=setup, first=lat[0], cached=float(np.median(lat[1:])), fps=fps, peak=peak, masks=out
    )


def bench_long(predictor, plate, n_frames, every) -> list[tuple[int, float, float]]:
    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2_backend import Sam2Backend

    device = next(predictor.parameters()).device
    _peak_reset(device)
    be = Sam2Backend(predictor=predictor, device=str(device))
    be.open(RepeatVideo(plate.video, n_frames))
    xy = plate.centerlines[0, 0, 24][None]
    be.set_prompts(0, 1, ObjectPrompts(points=xy, labels=np.array([1])))
    rows = []
    t = time.perf_counter()
    for r in be.propagate(0, n_frames - 1):
        if r.frame % every == 0 or r.frame == n_frames - 1:
            rows.append(
                (
                    r.frame,
                    _now_gib(device),
                    _rss_gib(),
                    be.stored_frames(),
                    (r.frame + 1) / (time.perf_counter() - t),
                )
            )
    be.close()
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--objects", default="1,5,20")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="model input size override (CPU smoke runs only)",
    )
    p.add_argument("--long", type=int, default=0, help="also track 1 object over N frames")
    p.add_argument("--no-raw", action="store_true", help="skip the raw SAM2VideoPredictor")
    p.add_argument(
        "--no-per-object", action="store_true", help="skip ours with batch_objects=False"
    )
    p.add_argument("--read-ahead", type=int, default=0, help="frames decoded ahead (ours)")
    p.add_argument("--checkpoint", default=None, help="real weights (default: random)")
    args = p.parse_args(argv)

    import torch

    from napari_sam2_worms.checkpoints import build_model, load_predictor, resolve_device
    from napari_sam2_worms.synthetic import make_plate

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    objects = [int(x) for x in args.objects.split(",")]
    plate = make_plate(
        n_frames=args.frames, height=args.height, width=args.width, n_worms=max(objects), seed=0
    )
    if args.checkpoint:
        predictor = load_predictor(args.model, args.checkpoint, device, image_size=args.image_size)
    else:
        torch.manual_seed(0)
        predictor = build_model(args.model, device, image_size=args.image_size)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"\n{args.model}, {gpu}, image_size {predictor.image_size}, video "
        f"{args.width}x{args.height}x{args.frames}, torch {torch.__version__}\n"
    )
    # warm-up (cuDNN autotune, allocator)
    bench_ours(
        predictor,
        make_plate(n_frames=3, height=args.height, width=args.width, n_worms=1, seed=0),
        1,
        args,
    )
    print(
        "| engine | objects | setup s | open to first mask s | first click ms "
        "| cached click ms | propagate frames/s | peak GPU GiB | mean IoU vs raw |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n_obj in objects:
        engines = [("ours, batched objects", bench_ours)]
        if not args.no_per_object:
            engines.append(("ours, per object", bench_ours_per_object))
        if not args.no_raw:
            engines.insert(0, ("raw SAM2VideoPredictor (JPEG + init_state)", bench_raw))
        raw_masks = None
        for label, fn in engines:
            try:
                r = fn(predictor, plate, n_obj, args)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                print(f"| {label} | {n_obj} | out of GPU memory | | | | | | |", flush=True)
                continue
            if fn is bench_raw:
                raw_masks, iou = r["masks"], "-"
            elif raw_masks is None:
                iou = "n/a"
            else:
                iou = f"{mean_iou(r['masks'], raw_masks, list(range(1, n_obj + 1))):.4f}"
            print(
                f"| {label} | {n_obj} | {r['setup']:.2f} | {r['setup'] + r['first']:.2f} | "
                f"{1000 * r['first']:.0f} | "
                f"{1000 * r['cached']:.0f} | {r['fps']:.1f} | {r['peak']:.2f} | {iou} |",
                flush=True,
            )
            del r
    if args.long:
        every = max(1, args.long // 10)
        print(f"\nLong video: 1 object, {args.long} frames (lazy, repeated)\n")
        print("| frame | GPU allocated GiB | process RSS GiB | stored outputs | frames/s |")
        print("|---|---|---|---|---|")
        for frame, gib, rss, stored, fps in bench_long(predictor, plate, args.long, every):
            print(f"| {frame} | {gib:.3f} | {rss:.2f} | {stored} | {fps:.1f} |", flush=True)


if __name__ == "__main__":
    main()
