"""Region of interest: find the Bragg peak in a detector frame, crop N x N around it and turn
counts into magnitudes. Pure numpy, vectorised; hot and masked pixels never win."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from cdistream.errors import Rejected

__all__ = [
    "BadPixels",
    "Crop",
    "PeakTracker",
    "RoiConfig",
    "RoiRejected",
    "extract",
    "find_peak",
]


class RoiRejected(Rejected):
    """A frame without a usable Bragg peak, or an image that cannot be used at all."""


@dataclass(frozen=True)
class RoiConfig:
    """How to cut the network's input out of a detector frame."""

    size: int = 32  # the network's N
    binning: int = 1  # sum b x b detector pixels into one before cropping
    min_peak: float = 10.0  # counts a peak pixel and its neighbours must all reach
    background: float = 0.0  # counts per pixel subtracted before the square root
    saturation: float | None = None  # counts at which pixels are masked; None: the series' value


@dataclass(frozen=True)
class Crop:
    """The network's input and where it came from."""

    magnitudes: np.ndarray  # float32 (size, size), zero frequency at size//2, 0 where not valid
    counts: np.ndarray  # float32 (size, size), the raw counts, pixels not valid zeroed
    valid: np.ndarray  # bool (size, size): measured (not masked, saturated or off the detector)
    peak_row: int  # detector pixel of the crop's centre
    peak_col: int
    saturated: int = 0  # pixels of the crop masked because they reached the saturation value


@dataclass(frozen=True)
class BadPixels:
    """A detector's static pixel mask, as flat indices: built once per series, so that zeroing
    masked pixels costs a few microseconds per frame instead of a pass over a boolean image."""

    shape: tuple[int, int]
    index: np.ndarray  # flat indices of the pixels not to use
    mask: np.ndarray  # the boolean image, True = do not use (for the crop's validity)

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> BadPixels:
        """From a boolean image, True = do not use."""
        mask = np.asarray(mask, bool)
        return cls(mask.shape, np.flatnonzero(mask), mask)


_scratch = threading.local()
_MAX_BUFFERS = 16  # per thread: a few frame shapes' worth, so a detector that changes shape
# series after series never grows memory


def _buffer(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread scratch array reused across frames: allocating (and page-faulting) fresh
    half-megabyte temporaries for every frame cost more than the arithmetic on them."""
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key = (name, shape, dtype.str)
    if key not in buffers:
        if len(buffers) >= _MAX_BUFFERS:  # a new frame shape: the old shapes' buffers go
            buffers.clear()
        buffers[key] = np.empty(shape, dtype)
    return buffers[key]


def _neighbours_max(x: np.ndarray) -> np.ndarray:
    """The brightest of each pixel's eight neighbours (0 past the edges). Slices of a padded
    copy: on the few-pixel windows used here, scipy's maximum_filter spent ten times longer in
    its Python set-up than numpy does on the arithmetic."""
    h, w = x.shape
    padded = np.zeros((h + 2, w + 2), x.dtype)
    padded[1:-1, 1:-1] = x
    out = np.maximum(padded[:-2, :-2], padded[:-2, 1:-1])
    for r, c in ((0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)):
        np.maximum(out, padded[r : r + h, c : c + w], out=out)
    return out


def _find_peak(img: np.ndarray, offset: int) -> tuple[int, int, float]:
    """:func:`find_peak` on an image whose values carry ``offset`` (0 means a bad pixel)."""
    h, w = img.shape
    pairs = _buffer("pairs", (h, w - 1), img.dtype)
    np.minimum(img[:, :-1], img[:, 1:], out=pairs)
    row, col = divmod(int(np.argmax(pairs)), w - 1)
    height = float(pairs[row, col]) - offset
    r0, c0 = max(row - 3, 0), max(col - 3, 0)
    window = np.maximum(img[r0 : row + 5, c0 : col + 6].astype(np.float64) - offset, 0)
    lonely = window > 4 * _neighbours_max(window)
    r, c = np.unravel_index(int(np.argmax(np.where(lonely, 0, window))), window.shape)
    return r0 + int(r), c0 + int(c), height


def find_peak(img: np.ndarray) -> tuple[int, int, float]:
    """(row, col, height) of the Bragg peak in an image whose bad pixels are zero.

    First the brightest pair of horizontally adjacent pixels (by its dimmer pixel): a hot pixel
    stands alone, so it cannot win; ``height`` is that dimmer count. Then the brightest pixel
    within 3 pixels of the pair, ignoring any pixel more than 4 times brighter than all its
    neighbours (oversampled speckles are at least 2 pixels wide; hot pixels are not).
    """
    return _find_peak(img, 0)


def _window(image: np.ndarray, row: int, col: int, span: int, fill=0) -> np.ndarray:
    """span x span pixels with (row, col) at index span//2, ``fill`` past the edges."""
    top, left = row - span // 2, col - span // 2
    out = np.full((span, span), fill, dtype=np.float32 if image.dtype != bool else bool)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + span, image.shape[0]), min(left + span, image.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - top : r1 - top, c0 - left : c1 - left] = image[r0:r1, c0:c1]
    return out


HOT_RATIO = 16.0  # a pixel this many times brighter than all its neighbours is not diffraction


