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
    "auto_polarity",
    "auto_threshold",
    "contrast_norm",
    "estimate_background",
    "spatial_background",
    "to_grey",
]

STRUCTURE = np.ones((3, 3), bool)  # 8-connected blobs


def to_grey(frame: np.ndarray) -> np.ndarray:
    """A frame as a 2-D uint8 grey image ((H, W) or (H, W, 3|4) input)."""
    a = np.asarray(frame)
    if a.ndim == 3:
        if a.shape[2] == 1:
            a = a[..., 0]
        else:
            rgb = a[..., :3].astype(np.uint16)
            a = ((77 * rgb[..., 0] + 150 * rgb[..., 1] + 29 * rgb[..., 2]) >> 8).astype(np.uint8)
    if a.ndim != 2:
        raise ValueError(f"expected a (H, W) or (H, W, 3) frame, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a


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
    """

    background: np.ndarray
    polarity: str
    threshold: float
    limit: np.ndarray

    @classmethod
    def build(cls, background: np.ndarray, polarity: str, threshold: float) -> BackgroundModel:
        bg = np.asarray(background, np.float32)
        step = threshold * contrast_norm(bg)
        if polarity == "dark":
            # foreground: frame < limit  (a limit <= 0 means never foreground)
            limit = np.clip(np.ceil(bg - step), 0, 256).astype(np.int16)
        else:
            # foreground: frame > limit  (a limit >= 255 means never foreground)
            limit = np.clip(np.floor(bg + step), -1, 255).astype(np.int16)
        return cls(bg, polarity, float(threshold), limit)

    def foreground(self, grey: np.ndarray) -> np.ndarray:
        """Boolean foreground of a uint8 grey frame."""
        if grey.shape != self.limit.shape:
            raise ValueError(
                f"frame shape {grey.shape} does not match the background {self.limit.shape}"
            )
        return grey < self.limit if self.polarity == "dark" else grey > self.limit

    def contrast(self, grey: np.ndarray) -> np.ndarray:
        """Signed contrast (positive on animals) as a fraction of local brightness."""
        d = grey.astype(np.float32) - self.background
        s = 1.0 if self.polarity == "bright" else -1.0
        return s * d / contrast_norm(self.background)


def auto_polarity(frames: np.ndarray) -> str:
    """ "dark" when the grey levels' dark tail is longer than the bright one."""
    a = np.asarray(frames)
    med = float(np.median(a))
    lo, hi = np.percentile(a, [0.1, 99.9])
    return "dark" if med - lo > hi - med else "bright"


def auto_threshold(contrast: np.ndarray, norm_level: float, dark_field: bool = False) -> float:
    """Half the typical animal contrast, but well above the noise.

    ``dark_field``: the background is near black (e.g. a Tierpsy masked video): animals
    are anything 20 grey levels above it, however uneven their own brightness.
    """
    c = contrast.ravel()
    med = float(np.median(c))
    sigma = 1.4826 * float(np.median(np.abs(c - med)))
    sigma = max(sigma, 0.5 / norm_level)  # quantisation floor
    strong = c[c > 6.0 * sigma]
    if strong.size >= 20:
        half = 0.5 * float(np.percentile(strong, 90))
        if dark_field:
            half = min(half, 20.0 / norm_level)
        return max(half, 4.0 * sigma)
    return 6.0 * sigma


def _threshold(bg, probe, polarity: str, threshold: float | None) -> float:
    if threshold is not None:
        return float(threshold)
    s = 1.0 if polarity == "bright" else -1.0
    norm = contrast_norm(bg)
    contrast = s * (probe.astype(np.float32) - bg) / norm
    return auto_threshold(contrast, float(np.median(norm)), float(np.median(bg)) < 16)


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
    probe = frames[np.linspace(0, len(frames) - 1, min(len(frames), 8)).astype(int)]
    if polarity == "auto":
        polarity = auto_polarity(probe)
    # a high (dark animals) or low (bright animals) percentile over time: agar shows
    # through unless an animal covers the pixel in most samples
    q = 80 if polarity == "dark" else 20
    bg = (
        np.percentile(frames, q, axis=0).astype(np.float32)
        if len(frames) > 2
        else (np.median(frames, axis=0).astype(np.float32))
    )
    if len(frames) < 3:  # 1-2 frames: animals are in the median; filter them out in space
        bg = spatial_background(bg, polarity, max(15, min(bg.shape) // 10))
    model = BackgroundModel.build(bg, polarity, _threshold(bg, probe, polarity, threshold))
    if repair_size != 0 and len(frames) >= 3:
        repaired = _repair(model, probe, repair_size)
        if repaired is not model:  # animals were baked in: measure contrast again
            bg = repaired.background
            model = BackgroundModel.build(bg, polarity, _threshold(bg, probe, polarity, threshold))
    log.info("classic background: polarity=%s threshold=%.3f", model.polarity, model.threshold)
    return model


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
    big = areas >= 10
    big[0] = False
    baked = big[lab]
    if not baked.any():
        return model
    baked = ndimage.binary_dilation(baked, STRUCTURE, iterations=2)
    log.info("classic background: %d pixels of paused animals replaced", int(baked.sum()))
    bg = model.background.copy()
    bg[baked] = spatial[baked]
    return BackgroundModel.build(bg, model.polarity, model.threshold)
