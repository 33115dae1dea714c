"""Region of interest: find the Bragg peak in a detector frame, crop N x N around it and turn
counts into magnitudes; hot and masked pixels never win. The per-pixel loops are compiled
(:mod:`cdistream.roi_kernels`); this module holds the conventions and the peak tracker."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, replace

import numpy as np

from cdistream.errors import Rejected
from cdistream.physics.oversampling import oversampling
from cdistream.roi_kernels import best_pair, crop_window, near_pair, window_crop

__all__ = [
    "MIN_OVERSAMPLING",
    "BadPixels",
    "Crop",
    "Sampling",
    "PeakTracker",
    "RoiConfig",
    "RoiRejected",
    "choose_binning",
    "extract",
    "find_peak",
    "warm",
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
    """A detector's static pixel mask (True = do not use), built once per series; also as flat
    indices, so that zeroing masked pixels of a whole frame costs microseconds."""

    shape: tuple[int, int]
    index: np.ndarray  # flat indices of the pixels not to use
    mask: np.ndarray  # bool (rows, cols)

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> BadPixels:
        """From a boolean image, True = do not use."""
        mask = np.ascontiguousarray(mask, bool)
        return cls(mask.shape, np.flatnonzero(mask), mask)


log = logging.getLogger(__name__)

_NO_MASK = np.zeros((1, 1), bool)
HOT_RATIO = 16.0  # a pixel this many times brighter than all its neighbours is not diffraction
_WHOLE = 128 * 128  # frames at least this large are searched with numpy, smaller compiled
_scratch = threading.local()


@functools.cache
def _kind(dtype: np.dtype) -> tuple[bool, float]:
    """Unsigned data, and its all-ones value (DECTRIS' mark of gaps and dead pixels)."""
    if dtype.kind == "u":
        return True, float(np.iinfo(dtype).max)
    return False, float("inf")


def _pair_numpy(image: np.ndarray, bad: BadPixels | None, unsigned: bool):
    """:func:`~cdistream.roi_kernels.best_pair` over the whole frame, vectorised: two passes
    over per-thread scratch buffers (unsigned + 1 wraps the all-ones value round to 0)."""
    h, w = image.shape
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key = (image.shape, image.dtype.str)
    if key not in buffers:
        buffers.clear()  # a new frame shape: the old shape's buffers go
        buffers[key] = (np.empty((h, w), image.dtype), np.empty((h, w - 1), image.dtype))
    work, pairs = buffers[key]
    if unsigned:
        np.add(image, 1, out=work)
    else:
        np.copyto(work, image)
    if bad is not None:
        work.reshape(-1)[bad.index] = 0
    np.minimum(work[:, :-1], work[:, 1:], out=pairs)
    row, col = divmod(int(np.argmax(pairs)), w - 1)
    return row, col, float(pairs[row, col])


def _search(image: np.ndarray, bad: BadPixels | None):
    """(row, col, height) of the peak in the whole frame (see :func:`find_peak`)."""
    unsigned, top = _kind(image.dtype)
    mask = _NO_MASK if bad is None else bad.mask
    h, w = image.shape
    if image.size >= _WHOLE:
        row, col, value = _pair_numpy(image, bad, unsigned)
    else:
        row, col, value = best_pair(image, mask, bad is not None, unsigned, top, 0, h, 0, w)
    height = float(value) - (1.0 if unsigned else 0.0)
    row, col = near_pair(image, mask, bad is not None, unsigned, top, row, col, 0, h, 0, w)
    return int(row), int(col), height


def find_peak(img: np.ndarray) -> tuple[int, int, float]:
    """(row, col, height) of the Bragg peak in an image whose bad pixels are zero.

    First the brightest pair of horizontally adjacent pixels (by its dimmer pixel): a hot pixel
    stands alone, so it cannot win; ``height`` is that dimmer count. Then the brightest pixel
    within 3 pixels of the pair, ignoring any pixel more than 4 times brighter than all its
    neighbours (oversampled speckles are at least 2 pixels wide; hot pixels are not).
    """
    return _search(np.ascontiguousarray(img), None)


@dataclass
class PeakTracker:
    """Follows the Bragg peak from frame to frame within one series: the search covers a
    window of ``reach`` pixels around the last position, and the whole frame when there is no
    last position, every ``full_every`` frames (a brighter peak elsewhere), when the window's
    peak is under ``drop`` of the last full search's height (the peak left the window or
    faded), or when it lies at the window's edge (it is moving out)."""

    reach: int = 16
    full_every: int = 64
    drop: float = 0.5
    last: tuple[int, int] | None = None
    height: float = 0.0
    since_full: int = 0
    full_searches: int = 0

    def reset(self) -> None:
        self.last, self.height, self.since_full = None, 0.0, 0

    def followed(self, row: int, col: int) -> None:
        """The peak was found in the window around the last position."""
        self.since_full += 1
        self.last = row, col

    def searched_all(self, row: int, col: int, height: float) -> None:
        """The whole frame was searched: its peak is the new reference."""
        self.last, self.height, self.since_full = (row, col), height, 0
        self.full_searches += 1


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
    if image.dtype.kind not in "uif" or image.dtype.itemsize > 8:
        raise RoiRejected("bad_image", f"pixel type {image.dtype}")
    image = np.ascontiguousarray(image)
    unsigned, top = _kind(image.dtype)
    mask = _NO_MASK if bad is None else bad.mask
    b, saturation = config.binning, -1.0 if saturation is None else float(saturation)
    found = False
    if tracker is not None and tracker.last is not None and tracker.since_full < tracker.full_every:
        # the window around the last peak, searched and cropped in one go
        row, col, height, window, valid, saturated, found = window_crop(
            image, mask, bad is not None, unsigned, top, *tracker.last, tracker.reach,
            tracker.drop * tracker.height, config.size * b, HOT_RATIO, saturation,
        )
        if found:
            tracker.followed(row, col)
    if not found:
        row, col, height = _search(image, bad)
        if tracker is not None:
            tracker.searched_all(row, col, height)
    if height < config.min_peak:
        if tracker is not None:
            tracker.reset()
        raise RoiRejected("no_peak", f"brightest compact peak has {height:.0f} counts")
    if not found:
        window, valid, saturated = crop_window(
            image, mask, bad is not None, unsigned, top, row, col, config.size * b, HOT_RATIO,
            saturation,
        )
    if b > 1:
        window = window.reshape(config.size, b, config.size, b).sum(axis=(1, 3))
        valid = valid.reshape(config.size, b, config.size, b).all(axis=(1, 3))
        window *= valid  # a binned pixel is valid when all its detector pixels are
    if config.background:  # invalid pixels are 0 already
        window = np.maximum(window - config.background * b * b, 0, dtype=np.float32) * valid
    return Crop(np.sqrt(window), window, valid, row, col, int(saturated))


# at or under it the crystal does not fit the window (its autocorrelation, twice its extent,
# fills the window and wraps round): nothing can phase it
MIN_OVERSAMPLING = 2.0


@dataclass(frozen=True)
class Sampling:
    """How a series' crystal fits the network's window, judged on its first frame: the
    binning asked for and the one used (less where binning would squeeze the crystal out of
    the window), the oversampling estimated at the one used (None without a peak), and whether
    it exceeds :data:`MIN_OVERSAMPLING`."""

    asked_binning: int
    binning: int
    oversampling: float | None
    fits: bool

    @property
    def reduced(self) -> bool:
        return self.binning != self.asked_binning

    def document(self) -> dict:
        """For the run's start document."""
        finite = self.oversampling is not None and np.isfinite(self.oversampling)
        return {
            "estimated": self.oversampling is not None,
            "oversampling": round(float(self.oversampling), 3) if finite else None,
            "asked_binning": self.asked_binning,
            "binning": self.binning,
            "binning_reduced": self.reduced,
            "fits": self.fits,
        }


def choose_binning(
    image: np.ndarray, config: RoiConfig, bad: BadPixels | None = None,
    saturation: float | None = None,
) -> Sampling:
    """The largest binning up to ``config.binning`` at which the crystal of ``image`` is
    oversampled more than :data:`MIN_OVERSAMPLING` times (cropping 32 detector pixels instead of
    binning 64 down to 32, say); binning 1 and ``fits`` False when even that is not enough.
    The oversampling is estimated from the pattern's autocorrelation
    (:func:`cdistream.physics.oversampling.oversampling`)."""
    estimate = None
    for b in range(max(config.binning, 1), 0, -1):
        try:
            crop = extract(image, replace(config, binning=b), bad, saturation)
        except RoiRejected:
            return Sampling(config.binning, config.binning, None, True)
        estimate = oversampling(crop.counts, crop.valid)
        if estimate > MIN_OVERSAMPLING:
            return Sampling(config.binning, b, estimate, True)
    return Sampling(config.binning, 1, estimate, False)


@functools.lru_cache(maxsize=16)  # the detector names the type: keep what it can grow small
def warm(dtype: str) -> None:
    """Compile the ROI's loops for images of ``dtype`` (or load them from numba's cache) now,
    at a series' start, rather than in its first frames. A type they cannot take is left to
    the frames themselves to be rejected."""
    try:
        kind = np.dtype(dtype)
        image = np.zeros((64, 64), kind)
        image[30:33, 30:33] = 100
        for bad in (None, BadPixels.from_mask(np.zeros(image.shape, bool))):
            tracker = PeakTracker()
            for _ in range(2):  # a whole-frame search, then the tracked window
                extract(image, RoiConfig(), bad, None, tracker)
    except Exception as exc:  # numpy or numba refusing the type
        log.debug("no compiled ROI for %r: %s", dtype, exc)
