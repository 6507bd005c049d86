"""A deterministic synthetic worm plate with exact ground truth.

Worms crawl the way C. elegans does: the body follows the track laid down by the
head (no lateral slip), the track undulates with about one wavelength per body
length, so the body wave travels from head to tail while the worm moves forward.
One worm makes an omega turn (its track loops tightly, so the body coils and
touches itself) and two worms cross each other.

The plate is dark worms on bright agar with an illumination gradient, a faint
fixed texture, blur and noise. Ground truth: a label stack (T, H, W) (where two
worms overlap, the pixel belongs to the higher id, which is drawn on top), and
centerlines (T, K, N, 2) as (x, y), head first, evenly spaced along arc length,
from tip to tip.

Use :func:`make_plate`; it is pure numpy/scipy and fast enough for tests
(a few seconds for the default 120 frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["SyntheticPlate", "WormSpec", "make_plate"]


@dataclass(frozen=True)
class WormSpec:
    """How one synthetic worm looks and moves (lengths in pixels, angles in radians)."""

    length: float
    width: float
    speed: float  # pixels per frame along its track
    heading: float  # initial direction of travel (0 = +x, pi/2 = +y, i.e. down)
    anchor: tuple[float, float]  # (x, y) the head passes at frame ``anchor_frame``
    anchor_frame: float
    amplitude: float = 0.55  # track undulation (rad)
    wavelength_ratio: float = 1.0  # track wavelength / body length
    turn_at: float | None = None  # track arc length (from the anchor) of an omega turn
    turn_angle: float = 0.0  # total heading change of the turn
    turn_arc: float = 1.0  # arc length over which the turn happens
    phase: float = 0.0


@dataclass
class SyntheticPlate:
    """A synthetic video with exact ground truth.

    Attributes
    ----------
    video : (T, H, W) uint8 frames.
    labels : (T, H, W) uint16 label stack, 0 = background, worm i has id i (1-based).
    centerlines : (T, K, N, 2) float32, (x, y) head first.
    widths : (T, K, N) float32 body width at each centerline point.
    touching : (T, K) bool, the worm touches another worm in that frame.
    coiled : (T, K) bool, the worm touches itself in that frame (omega turn).
    fps : frames per second.
    specs : the worms' parameters.
    """

    video: np.ndarray
    labels: np.ndarray
    centerlines: np.ndarray
    widths: np.ndarray
    touching: np.ndarray
    coiled: np.ndarray
    fps: float
    specs: list[WormSpec]

    @property
    def object_ids(self) -> np.ndarray:
        """The worms' ids, 1..N."""
        return np.arange(1, len(self.specs) + 1)

    def head_points(self, frame: int = 0) -> dict[int, tuple[float, float]]:
        """Pick a point inside each worm on ``frame`` (x, y), e.g. to make click prompts.

        Taken a quarter of the body from the head, where the worm is widest.
        """
        n = self.centerlines.shape[2]
        return {
            i + 1: (
                float(self.centerlines[frame, i, n // 4, 0]),
                float(self.centerlines[frame, i, n // 4, 1]),
            )
            for i in range(len(self.specs))
        }


def _default_specs(width: int, height: int, n_frames: int, n_worms: int, rng) -> list[WormSpec]:
    w, h = float(width), float(height)
    mid = n_frames / 2.0
    base = [
        # 1: the coiler: an omega turn part-way along its track.
        WormSpec(
            length=0.20 * w,
            width=0.020 * w,
            speed=0.0045 * w,
            heading=0.0,
            anchor=(0.30 * w, 0.30 * h),
            anchor_frame=0.0,
            turn_at=0.0045 * w * n_frames * 0.3,
            turn_angle=-5.0,
            turn_arc=0.16 * w,
            phase=0.3,
        ),
        # 2 and 3 cross: 3's head passes the crossing point while 2's body lies there.
        WormSpec(
            length=0.21 * w,
            width=0.019 * w,
            speed=0.0050 * w,
            heading=0.05,
            anchor=(0.55 * w, 0.55 * h),
            anchor_frame=mid - 0.2 * n_frames,
            phase=1.1,
        ),
        WormSpec(
            length=0.17 * w,
            width=0.016 * w,
            speed=0.0050 * w,
            heading=np.pi / 2 - 0.1,
            anchor=(0.55 * w, 0.55 * h),
            anchor_frame=mid - 0.08 * n_frames,
            phase=2.0,
        ),
        WormSpec(
            length=0.15 * w,
            width=0.015 * w,
            speed=0.0035 * w,
            heading=-np.pi / 2,
            anchor=(0.13 * w, 0.78 * h),
            anchor_frame=0.0,
            phase=0.7,
        ),
        WormSpec(
            length=0.19 * w,
            width=0.018 * w,
            speed=0.0040 * w,
            heading=np.pi,
            anchor=(0.72 * w, 0.16 * h),
            anchor_frame=0.0,
            phase=2.6,
        ),
    ]
    specs = base[:n_worms]
    for _ in range(max(0, n_worms - len(base))):
        specs.append(
            WormSpec(
                length=float(rng.uniform(0.14, 0.21) * w),
                width=float(rng.uniform(0.014, 0.02) * w),
                speed=float(rng.uniform(0.003, 0.005) * w),
                heading=float(rng.uniform(-np.pi, np.pi)),
                anchor=(float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.8) * h)),
                anchor_frame=float(rng.uniform(0, n_frames)),
                phase=float(rng.uniform(0, 2 * np.pi)),
            )
        )
    return specs


def _track(spec: WormSpec, sigma: np.ndarray) -> np.ndarray:
    """(x, y) of the head's track at arc lengths ``sigma`` (0 at the anchor)."""
    lam = spec.wavelength_ratio * spec.length
    phi = spec.heading + spec.amplitude * np.sin(2 * np.pi * sigma / lam + spec.phase)
    if spec.turn_at is not None and spec.turn_angle:
        u = np.clip((sigma - spec.turn_at) / spec.turn_arc, 0.0, 1.0)
        phi = phi + spec.turn_angle * (u - np.sin(2 * np.pi * u) / (2 * np.pi))
    ds = np.diff(sigma, prepend=sigma[0])
    steps = np.stack([np.cos(phi) * ds, np.sin(phi) * ds], axis=1)
    xy = np.cumsum(steps, axis=0)
    zero = np.interp(0.0, sigma, np.arange(len(sigma)))
    i0 = int(np.clip(round(zero), 0, len(sigma) - 1))
    return xy - xy[i0] + np.asarray(spec.anchor)


def _radius_profile(n: int, width: float) -> np.ndarray:
    """Half-width along the body, head (index 0) blunt, tail pointed."""
    u = np.linspace(0.0, 1.0, n)
    prof = np.minimum.reduce(
        [np.ones(n), np.sqrt(u / 0.12 + 1e-9), ((1.0 - u) / 0.3 + 1e-9) ** 0.7]
    )
    return np.maximum(width / 2.0 * prof, 0.6)


def _segment_coverage(cl: np.ndarray, rad: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Signed inside-distance (r - d) of pixels to a tube around a polyline."""
    px = xs[None, :, None]
    py = ys[:, None, None]
    a, b = cl[:-1], cl[1:]
    ra, rb = rad[:-1], rad[1:]
    d = b - a
    ll = np.maximum((d**2).sum(1), 1e-12)
    t = ((px - a[:, 0]) * d[:, 0] + (py - a[:, 1]) * d[:, 1]) / ll
    t = np.clip(t, 0.0, 1.0)
    qx = a[:, 0] + t * d[:, 0]
    qy = a[:, 1] + t * d[:, 1]
    dist = np.hypot(px - qx, py - qy)
    r = ra + t * (rb - ra)
    return (r - dist).max(axis=2)


def _self_touching(cl: np.ndarray, rad: np.ndarray) -> bool:
    n = len(cl)
    seg = np.linspace(0, 1, n)
    dd = np.hypot(cl[:, None, 0] - cl[None, :, 0], cl[:, None, 1] - cl[None, :, 1])
    far = np.abs(seg[:, None] - seg[None, :]) > 0.3
    return bool((far & (dd < rad[:, None] + rad[None, :] + 1.0)).any())


def _crops_touch(a, b, height: int, width: int) -> bool:
    """Whether two worm masks (given as bbox crops) touch (8-connected)."""
    y0, y1 = max(min(a[0], b[0]) - 1, 0), min(max(a[1], b[1]) + 1, height)
    x0, x1 = max(min(a[2], b[2]) - 1, 0), min(max(a[3], b[3]) + 1, width)
    if a[0] > b[1] or b[0] > a[1] or a[2] > b[3] or b[2] > a[3]:
        return False
    canvas = []
    for c in (a, b):
        m = np.zeros((y1 - y0, x1 - x0), bool)
        m[c[0] - y0 : c[1] - y0, c[2] - x0 : c[3] - x0] = c[4]
        canvas.append(m)
    grown = ndimage.binary_dilation(canvas[0], structure=np.ones((3, 3), bool))
    return bool((grown & canvas[1]).any())


def make_plate(
    n_frames: int = 120,
    height: int = 300,
    width: int = 400,
    n_worms: int = 5,
    *,
    n_points: int = 49,
    fps: float = 15.0,
    seed: int = 0,
    noise: float = 3.0,
    blur: float = 0.8,
    polarity: str = "dark",
) -> SyntheticPlate:
    """Generate a synthetic plate (deterministic for a given set of arguments).

    Parameters
    ----------
    n_frames, height, width : video size.
    n_worms : number of worms; the first five have hand-placed tracks (1 coils,
        2 and 3 cross), more are placed at random.
    n_points : centerline points per worm (head first).
    fps : frame rate stored in the result.
    seed : random seed for noise, texture and extra worms.
    noise : standard deviation of the pixel noise (grey levels).
    blur : Gaussian blur sigma (pixels) of the optics.
    polarity : "dark" (dark worms on bright agar) or "bright".

    Returns
    -------
    SyntheticPlate
    """
    if n_frames < 1 or height < 16 or width < 16 or n_worms < 1:
        raise ValueError("make_plate needs n_frames >= 1, height/width >= 16 and n_worms >= 1")
    rng = np.random.default_rng(seed)
    specs = _default_specs(width, height, n_frames, n_worms, rng)
    k = len(specs)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = 175.0 + 45.0 * xx / width - 25.0 * yy / height
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (height, width)), 6.0)
    background = background + 6.0 * texture / (texture.std() + 1e-9)

    centerlines = np.zeros((n_frames, k, n_points, 2), np.float32)
    widths = np.zeros((n_frames, k, n_points), np.float32)
    video = np.zeros((n_frames, height, width), np.uint8)
    labels = np.zeros((n_frames, height, width), np.uint16)
    coiled = np.zeros((n_frames, k), bool)
    touching = np.zeros((n_frames, k), bool)

    tracks = []
    for spec in specs:
        lo = spec.speed * (0 - spec.anchor_frame) - spec.length - 2.0
        hi = spec.speed * (n_frames - spec.anchor_frame) + 2.0
        sigma = np.arange(lo, hi, 0.25)
        tracks.append((sigma, _track(spec, sigma)))

    sub_step = 2
    dense = sub_step * (n_points - 1) + 1
    radii = [_radius_profile(dense, spec.width) for spec in specs]
    for t in range(n_frames):
        darkness = np.zeros((height, width), np.float32)
        crops = []  # (y0, y1, x0, x1, mask crop) per worm
        for i, (spec, (sigma, xy)) in enumerate(zip(specs, tracks)):
            head = spec.speed * (t - spec.anchor_frame)
            s = head - np.linspace(0.0, spec.length, dense)
            cl = np.stack([np.interp(s, sigma, xy[:, 0]), np.interp(s, sigma, xy[:, 1])], 1)
            rad = radii[i]
            centerlines[t, i] = cl[::sub_step]
            widths[t, i] = 2 * rad[::sub_step]
            coiled[t, i] = _self_touching(cl, rad)
            x0 = min(max(int(np.floor(cl[:, 0].min() - spec.width - 2)), 0), width)
            x1 = max(min(int(np.ceil(cl[:, 0].max() + spec.width + 3)), width), x0)
            y0 = min(max(int(np.floor(cl[:, 1].min() - spec.width - 2)), 0), height)
            y1 = max(min(int(np.ceil(cl[:, 1].max() + spec.width + 3)), height), y0)
            m = np.zeros((y1 - y0, x1 - x0), bool)
            if x1 > x0 and y1 > y0:
                inside = _segment_coverage(
                    cl,
                    rad,
                    np.arange(x0, x1, dtype=np.float32),
                    np.arange(y0, y1, dtype=np.float32),
                )
                cov = np.clip(inside + 0.5, 0.0, 1.0)
                sub = darkness[y0:y1, x0:x1]
                np.maximum(sub, cov, out=sub)
                m = inside >= 0.0
                labels[t, y0:y1, x0:x1][m] = i + 1
            crops.append((y0, y1, x0, x1, m))
        for i in range(k):
            for j in range(i + 1, k):
                if _crops_touch(crops[i], crops[j], height, width):
                    touching[t, i] = touching[t, j] = True
        if polarity == "dark":
            frame = background * (1.0 - 0.55 * darkness)
        else:
            frame = background * 0.35 + 120.0 * darkness
        if blur > 0:
            frame = ndimage.gaussian_filter(frame, blur)
        frame = frame + rng.normal(0.0, noise, frame.shape)
        video[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)

    return SyntheticPlate(
        video=video,
        labels=labels,
        centerlines=centerlines,
        widths=widths,
        touching=touching,
        coiled=coiled,
        fps=float(fps),
        specs=specs,
    )
