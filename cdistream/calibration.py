"""Dark and flat-field correction of raw detector frames: counts = (raw - dark) * mean(flat) /
flat, never negative; pixels the flat field cannot correct (zero, negative, not finite, or far
below the rest) join the pixel mask instead. Calibration images taken over the whole detector
apply to frames of a region of it given the region's first pixel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdistream.errors import CdistreamError

__all__ = ["Calibration", "CalibrationError"]

FLAT_FLOOR = 0.2  # a flat-field pixel under this share of the median is not corrected, masked


class CalibrationError(CdistreamError):
    """A dark or flat image that does not fit the frames."""


def _region(image: np.ndarray, shape: tuple[int, int], origin: tuple[int, int] | None,
            what: str) -> np.ndarray:
    if image.shape == shape and origin in (None, (0, 0)):
        return image
    if origin is None:
        raise CalibrationError(
            f"the {what} image is {image.shape[0]}x{image.shape[1]} and the frames"
            f" {shape[0]}x{shape[1]}: say where the frames start on the detector"
            " (--calibration-origin ROW,COL)"
        )
    r, c = origin
    if r < 0 or c < 0 or r + shape[0] > image.shape[0] or c + shape[1] > image.shape[1]:
        raise CalibrationError(
            f"frames of {shape[0]}x{shape[1]} at ({r}, {c}) do not lie within the {what} image"
            f" of {image.shape[0]}x{image.shape[1]}"
        )
    return image[r : r + shape[0], c : c + shape[1]]


@dataclass(frozen=True)
class Calibration:
    """Per-pixel ``dark`` (counts, subtracted) and ``gain`` (multiplied) for frames of one
    shape, and the ``mask`` of pixels they cannot correct."""

    dark: np.ndarray | None
    gain: np.ndarray | None
    mask: np.ndarray

    @classmethod
    def build(
        cls,
        shape: tuple[int, int],
        dark: np.ndarray | None = None,
        flat: np.ndarray | None = None,
        origin: tuple[int, int] | None = None,
    ) -> Calibration:
        """From whole-detector or frame-sized ``dark`` and ``flat`` images."""
        mask = np.zeros(shape, bool)
        dark_px = None
        if dark is not None:
            dark_px = _region(np.asarray(dark, np.float32), shape, origin, "dark")
            mask |= ~np.isfinite(dark_px)
            dark_px = np.where(np.isfinite(dark_px), dark_px, 0).astype(np.float32)
        gain = None
        if flat is not None:
            whole = np.asarray(flat, np.float64)
            usable = whole[np.isfinite(whole) & (whole > 0)]
            if usable.size == 0:
                raise CalibrationError("the flat-field image holds no positive pixel")
            median = float(np.median(usable))  # of the whole detector: the gain's reference
            flat_px = _region(whole, shape, origin, "flat-field")
            good = np.isfinite(flat_px) & (flat_px > 0)
            good &= flat_px >= FLAT_FLOOR * median
            mask |= ~good
            gain = np.where(good, median / np.where(good, flat_px, 1.0), 0).astype(np.float32)
        return cls(dark_px, gain, mask)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Corrected (k, rows, cols) or (rows, cols) float32 counts; masked pixels 0."""
        out = np.asarray(frames, np.float32)
        if self.dark is not None:
            out = out - self.dark
        if self.gain is not None:
            out = out * self.gain
        return np.where(self.mask, 0, np.maximum(out, 0)).astype(np.float32, copy=False)
