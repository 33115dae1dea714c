"""Render detector frames: a Bragg diffraction pattern centred anywhere on the detector (sub-pixel),
partially coherent, scaled to a photon budget and Poisson-sampled, on a dark background with hot
pixels, a masked gap and a count limit at which pixels saturate. The far field comes from
:mod:`sim_detector.farfield`, written independently of cdistream's physics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .farfield import Conditions, detector_counts, far_field

__all__ = ["DetectorModel"]


@dataclass(frozen=True)
class DetectorModel:
    """A pixel detector: geometry, dtype, dark level, defects and flux."""

    shape: tuple[int, int] = (512, 512)
    dtype: str = "uint16"
    photons: float = 3e4  # expected counts in the brightest pixel of the pattern
    dark: float = 0.05  # mean dark counts per pixel
    hot_pixels: int = 6
    gap_rows: int = 4  # a horizontal module gap this many rows high, a third of the way down
    seed: int = 0
    pixel_size: float = 75e-6  # metres, as an EIGER
    distance: float = 1.5  # metres, sample to detector
    wavelength: float = 1.378  # angstroms (9 keV)
    count_time: float = 1e-3  # seconds per frame
    coherence: float = 0.0  # partial coherence: sigma of the intensity blur, pixels
    saturation: float | None = None  # counts at which a pixel saturates (None: the dtype's)

    def metadata(self) -> dict[str, float]:
        """What a real detector announces at the start of a series, under cdistream's names."""
        return {
            "beam_center_x": self.shape[1] / 2,
            "beam_center_y": self.shape[0] / 2,
            "pixel_size_x": self.pixel_size,
            "pixel_size_y": self.pixel_size,
            "detector_distance": self.distance,
            "wavelength": self.wavelength,
            "count_time": self.count_time,
            "saturation_value": self.saturation_value(),
        }

    def saturation_value(self) -> float:
        """The largest count a pixel records; what the detector announces."""
        if self.saturation is not None:
            return float(self.saturation)
        dtype = np.dtype(self.dtype)
        return float(np.iinfo(dtype).max - 1) if dtype.kind in "ui" else 1e9

    def mask(self) -> np.ndarray:
        """The static pixel mask (True = unusable) a detector announces: the module gap and
        its known hot pixels."""
        mask = np.zeros(self.shape, bool)
        if self.gap_rows:
            top = self.shape[0] // 3
            mask[top : top + self.gap_rows] = True
        mask[self._hot()] = True
        return mask

    def _hot(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed + 7919)
        return rng.integers(0, self.shape[0], self.hot_pixels), rng.integers(
            0, self.shape[1], self.hot_pixels
        )

    def render(
        self, obj: np.ndarray, peak_row: float, peak_col: float, rng: np.random.Generator
    ) -> np.ndarray:
        """One frame: the far field of ``obj`` with its zero frequency at detector position
        (peak_row, peak_col), anywhere within a pixel."""
        dtype = np.dtype(self.dtype)
        info = np.iinfo(dtype) if dtype.kind in "ui" else None
        frame = rng.poisson(self.dark, self.shape).astype(np.float64)
        n = obj.shape[-1]
        centre_row, centre_col = int(round(peak_row)), int(round(peak_col))
        intensity = far_field(obj, (peak_row - centre_row, peak_col - centre_col))
        counts = detector_counts(intensity, Conditions(self.photons, 0.0, self.coherence), rng)
        top, left = centre_row - n // 2, centre_col - n // 2
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + n, self.shape[0]), min(left + n, self.shape[1])
        if r1 > r0 and c1 > c0:
            frame[r0:r1, c0:c1] += counts[r0 - top : r1 - top, c0 - left : c1 - left]
        hot_r, hot_c = self._hot()
        frame[hot_r, hot_c] = min(self.saturation_value(), 50 * self.photons)
        frame = np.minimum(frame, self.saturation_value())  # pixels saturate
        if info is not None:
            frame[self.mask()] = info.max  # DECTRIS convention: all ones = invalid pixel
        return frame.astype(dtype)