def _outliers(window: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Isolated pixels far brighter than all eight neighbours (hot pixels the mask does not
    list): an oversampled pattern's speckles are at least two pixels wide. The 3 x 3 pixels
    around the ROI's centre are never flagged (a large crystal's central peak is narrow)."""
    neighbours = _neighbours_max(np.where(valid, window, 0))
    hot = valid & (window > HOT_RATIO * np.maximum(neighbours, 1.0))
    c = window.shape[0] // 2
    hot[c - 1 : c + 2, c - 1 : c + 2] = False
    return hot


def _prepared(
    image: np.ndarray, bad: BadPixels | None, region: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, int]:
    """A scratch copy of ``image`` (or of ``region`` = rows r0:r1, cols c0:c1 of it) in which
    invalid pixels are 0, and the offset its values carry: unsigned data + 1, so the all-ones
    invalid value wraps round to 0."""
    if region is None:
        src, name = image, "work"
    else:
        r0, r1, c0, c1 = region
        src, name = image[r0:r1, c0:c1], "region"
    work = _buffer(name, src.shape, image.dtype)
    if image.dtype.kind == "u":
        offset = 1
        np.add(src, 1, out=work)
    else:
        offset = 0
        np.copyto(work, src)
    if bad is not None:
        if region is None:
            work.reshape(-1)[bad.index] = 0
        else:
            work[bad.mask[r0:r1, c0:c1]] = 0
    return work, offset


@dataclass
class PeakTracker:
    """Follows the Bragg peak from frame to frame within one series: the search covers a
    window of ``reach`` pixels around the last position, and the whole frame when there is no
    last position, every ``full_every`` frames (a brighter peak elsewhere), when the window's
    peak is under ``drop`` of the last full search's height (the peak left the window or
    faded), or when it lies at the window's edge (it is moving out)."""

    reach: int = 24
    full_every: int = 64
    drop: float = 0.5
    last: tuple[int, int] | None = None
    height: float = 0.0
    since_full: int = 0
    full_searches: int = 0

    def reset(self) -> None:
        self.last, self.height, self.since_full = None, 0.0, 0

    def find(self, image: np.ndarray, bad: BadPixels | None) -> tuple[int, int, float]:
        if self.last is not None and self.since_full < self.full_every:
            found = self._in_window(image, bad)
            if found is not None:
                self.since_full += 1
                self.last = found[:2]
                return found
        work, offset = _prepared(image, bad)
        row, col, height = _find_peak(work, offset)
        self.last, self.height, self.since_full = (row, col), height, 0
        self.full_searches += 1
        return row, col, height

    def _in_window(self, image, bad) -> tuple[int, int, float] | None:
        h, w = image.shape
        r0, c0 = max(self.last[0] - self.reach, 0), max(self.last[1] - self.reach, 0)
        r1, c1 = min(self.last[0] + self.reach + 1, h), min(self.last[1] + self.reach + 1, w)
        if r1 - r0 < 8 or c1 - c0 < 8:
            return None
        work, offset = _prepared(image, bad, (r0, r1, c0, c1))
        row, col, height = _find_peak(work, offset)
        edge = 4
        at_edge = (
            (row < edge and r0 > 0) or (row >= r1 - r0 - edge and r1 < h)
            or (col < edge and c0 > 0) or (col >= c1 - c0 - edge and c1 < w)
        )
        if at_edge or height < self.drop * self.height:
            return None
        return r0 + row, c0 + col, height


def extract(
    image: np.ndarray,
    config: RoiConfig,
    bad: BadPixels | None = None,
    saturation: float | None = None,
    tracker: PeakTracker | None = None,
) -> Crop:
    """Find the peak, crop (with optional binning) and convert counts to magnitudes.

    Not valid, and zero in the pattern: pixels in ``bad``; for unsigned data, pixels at the
    all-ones value that DECTRIS-style detectors use for gaps and dead pixels; pixels at or
    above ``saturation`` counts (the Bragg peak is where detectors saturate); pixels past the
    detector's edge; isolated hot pixels the mask missed. A binned pixel is valid when all its
    detector pixels are. With a ``tracker`` the search covers a window around the last frame's
    peak (see :class:`PeakTracker`), else the whole frame.

    Raises :class:`RoiRejected` with reason ``bad_image`` or ``no_peak``.
    """
    if image.ndim != 2 or image.shape[0] < 2 or image.shape[1] < 2:
        raise RoiRejected("bad_image", f"image of shape {image.shape}")
    if bad is not None and bad.shape != image.shape:
        raise RoiRejected("bad_image", f"mask {bad.shape} does not fit image {image.shape}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise RoiRejected("bad_image", "image holds NaN or infinity")
    if tracker is None:
        work, offset = _prepared(image, bad)
        row, col, height = _find_peak(work, offset)
    else:
        row, col, height = tracker.find(image, bad)
    if height < config.min_peak:
        if tracker is not None:
            tracker.reset()
        raise RoiRejected("no_peak", f"brightest compact peak has {height:.0f} counts")
    b = config.binning
    span = config.size * b
    h, w = image.shape
    top, left = row - span // 2, col - span // 2
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + span, h), min(left + span, w)
    region, offset = _prepared(image, bad, (r0, r1, c0, c1))
    window = np.full((span, span), -1, np.float32)  # -1: past the detector's edge
    window[r0 - top : r1 - top, c0 - left : c1 - left] = region
    valid = window >= 0  # on the detector
    if offset:
        valid &= window != 0  # masked or all-ones
    elif bad is not None:
        valid &= ~_window(bad.mask, row, col, span, fill=True)
    window = np.maximum(window - offset, 0)
    valid &= ~_outliers(window, valid)
    saturated = 0
    if saturation is not None:
        hot = valid & (window >= saturation)
        saturated = int(hot.sum())
        valid &= ~hot
    window *= valid
    if b > 1:
        window = window.reshape(config.size, b, config.size, b).sum(axis=(1, 3))
        valid = valid.reshape(config.size, b, config.size, b).all(axis=(1, 3))
    counts = np.maximum(window - config.background * b * b, 0, dtype=np.float32) * valid
    return Crop(np.sqrt(counts), counts, valid, row, col, saturated)
