"""Background model and foreground segmentation for the classic backend.

The background is a per-pixel percentile (80th for dark animals, 20th for bright ones)
of frames sampled evenly over the video: agar shows through at a pixel unless an animal
covered it in more than 80 % of the samples, so a worm that pauses for most of the video
is still foreground. Where a worm stayed put in almost every sample and was baked into
the background, the background is patched with a spatial estimate (a grey
closing or opening wider than a worm), so a paused worm is still foreground.

Foreground is the contrast ``s * (frame - background) / norm`` above a threshold, where
``s`` is +1 for bright animals and -1 for dark ones, and ``norm`` is the local
background brightness (so the threshold follows illumination gradients: transmitted
light darkens a worm by a fraction of the local brightness). The threshold is folded
into one per-pixel grey level map, so segmenting a frame is a single comparison,
a connected-component labelling and an area count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

__all__ = [
    "BackgroundModel",
    "apply_gain",
    "auto_polarity",
    "auto_threshold",
    "colour_weights",
    "contrast_norm",
    "estimate_background",
    "frame_gain",
    "measure_threshold",
    "spatial_background",
    "to_grey",
]

STRUCTURE = np.ones((3, 3), bool)  # 8-connected blobs


def to_grey(frame: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Reduce a frame to a 2-D uint8 grey image ((H, W) or (H, W, 3|4) input).

    ``weights``: per-channel weights for colour input (see :func:`colour_weights`);
    None = luminance (0.30 R + 0.59 G + 0.11 B).
    """
    a = np.asarray(frame)
    if a.ndim == 3:
        if a.shape[2] == 1:
            a = a[..., 0]
        elif weights is not None:
            w = np.asarray(weights, np.float32)
            a = np.clip(a[..., :3] @ w + 0.5, 0, 255).astype(np.uint8)
        else:
            rgb = a[..., :3].astype(np.uint16)
            a = ((77 * rgb[..., 0] + 150 * rgb[..., 1] + 29 * rgb[..., 2]) >> 8).astype(np.uint8)
    if a.ndim != 2:
        raise ValueError(f"expected a (H, W) or (H, W, 3) frame, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a


def colour_weights(frames: np.ndarray, polarity: str = "auto") -> np.ndarray | None:
    """Channel weights that give animals the best contrast over noise, or None for grey.

    Each channel's contrast ``s_c`` (median relative deviation from its own temporal
    background on the animal pixels found in luminance) and noise ``sigma_c`` (robust
    spread of that deviation over the frame) are measured on the sampled frames; the
    weights are the matched filter ``s_c / sigma_c**2`` divided by the channel's mean
    background, scaled so the background keeps its luminance grey level. A channel in
    which the animals do not stand out gets weight 0. Returns None where the channels
    are equal (grey stored as colour) or nothing stands out.
    """
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] < 3 or len(f) < 3:
        return None
    rgb = f[..., :3].astype(np.float32)
    if np.abs(rgb[..., 0] - rgb[..., 1]).max() < 3 and np.abs(rgb[..., 1] - rgb[..., 2]).max() < 3:
        return None
    lum = np.stack([to_grey(x) for x in f]).astype(np.float32)
    if polarity == "auto":
        polarity = auto_polarity(lum)
    q = 80 if polarity == "dark" else 20
    s = 1.0 if polarity == "bright" else -1.0
    bg = np.percentile(rgb, q, axis=0)  # (H, W, 3)
    lbg = np.percentile(lum, q, axis=0)
    lc = s * (lum - lbg) / contrast_norm(lbg)
    sig = _robust_sigma(lc)
    animal = lc > 6.0 * sig
    if animal.sum() < 50:
        return None
    rel = s * (rgb - bg) / np.maximum(bg, 16.0)
    signal = np.array([float(np.median(rel[..., c][animal])) for c in range(3)])
    noise = np.array([max(_robust_sigma(rel[..., c]), 1e-3) for c in range(3)])
    a = np.maximum(signal, 0.0) / noise**2
    if a.sum() <= 0:
        return None
    mean_bg = bg.reshape(-1, 3).mean(axis=0)
    w = a / np.maximum(mean_bg, 1.0)
    w *= float(lbg.mean()) / float(w @ mean_bg)  # the background keeps its grey level
    log.info("classic colour weights (R, G, B) = %s", np.round(w, 3))
    return w.astype(np.float32)


