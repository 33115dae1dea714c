"""Region of interest: find the Bragg peak in a detector frame, crop N x N around it and turn
counts into magnitudes. Pure numpy, vectorised; hot and masked pixels never win."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdistream.errors import Rejected

__all__ = ["Crop", "RoiConfig", "RoiRejected", "extract", "find_peak", "zero_bad_pixels"]


class RoiRejected(Rejected):
    """A frame without a usable Bragg peak, or an image that cannot be used at all."""


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


def zero_bad_pixels(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The image with unusable pixels set to 0: the detector's mask and, for integer data, the
    all-ones value that DECTRIS-style detectors use for gaps and dead pixels. The image itself
    (no copy) when there are none."""
    bad = mask
    if image.dtype.kind == "u":
        invalid = image == np.iinfo(image.dtype).max
        if invalid.any():
            bad = invalid if bad is None else bad | invalid
    return image if bad is None else np.where(bad, 0, image)


def find_peak(img: np.ndarray) -> tuple[int, int, float]:
    """(row, col, height) of the Bragg peak in an image whose bad pixels are zero.

    First the brightest 2 x 2 block (by its dimmest pixel): a hot pixel stands alone, so it
    cannot win; ``height`` is that dimmest count. Then the brightest pixel within 3 pixels of
    the block, ignoring any pixel more than 4 times brighter than all its neighbours
    (oversampled speckles are at least 2 pixels wide; hot pixels are not).
    """
    eroded = np.minimum(
        np.minimum(img[:-1, :-1], img[1:, :-1]), np.minimum(img[:-1, 1:], img[1:, 1:])
    )
    row, col = divmod(int(np.argmax(eroded)), eroded.shape[1])
    r0, c0 = max(row - 3, 0), max(col - 3, 0)
    window = img[r0 : row + 5, c0 : col + 5].astype(np.float64)
    padded = np.pad(window, 1)
    h, w = window.shape
    shifts = [
        padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
        if dr or dc
    ]
    lonely = window > 4 * np.max(shifts, axis=0)
    r, c = np.unravel_index(int(np.argmax(np.where(lonely, 0, window))), window.shape)
    return r0 + int(r), c0 + int(c), float(eroded[row, col])


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
    clean = zero_bad_pixels(image, mask)
    row, col, height = find_peak(clean)
    if height < config.min_peak:
        raise RoiRejected("no_peak", f"brightest compact peak has {height:.0f} counts")
    b = config.binning
    span = config.size * b
    window = _window(clean, row, col, span)
    if b > 1:
        window = window.reshape(config.size, b, config.size, b).sum(axis=(1, 3))
    counts = np.maximum(window - config.background * b * b, 0, dtype=np.float32)
    return Crop(np.sqrt(counts), counts, row, col)
