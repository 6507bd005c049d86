"""Where does propagation make the CPU wait for the GPU? (GPU diagnostic helper.)

A host-device synchronisation inside the per-frame loop stops the CPU from queueing the
next frame while the GPU works, so the GPU idles while Python launches kernels. This
runs our backend on a synthetic plate (random weights), warms up, then propagates a
few frames under ``torch.cuda.set_sync_debug_mode("warn")`` and prints each distinct
synchronising call site with its count per frame.

    export PYTHONPATH=$PWD/.devsite:$PWD/src; python3 benchmarks/sam2_syncs.py --objects 10
"""

from __future__ import annotations

import argparse
import collections
import traceback
import warnings


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=10)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--watch", type=int, default=8, help="frames watched after warm-up")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda", help="cpu: smoke run only")
    p.add_argument("--image-size", type=int, default=None, help="smoke runs only")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model
    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.synthetic import make_plate

    torch.manual_seed(0)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    plate = make_plate(n_frames=args.frames, height=480, width=640, n_worms=args.objects)
    video = np.stack([np.dstack([f] * 3) for f in plate.video])
    backend = Sam2Backend(
        predictor=build_model("sam2.1_hiera_tiny", device, image_size=args.image_size),
        device=args.device,
        compile=args.compile,
    )
    session = TrackingSession(video, backend)
    for k in range(args.objects):
        session.add_object()
        x, y = np.clip(plate.centerlines[0, k, 24], 0, [639, 479])
        session.add_point(0, k + 1, float(x), float(y), True)
    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return
        stack = [
            f"{f.filename.split('site-packages/')[-1].split('src/')[-1]}:{f.lineno} {f.name}"
            for f in traceback.extract_stack()[:-2]
            if "warnings" not in f.filename
        ]
        sites[(str(message)[:80], tuple(stack[-6:]))] += 1

    n_warm = args.frames - args.watch
    steps = session.propagate("forward")
    for _ in zip(range(n_warm), steps):
        pass
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
    old = warnings.showwarning
    warnings.showwarning = record
    warnings.simplefilter("always")
    for _ in steps:
        pass
    if cuda:
        torch.cuda.set_sync_debug_mode(0)
    warnings.showwarning = old
    print(f"\n{args.objects} objects, {args.watch} frames watched, compile={args.compile}\n")
    if not sites:
        print("no synchronising call in the propagation loop")
    for (msg, stack), n in sites.most_common():
        print(f"{n / args.watch:.1f} per frame: {msg}")
        for line in stack:
            print(f"    {line}")
    session.close()


if __name__ == "__main__":
    main()