def _robust_sigma(c: np.ndarray) -> float:
    """Median over frames of each frame's MAD sigma (frames may differ in exposure)."""
    c = np.asarray(c, np.float32)
    frames = c if c.ndim == 3 else c[None]
    out = []
    for x in frames:
        x = x[::2, ::2].ravel()
        med = float(np.median(x))
        out.append(1.4826 * float(np.median(np.abs(x - med))))
    return float(np.median(out))


def contrast_norm(bg: np.ndarray) -> np.ndarray:
    """Local brightness used to normalise contrast (floored for dark backgrounds)."""
    floor = max(0.5 * float(np.median(bg)), 16.0)
    return np.maximum(bg.astype(np.float32), floor)


def spatial_background(image: np.ndarray, polarity: str, size: int) -> np.ndarray:
    """Background of one image without temporal information.

    A grey closing (dark animals) or opening (bright animals) with a square of side
    ``size`` (wider than an animal) removes the animals; a Gaussian smooths the result.
    Done at reduced resolution for speed.
    """
    img = np.asarray(image, np.float32)
    f = max(1, size // 8)
    small = img[::f, ::f]
    k = max(3, int(np.ceil(size / f)) | 1)
    op = ndimage.grey_closing if polarity == "dark" else ndimage.grey_opening
    small = ndimage.gaussian_filter(op(small, size=(k, k)), k / 4)
    zoom = (img.shape[0] / small.shape[0], img.shape[1] / small.shape[1])
    big = ndimage.zoom(small, zoom, order=1)[: img.shape[0], : img.shape[1]]
    out = np.empty_like(img)
    out[: big.shape[0], : big.shape[1]] = big
    if big.shape != img.shape:  # zoom rounding: pad by edge values
        out[big.shape[0] :, :] = out[big.shape[0] - 1 : big.shape[0], :]
        out[:, big.shape[1] :] = out[:, big.shape[1] - 1 : big.shape[1]]
    return out


GAIN_STEP = 8  # the per-frame gain is measured on every 8th pixel of every 8th row
GAIN_TOLERANCE = 0.004  # frames within 0.4 % of the background's brightness are left as they are


def frame_gain(grey: np.ndarray, ref: np.ndarray) -> float:
    """Measure a frame's brightness over the background's (median ratio on a sparse grid).

    ``ref`` is ``background[::GAIN_STEP, ::GAIN_STEP]``; pixels where it is below 16 grey
    levels (dark field) are ignored. Animals cover a minority of the pixels, so the
    median ratio is the exposure / lamp change of the frame (flat-field gain).
    """
    g = grey[::GAIN_STEP, ::GAIN_STEP].astype(np.float32)
    ok = ref >= 16.0
    if ok.sum() < 16:
        return 1.0
    return float(np.median(g[ok] / ref[ok]))


def apply_gain(grey: np.ndarray, gain: float, tolerance: float = GAIN_TOLERANCE) -> np.ndarray:
    """Divide ``grey`` by ``gain`` through a 256-entry uint8 lookup table.

    ``grey`` itself is returned when the gain is within ``tolerance`` of 1.
    """
    if abs(gain - 1.0) <= tolerance or gain <= 0:
        return grey
    lut = np.clip(np.rint(np.arange(256, dtype=np.float32) / gain), 0, 255).astype(np.uint8)
    return np.take(lut, grey)


@dataclass
class BackgroundModel:
    """A background image plus the per-pixel grey level that separates animals from it.

    Attributes
    ----------
    background : (H, W) float32 background image.
    polarity : "dark" or "bright" animals.
    threshold : contrast threshold (fraction of the local brightness ``norm``).
    limit : (H, W) uint8/int16 grey level map: a pixel is foreground when it is below
        (dark) or above (bright) its limit.
    smooth : frames are smoothed by a 3x3 mean before the comparison (set when the
        threshold is within 8 noise sigmas: low-contrast plates).
    normalise_gain : each frame's brightness is scaled to the background's first
        (:func:`frame_gain`), so exposure or lamp flicker does not move the threshold.
    noise : robust noise sigma of the contrast, measured on the sampled frames.
    body_threshold : half the animals' median body contrast (the threshold on
        low-contrast plates; on clear plates the threshold is higher, at the half-contrast
        edge): what "a core of n x the threshold" tests are relative to. 0: the threshold.
    """

    background: np.ndarray
    polarity: str
    threshold: float
    limit: np.ndarray
    smooth: bool = False
    normalise_gain: bool = True
    noise: float = 0.0
    body_threshold: float = 0.0

    @classmethod
    def build(
        cls,
        background: np.ndarray,
        polarity: str,
        threshold: float,
        *,
        smooth: bool = False,
        normalise_gain: bool = True,
        noise: float = 0.0,
        body_threshold: float = 0.0,
    ) -> BackgroundModel:
        """Build the model and fold the threshold into a per-pixel grey limit."""
        bg = np.asarray(background, np.float32)
        step = threshold * contrast_norm(bg)
        if polarity == "dark":
            # foreground: frame < limit  (a limit <= 0 means never foreground)
            limit = np.clip(np.ceil(bg - step), 0, 256).astype(np.int16)
        else:
            # foreground: frame > limit  (a limit >= 255 means never foreground)
            limit = np.clip(np.floor(bg + step), -1, 255).astype(np.int16)
        gain_ok = normalise_gain and float(np.median(bg)) >= 16  # not on dark field
        body = float(body_threshold) or float(threshold)
        return cls(bg, polarity, float(threshold), limit, smooth, gain_ok, float(noise), body)

    def __post_init__(self) -> None:
        """Keep the sparse grid of the background the gain is measured on."""
        self._ref = self.background[::GAIN_STEP, ::GAIN_STEP].astype(np.float32)

    def normalise(self, grey: np.ndarray) -> np.ndarray:
        """Bring a frame to the background: gain-corrected, smoothed if set."""
        if grey.shape != self.limit.shape:
            raise ValueError(
                f"frame shape {grey.shape} does not match the background {self.limit.shape}"
            )
        if self.normalise_gain:
            # a gain change under a tenth of the threshold moves no edge: left alone
            tol = max(GAIN_TOLERANCE, 0.1 * self.threshold)
            grey = apply_gain(grey, frame_gain(grey, self._ref), tol)
        if self.smooth:
            grey = ndimage.uniform_filter(grey, 3)
        return grey

    def foreground(self, grey: np.ndarray) -> np.ndarray:
        """Boolean foreground of a uint8 grey frame."""
        grey = self.normalise(grey)
        return grey < self.limit if self.polarity == "dark" else grey > self.limit

    def contrast(self, grey: np.ndarray) -> np.ndarray:
        """Signed contrast (positive on animals) as a fraction of local brightness."""
        d = self.normalise(grey).astype(np.float32) - self.background
        s = 1.0 if self.polarity == "bright" else -1.0
        return s * d / contrast_norm(self.background)


def auto_polarity(frames: np.ndarray) -> str:
    """Return "dark" when the grey levels' dark tail is longer than the bright one."""
    a = np.asarray(frames)
    med = float(np.median(a))
    lo, hi = np.percentile(a, [0.1, 99.9])
    return "dark" if med - lo > hi - med else "bright"


def auto_threshold(contrast: np.ndarray, norm_level: float, dark_field: bool = False) -> float:
    """Half the typical contrast of the animals' bodies, but well above the noise.

    ``contrast``: (H, W) or (N, H, W) contrast of sampled frames. The noise sigma is the
    median of each frame's robust (MAD) sigma. Candidate animal pixels are those above
    6 sigma in blobs of at least 10 pixels; the typical body contrast is the median
    contrast of those pixels (the body, not its darkest core: real worms are darker at
    the cuticle than inside and fainter at head and tail). On a low-contrast plate
    (that half within 8 sigma) the threshold is half of it, at least 4 sigma. On a clear
    plate it is half the bodies' core contrast (each blob's 90th percentile, the median
    over the blobs weighed by area): the half-contrast edge of a blurred body, which the
    median body contrast puts a pixel out on thin worms. ``dark_field``: the background
    is near black (e.g. a Tierpsy masked video): animals are anything 20 grey levels
    above it, however uneven their own brightness.
    """
    return _measure_threshold(contrast, norm_level, dark_field)[0]


def measure_threshold(
    contrast: np.ndarray, norm_level: float, dark_field: bool = False
) -> tuple[float, float, float]:
    """Return (threshold, noise sigma, body threshold) of :func:`auto_threshold`.

    The body threshold (half the median body contrast) is what core tests are
    relative to.
    """
    return _measure_threshold(contrast, norm_level, dark_field)


#: a plate whose threshold is within this many noise sigmas is "low contrast"
LOW_CONTRAST_SIGMAS = 8.0


def _measure_threshold(contrast, norm_level: float, dark_field: bool) -> tuple[float, float, float]:
    """(threshold, noise sigma, body threshold); see :func:`auto_threshold`."""
    c = np.asarray(contrast, np.float32)
    frames = c if c.ndim == 3 else c[None]
    sigma = max(_robust_sigma(frames), 0.5 / norm_level)  # quantisation floor
    if dark_field:  # as before 2026-12: half the 90th percentile of strong pixels, capped
        strong = c[c > 6.0 * sigma]
        if strong.size >= 20:
            half = max(min(0.5 * float(np.percentile(strong, 90)), 20.0 / norm_level), 4 * sigma)
            return half, sigma, half
        return 6.0 * sigma, sigma, 6.0 * sigma
    body, cores = [], []
    for x in frames:
        strong = x > 6.0 * sigma
        if not strong.any():
            continue
        lab, _ = ndimage.label(strong, STRUCTURE)
        areas = np.bincount(lab.ravel())
        big = np.flatnonzero(areas[1:] >= 10) + 1
        if big.size == 0:
            continue
        body.append(x[np.isin(lab, big)])
        core = ndimage.labeled_comprehension(x, lab, big, _core, np.float32, 0.0)
        cores.append(np.repeat(core, areas[big]))  # weighed by area: animals, not specks
    if sum(b.size for b in body) < 20:
        return 6.0 * sigma, sigma, 6.0 * sigma
    # half the animals' median body contrast: robust where the contrast is low (noise
    # spreads a body's pixels; faint worms break up at a higher threshold)
    half_body = max(0.5 * float(np.median(np.concatenate(body))), 4.0 * sigma)
    if half_body < LOW_CONTRAST_SIGMAS * sigma:
        return half_body, sigma, half_body
    # clear contrast: half each body's core contrast (its 90th percentile; blurred edges
    # and thin bodies leave most pixels below it), the half-contrast edge of a blurred
    # body; the median body contrast would put the edge a pixel out on thin worms
    half_core = max(0.5 * float(np.median(np.concatenate(cores))), half_body)
    return half_core, sigma, half_body


def _core(values: np.ndarray) -> float:
    """Return a blob's core contrast: the 90th percentile of its pixels."""
    return float(np.percentile(values, 90))


def _threshold(bg, probe, polarity: str, threshold: float | None) -> tuple[float, float, float]:
    """(threshold, noise sigma, body threshold) measured on ``probe``."""
    s = 1.0 if polarity == "bright" else -1.0
    norm = contrast_norm(bg)
    contrast = s * (probe.astype(np.float32) - bg) / norm
    t, sigma, body = _measure_threshold(contrast, float(np.median(norm)), float(np.median(bg)) < 16)
    if threshold is not None:
        return float(threshold), sigma, float(threshold)
    return t, sigma, body


def estimate_background(
    frames: np.ndarray,
    polarity: str = "auto",
    threshold: float | None = None,
    repair_size: int | None = None,
) -> BackgroundModel:
    """Build a :class:`BackgroundModel` from sampled grey frames.

    Parameters
    ----------
    frames : (N, H, W) uint8 grey frames sampled over the video (N >= 1).
    polarity : "dark", "bright" or "auto" (from the sign of the largest deviations).
    threshold : contrast threshold as a fraction of local brightness; None = automatic
        (half the typical animal contrast, at least 4 noise sigmas).
    repair_size : side (pixels) of the spatial filter used to remove animals that
        paused in most samples from the median; None = 4x the measured animal width;
        0 disables the repair.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or len(frames) == 0:
        raise ValueError("estimate_background needs (N, H, W) frames with N >= 1")
    if polarity not in ("auto", "dark", "bright"):
        raise ValueError(f"polarity must be 'auto', 'dark' or 'bright', not {polarity!r}")
    if polarity == "auto":
        polarity = auto_polarity(
            frames[np.linspace(0, len(frames) - 1, min(len(frames), 8)).astype(int)]
        )
    # a high (dark animals) or low (bright animals) percentile over time: agar shows
    # through unless an animal covers the pixel in most samples
    q = 80 if polarity == "dark" else 20
    bg = _percentile(frames, q)
    if float(np.median(bg)) >= 16 and len(frames) > 2:
        # flat-field gain: bring every sample to the background's brightness, twice
        for _ in range(2):
            ref = bg[::GAIN_STEP, ::GAIN_STEP]
            frames = np.stack([apply_gain(f, frame_gain(f, ref)) for f in frames])
            bg = _percentile(frames, q)
    if len(frames) < 3:  # 1-2 frames: animals are in the median; filter them out in space
        bg = spatial_background(bg, polarity, max(15, min(bg.shape) // 10))
    probe = frames[np.linspace(0, len(frames) - 1, min(len(frames), 8)).astype(int)]
    model = _model(bg, probe, polarity, threshold)
    if repair_size != 0 and len(frames) >= 3:
        repaired = _repair(model, probe, repair_size)
        if repaired is not model:  # animals were baked in: measure contrast again
            model = _model(repaired.background, probe, polarity, threshold)
    log.info(
        "classic background: polarity=%s threshold=%.3f noise=%.4f smooth=%s",
        model.polarity,
        model.threshold,
        model.noise,
        model.smooth,
    )
    return model


def _percentile(frames: np.ndarray, q: float) -> np.ndarray:
    if len(frames) > 2:
        return np.percentile(frames, q, axis=0).astype(np.float32)
    return np.median(frames, axis=0).astype(np.float32)


def _model(bg, probe, polarity: str, threshold: float | None) -> BackgroundModel:
    t, sigma, body = _threshold(bg, probe, polarity, threshold)
    # low contrast (threshold within 8 noise sigmas): a 3x3 mean cuts the noise 3x
    smooth = float(np.median(bg)) >= 16 and t < LOW_CONTRAST_SIGMAS * sigma
    return BackgroundModel.build(bg, polarity, t, smooth=smooth, noise=sigma, body_threshold=body)


def _animal_width(model: BackgroundModel, frames: np.ndarray) -> float:
    widths = []
    for f in frames:
        fg = model.foreground(f)
        if fg.any():
            widths.append(2.0 * float(np.percentile(ndimage.distance_transform_edt(fg)[fg], 95)))
    return float(np.median(widths)) if widths else 0.0


def _repair(model: BackgroundModel, frames: np.ndarray, size: int | None) -> BackgroundModel:
    """Replace animals baked into the median (paused worms) by a spatial background."""
    if size is None:
        w = _animal_width(model, frames)
        if w <= 0:
            return model
        size = int(max(7, 4 * w))
    spatial = spatial_background(model.background, model.polarity, size)
    s = 1.0 if model.polarity == "bright" else -1.0
    ghost = s * (model.background - spatial) / contrast_norm(spatial)
    baked = ghost > model.threshold
    if not baked.any():
        return model
    lab, _ = ndimage.label(baked, STRUCTURE)
    areas = np.bincount(lab.ravel())
    # animal-sized: at least 10 px, at most 5 % of the frame, and not touching the
    # frame's edge (arena walls and vignetting are background, not paused animals)
    big = (areas >= 10) & (areas <= 0.05 * lab.size)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    big[edge] = False
    big[0] = False
    baked = big[lab]
    if not baked.any():
        return model
    baked = ndimage.binary_dilation(baked, STRUCTURE, iterations=2)
    log.info("classic background: %d pixels of paused animals replaced", int(baked.sum()))
    bg = model.background.copy()
    bg[baked] = spatial[baked]
    return BackgroundModel.build(
        bg,
        model.polarity,
        model.threshold,
        noise=model.noise,
        body_threshold=model.body_threshold,
    )
