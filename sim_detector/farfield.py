"""The far field of a simulated crystal as the detector records it, computed independently of
:mod:`cdistream.physics` (explicit Fourier sums instead of FFTs): the Bragg peak's centre at
any sub-pixel position, partial coherence, photon counting on a dark background."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Conditions", "detector_counts", "far_field", "peak_centred"]


def _dft(n: int, size: int, offset: float) -> np.ndarray:
    """(size, n) matrix of exp(-2 pi i f x / n) at frequencies f = k - size//2 - offset, so that
    zero frequency falls on row size//2 + offset."""
    freq = np.arange(size) - size // 2 - offset
    return np.exp(-2j * np.pi * np.outer(freq, np.arange(n)) / n)


def far_field(
    obj: np.ndarray, offset: tuple[float, float] = (0.0, 0.0), size: int | None = None
) -> np.ndarray:
    """Intensity |sum_x obj(x) exp(-2 pi i f.x / n)|^2 sampled on ``size`` x ``size`` pixels (one
    pixel = one Fourier frequency of the n x n object), zero frequency at size//2 + offset."""
    n = obj.shape[-1]
    size = size or n
    field = _dft(n, size, offset[0]) @ obj @ _dft(n, size, offset[1]).T
    return field.real**2 + field.imag**2


def peak_centred(obj: np.ndarray, subpixel: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The pattern a ROI centred on the brightest pixel sees: the brightest frequency moved to
    the centre pixel, the true zero frequency ``subpixel`` away from where that leaves it."""
    n = obj.shape[-1]
    centred = far_field(obj)
    row, col = np.unravel_index(int(np.argmax(centred)), centred.shape)
    offset = (n // 2 - row + subpixel[0], n // 2 - col + subpixel[1])
    return far_field(obj, offset)


def _gaussian_circulant(n: int, sigma: float) -> np.ndarray:
    d = np.arange(n)
    d = np.minimum(d, n - d)
    kernel = np.exp(-0.5 * (d / sigma) ** 2)
    kernel /= kernel.sum()
    return np.stack([np.roll(kernel, k) for k in range(n)])


@dataclass(frozen=True)
class Conditions:
    """How the detector records a pattern: photons in the brightest pixel (None = noise-free),
    mean dark counts per pixel, partial coherence (sigma of the intensity blur, pixels)."""

    photons: float | None = None
    dark: float = 0.0
    coherence: float = 0.0


def detector_counts(
    intensity: np.ndarray, conditions: Conditions, rng: np.random.Generator
) -> np.ndarray:
    """Counts (float64) the detector records: the intensity blurred by partial coherence,
    scaled to the photon budget, plus dark counts, Poisson-sampled. Noise-free: the intensity
    scaled to a maximum of 1."""
    if conditions.coherence > 0:
        rows = _gaussian_circulant(intensity.shape[0], conditions.coherence)
        cols = _gaussian_circulant(intensity.shape[1], conditions.coherence)
        intensity = rows @ intensity @ cols.T
    intensity = intensity / max(intensity.max(), 1e-300)
    if conditions.photons is None:
        return intensity
    return rng.poisson(intensity * conditions.photons + conditions.dark).astype(np.float64)
