"""SAM 2 on the CPU: each speed-up of :mod:`napari_sam2_worms.backends.sam2.accel.cpu` off vs on.

SAM 2.1 tiny with random weights (speed does not depend on the weights; masks from
random weights say nothing about quality), a synthetic 640x480 plate, 2 worms, through
the TrackingSession as a user runs it: the first click (click to mask: the frame's
image features, the decoder, the label stack), a click on the second worm (features
cached), then propagation into the label stack (end-to-end seconds a frame).

The configurations run interleaved on one model in one process, their order rotated
each round, so a shared, loaded machine slows them alike; the table gives medians over
the rounds of wall time and of the process's CPU time (less sensitive to other users),
the CPU time a propagated frame spends in each of SAM 2's modules, the load average
during the run, and how close each configuration's masks are to float32's (``off``) of
the same round: the per-object IoU of the masks (logit > 0; minimum and mean over
frames and objects) and the largest and mean absolute difference of the per-object
logits, relative to the spread (standard deviation) of float32's logits::

    python3 benchmarks/sam2_cpu_speedups.py --sizes 1024,512 --frames 3 --rounds 2

Configurations (each a set of :data:`~napari_sam2_worms.backends.sam2.accel.cpu.SPEEDUPS`):
``off`` (float32, sam2's layouts and layer norm), ``exact`` (channels-last and the fused
layer norm: float32), ``bf16_attention``, ``bf16_encoder`` (each on top of ``exact``),
``default`` (what a user gets: every speed-up on by default that its check allows,
the environment variable unset), ``bf16`` (``exact`` + the whole model under bf16, as with
``NAPARI_SAM2_WORMS_CPU_BF16=1``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import numpy as np

EXACT = dict(channels_last=True, layer_norm=True)
OFF = dict(
    channels_last=False,
    layer_norm=False,
    bf16_attention=False,
    bf16_encoder=False,
)
CONFIGS: dict[str, dict] = {
    "off": {**OFF, "bf16": False},
    "exact": {**OFF, **EXACT, "bf16": False},
    "bf16_attention": {**OFF, **EXACT, "bf16_attention": True, "bf16": False},
    "bf16_encoder": {**OFF, **EXACT, "bf16_encoder": True, "bf16": False},
    "default": {},  # the checks decide
    "bf16": {**OFF, **EXACT, "bf16": True},
}
MODULES = ("image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder")
BF16_ENV = "NAPARI_SAM2_WORMS_CPU_BF16"


def timed_modules(predictor) -> tuple[dict[str, float], dict]:
    """Add up the CPU time of SAM 2's modules' forwards into the returned dict; also
    return the instance forwards replaced (:func:`untimed` puts them back)."""
    acc: dict[str, float] = defaultdict(float)
    before = {}
    for name in MODULES:
        module = getattr(predictor, name)
        before[name] = module.__dict__.get("forward")
        inner = module.forward

        def forward(*a, _inner=inner, _name=name, **k):
            c = time.process_time()
            try:
                return _inner(*a, **k)
            finally:
                acc[_name] += time.process_time() - c

        module.forward = forward
    return acc, before


def untimed(predictor, before: dict) -> None:
    """Put back the forwards :func:`timed_modules` replaced."""
    for name, forward in before.items():
        module = getattr(predictor, name)
        if forward is None:
            module.__dict__.pop("forward", None)
        else:
            module.forward = forward


def run_once(predictor, clip, pts, config: str) -> dict:
    """Clicks and propagation through a TrackingSession in ``config``."""
    from napari_sam2_worms.backends.sam2.accel.cpu import configure_cpu, restore_cpu
    from napari_sam2_worms.backends.sam2.accel.state import state_of
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.engine.session import TrackingSession

    restore_cpu(predictor)  # no choice of another configuration sticks
    os.environ.pop(BF16_ENV, None)
    configure_cpu(predictor, **CONFIGS[config])
    backend = Sam2Backend(predictor=predictor, device="cpu")
    logits: dict[int, np.ndarray] = {}
    backend.logits_hook = lambda f, ids, lg: logits.__setitem__(f, lg[:, 0].float().numpy())
    session = TrackingSession(clip, backend)
    session.add_object()
    t, c = time.perf_counter(), time.process_time()
    session.add_point(0, 1, float(pts[0][0]), float(pts[0][1]), True)
    click, click_cpu = time.perf_counter() - t, time.process_time() - c
    for k, xy in enumerate(pts[1:], 2):
        session.add_object()
        t = time.perf_counter()
        session.add_point(0, k, float(xy[0]), float(xy[1]), True)
        cached = time.perf_counter() - t
    acc, before = timed_modules(predictor)
    t, c = time.perf_counter(), time.process_time()
    try:
        for _ in session.propagate("forward"):
            pass
    finally:
        untimed(predictor, before)
    n = len(clip) - 1
    frame, frame_cpu = (time.perf_counter() - t) / n, (time.process_time() - c) / n
    session.close()
    return dict(
        click=click,
        click_cpu=click_cpu,
        cached=cached,
        frame=frame,
        frame_cpu=frame_cpu,
        **{f"cpu {m}": v / n for m, v in acc.items()},
        logits=logits,
        on=dict(state_of(predictor).cpu or {}),
    )


def closeness(logits: dict, ref: dict) -> dict[str, float]:
    """Per-object mask IoU (min, mean) and logit differences relative to ref's spread."""
    ious, diffs = [], []
    for f in sorted(ref):
        for x, y in zip(logits[f], ref[f]):
            a, b = x > 0, y > 0
            union = (a | b).sum()
            ious.append((a & b).sum() / union if union else 1.0)
            diffs.append(np.abs(x - y).ravel())
    spread = float(np.concatenate([v.ravel() for v in ref.values()]).std()) or 1.0
    d = np.concatenate(diffs)
    return dict(
        iou_min=float(min(ious)),
        iou_mean=float(np.mean(ious)),
        dmax=float(d.max()) / spread,
        dmean=float(d.mean()) / spread,
        spread=spread,
    )


