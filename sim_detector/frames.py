"""Render detector frames: a Bragg diffraction pattern at a given detector position, scaled to
a photon budget and Poisson-sampled, on a dark background with hot pixels and a masked gap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdistream.physics import diffraction_magnitudes

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
        }

    def mask(self) -> np.ndarray:
        """The static pixel mask (True = unusable): the module gap."""
        mask = np.zeros(self.shape, bool)
        if self.gap_rows:
            top = self.shape[0] // 3
            mask[top : top + self.gap_rows] = True
        return mask

    def _hot(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed + 7919)
        return rng.integers(0, self.shape[0], self.hot_pixels), rng.integers(
            0, self.shape[1], self.hot_pixels
        )

    def render(
        self, obj: np.ndarray, peak_row: float, peak_col: float, rng: np.random.Generator
    ) -> np.ndarray:
        """One frame: |FT(obj)|^2, zero frequency on pixel (round(peak_row), round(peak_col))."""
        dtype = np.dtype(self.dtype)
        info = np.iinfo(dtype) if dtype.kind in "ui" else None
        frame = rng.poisson(self.dark, self.shape).astype(np.float64)
        intensity = diffraction_magnitudes(obj).astype(np.float64) ** 2
        intensity *= self.photons / intensity.max()
        n = intensity.shape[0]
        top, left = int(round(peak_row)) - n // 2, int(round(peak_col)) - n // 2
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + n, self.shape[0]), min(left + n, self.shape[1])
        if r1 > r0 and c1 > c0:
            patch = intensity[r0 - top : r1 - top, c0 - left : c1 - left]
            frame[r0:r1, c0:c1] += rng.poisson(patch)
        hot_r, hot_c = self._hot()
        top_value = info.max - 1 if info is not None else 1e9
        frame[hot_r, hot_c] = min(top_value, 50 * self.photons)
        if info is not None:
            frame = np.minimum(frame, info.max - 1)  # saturate below the invalid marker
            frame[self.mask()] = info.max  # DECTRIS convention: all ones = invalid pixel
        return frame.astype(dtype)
