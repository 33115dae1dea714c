"""Region of interest: find the Bragg peak in a detector frame, crop N x N around it and turn
counts into magnitudes. Pure numpy, vectorised; hot and masked pixels never win."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Crop", "RoiConfig", "RoiRejected", "bad_pixels", "extract", "find_peak"]


class RoiRejected(ValueError):
    """A frame without a usable Bragg peak; ``reason`` is the name it is counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class RoiConfig:
    """How to cut the network's input out of a detector frame."""

    size: int = 32  # the network's N
    binning: int = 1  # sum b x b detector pixels into one before cropping
    min_peak: float = 10.0  # counts a peak pixel and its neighbours must all reach
    background: float = 0.0  # counts per pixel subtracted before the square root


@dataclass(frozen=True)
class Crop:
    """The network's input and where it came from."""

    magnitudes: np.ndarray  # float32 (size, size), zero frequency at size//2
    counts: np.ndarray  # float32 (size, size), the raw counts, bad pixels zeroed
    peak_row: int  # detector pixel of the crop's centre
    peak_col: int


def bad_pixels(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """Pixels to ignore: the detector's mask and, for integer data, the all-ones value that
    DECTRIS-style detectors use for gaps and dead pixels. None when there are none."""
    bad = None if mask is None else mask
    if image.dtype.kind == "u":
        invalid = image == np.iinfo(image.dtype).max
        if invalid.any():
            bad = invalid if bad is None else bad | invalid
    return bad


def find_peak(image: np.ndarray, bad: np.ndarray | None = None) -> tuple[int, int, float]:
    """(row, col, height) of the Bragg peak: the brightest pixel whose three neighbours to the
    right and below are bright too. A hot pixel stands alone, so it cannot win; masked pixels
    count as zero. ``height`` is the smallest of the four counts."""
    img = image if bad is None else np.where(bad, 0, image)
    eroded = np.minimum(
        np.minimum(img[:-1, :-1], img[1:, :-1]), np.minimum(img[:-1, 1:], img[1:, 1:])
    )
    flat = int(np.argmax(eroded))
    row, col = divmod(flat, eroded.shape[1])
    block = img[row : row + 2, col : col + 2]
    r, c = np.unravel_index(int(np.argmax(block)), block.shape)
    return row + int(r), col + int(c), float(eroded[row, col])


def _window(image: np.ndarray, row: int, col: int, span: int) -> np.ndarray:
    """span x span pixels with (row, col) at index span//2, zero-padded past the edges."""
    top, left = row - span // 2, col - span // 2
    out = np.zeros((span, span), dtype=np.float32)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + span, image.shape[0]), min(left + span, image.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - top : r1 - top, c0 - left : c1 - left] = image[r0:r1, c0:c1]
    return out


def extract(image: np.ndarray, config: RoiConfig, mask: np.ndarray | None = None) -> Crop:
    """Find the peak, crop (with optional binning) and convert counts to magnitudes.

    Raises :class:`RoiRejected` with reason ``bad_image`` or ``no_peak``.
    """
    if image.ndim != 2 or image.shape[0] < 2 or image.shape[1] < 2:
        raise RoiRejected("bad_image", f"image of shape {image.shape}")
    if mask is not None and mask.shape != image.shape:
        raise RoiRejected("bad_image", f"mask {mask.shape} does not fit image {image.shape}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise RoiRejected("bad_image", "image holds NaN or infinity")
    bad = bad_pixels(image, mask)
    row, col, height = find_peak(image, bad)
    if height < config.min_peak:
        raise RoiRejected("no_peak", f"brightest compact peak has {height:.0f} counts")
    b = config.binning
    span = config.size * b
    window = _window(image if bad is None else np.where(bad, 0, image), row, col, span)
    if b > 1:
        window = window.reshape(config.size, b, config.size, b).sum(axis=(1, 3))
    counts = np.maximum(window - config.background * b * b, 0, dtype=np.float32)
    return Crop(np.sqrt(counts), counts, row, col)