def main(argv=None) -> None:
    """Run the comparison (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1024,512")
    p.add_argument("--frames", type=int, default=3, help="frames propagated after the click")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--configs", default="off,exact,bf16_attention,bf16_encoder,default,bf16")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: as chosen)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--objects", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from napari_sam2_worms.backends.sam2.accel.cpu_bf16 import check_bf16, native_bf16
    from napari_sam2_worms.backends.sam2.checkpoints import build_model
    from napari_sam2_worms.synthetic import make_plate

    if args.threads:
        torch.set_num_threads(args.threads)
    sys_load = os.getloadavg()
    configs = [c for c in args.configs.split(",") if c]
    plate = make_plate(
        n_frames=args.frames + 1,
        height=args.height,
        width=args.width,
        n_worms=args.objects,
        seed=0,
    )
    clip = np.stack([np.dstack([f] * 3) for f in plate.video])
    h, w = clip.shape[1:3]
    pts = [np.clip(plate.centerlines[0, k, 24], 0, [w - 1, h - 1]) for k in range(args.objects)]
    print(
        f"\nsam2.1_hiera_tiny (random weights), CPU {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16 {native_bf16()} (check: {check_bf16()}), {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, video {w}x{h}x{len(clip)}, {args.objects} "
        f"objects, {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')}, load average "
        f"at start {sys_load[0]:.1f}\n",
        flush=True,
    )
    print(
        "| input | config | click to mask s (CPU s) | click, features cached s | "
        "s/frame end to end (CPU s) | CPU s a frame: encoder / memory attention / memory "
        "encoder / decoder | x off (wall / CPU) | IoU vs off (min / mean) | logit diff "
        "max / mean (x spread) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        torch.manual_seed(0)
        predictor = build_model("sam2.1_hiera_tiny", "cpu", image_size=size)
        results: dict[str, list[dict]] = {c: [] for c in configs}
        close: dict[str, list[dict]] = {c: [] for c in configs}
        loads = []
        for r in range(args.rounds):
            order = configs[r % len(configs) :] + configs[: r % len(configs)]
            got = {}
            for config in order:
                got[config] = run_once(predictor, clip, pts, config)
                results[config].append(got[config])
                loads.append(os.getloadavg()[0])
            if "off" in got:
                for config in configs:
                    close[config].append(closeness(got[config]["logits"], got["off"]["logits"]))
        for c in configs:
            m = {
                k: statistics.median(x[k] for x in results[c])
                for k in results[c][0]
                if k not in ("logits", "on")
            }
            base = (
                {k: statistics.median(x[k] for x in results["off"]) for k in ("frame", "frame_cpu")}
                if "off" in results
                else m
            )
            parts = " / ".join(f"{m[f'cpu {name}']:.2f}" for name in MODULES)
            if close[c]:
                cl = {k: [x[k] for x in close[c]] for k in close[c][0]}
                iou = f"{min(cl['iou_min']):.4f} / {np.mean(cl['iou_mean']):.4f}"
                diff = f"{max(cl['dmax']):.4f} / {np.mean(cl['dmean']):.5f}"
            else:
                iou = diff = "-"
            on = ", ".join(k for k, v in results[c][-1]["on"].items() if v) or "-"
            print(
                f"| {size} | {c} ({on}) | {m['click']:.2f} ({m['click_cpu']:.2f}) | "
                f"{m['cached']:.3f} | {m['frame']:.2f} ({m['frame_cpu']:.2f}) | {parts} | "
                f"{base['frame'] / m['frame']:.2f} / {base['frame_cpu'] / m['frame_cpu']:.2f} | "
                f"{iou} | {diff} |",
                flush=True,
            )
        spread = np.mean([x["spread"] for x in close.get("off", [])] or [float("nan")])
        print(
            f"(load average during {size}: median {statistics.median(loads):.1f}; float32 "
            f"logits' spread {spread:.3f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
