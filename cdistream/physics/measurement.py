"""What a detector makes of a crystal's diffraction: the Bragg peak anywhere within the pixel the
ROI centres on, partial coherence, photon noise on a dark background, saturated pixels, module
gaps and dead pixels. Vectorised over a batch; used to train the networks on every condition."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

__all__ = ["Measurement", "MeasurementRecipe", "blur_intensity", "measure", "peak_offsets"]

_AXES = (-2, -1)


@dataclass(frozen=True)
class MeasurementRecipe:
    """Ranges of the detector conditions, drawn independently for every pattern.

    - ``noise_free_share``: patterns without noise, background or defects;
    - ``min_photons``..``max_photons``: counts in the brightest pixel, log-uniform;
    - ``background_share``, ``max_background``: patterns with a flat dark level, mean counts per
      pixel log-uniform from 1e-2 to the maximum;
    - ``coherence_share``, ``max_coherence``: patterns whose intensity is blurred by a Gaussian
      of sigma uniform in 0..max pixels (partial coherence);
    - ``mask_share``: patterns crossed by a module gap 1 to ``max_gap`` pixels wide, and
      ``max_dead`` dead or hot pixels at most (masked);
    - ``saturation_share``: patterns whose brightest pixels saturate (above 20-90% of the peak)
      and are masked.
    The Bragg peak's centre always lies anywhere within the pixel the ROI centres on.
    """

    noise_free_share: float = 0.15
    min_photons: float = 1e2
    max_photons: float = 1e6
    background_share: float = 0.5
    max_background: float = 2.0
    coherence_share: float = 0.5
    max_coherence: float = 1.0
    mask_share: float = 0.3
    max_gap: int = 4
    max_dead: int = 4
    saturation_share: float = 0.15


@dataclass(frozen=True)
class Measurement:
    """Measured patterns as the networks see them."""

    magnitudes: np.ndarray  # float32 (k, N, N): square root of counts, 0 where not valid
    valid: np.ndarray  # bool (k, N, N): False for masked (gap, dead, saturated) pixels


def _ramp(offsets: np.ndarray, n: int) -> np.ndarray:
    """exp(2 pi i (d . x) / n) for (k, 2) offsets d: moves the pattern's zero frequency by d.
    Separable: a column of row factors times a row of column factors."""
    x = 2j * np.pi * np.arange(n) / n
    return np.exp(offsets[:, 0, None, None] * x[:, None]) * np.exp(offsets[:, 1, None, None] * x)


def _intensity(objects: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    obj = objects if offsets is None else objects * _ramp(offsets, objects.shape[-1])
    field = scipy.fft.fftshift(scipy.fft.fft2(obj, axes=_AXES), axes=_AXES)
    return field.real**2 + field.imag**2


def peak_offsets(objects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(k, 2) positions of zero frequency relative to N//2 as a ROI centred on the brightest
    pixel would see them: the brightest pixel moved to N//2, plus a uniform sub-pixel offset."""
    intensity = _intensity(objects)
    n = objects.shape[-1]
    flat = intensity.reshape(len(objects), -1).argmax(axis=1)
    brightest = np.stack(np.unravel_index(flat, (n, n)), axis=1)
    return (n // 2 - brightest) + rng.uniform(-0.5, 0.5, (len(objects), 2))


def blur_intensity(intensity: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Intensity (k, N, N) convolved (periodically) with a Gaussian of per-pattern ``sigma``
    pixels: the far field of a partially coherent beam."""
    n = intensity.shape[-1]
    k = scipy.fft.fftfreq(n)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    kernel = np.exp(-2 * np.pi**2 * np.asarray(sigma)[:, None, None] ** 2 * k2)
    blurred = scipy.fft.ifft2(scipy.fft.fft2(intensity, axes=_AXES) * kernel, axes=_AXES).real
    return np.maximum(blurred, 0)


def _defects(rng: np.random.Generator, count: int, n: int, recipe: MeasurementRecipe):
    """Boolean (count, N, N) validity with a module gap and dead pixels on some patterns."""
    valid = np.ones((count, n, n), bool)
    for k in np.flatnonzero(rng.random(count) < recipe.mask_share):
        width = int(rng.integers(1, recipe.max_gap + 1))
        start = int(rng.integers(0, n - width + 1))
        if rng.random() < 0.5:
            valid[k, start : start + width] = False
        else:
            valid[k, :, start : start + width] = False
        dead = int(rng.integers(0, recipe.max_dead + 1))
        valid[k, rng.integers(0, n, dead), rng.integers(0, n, dead)] = False
    return valid


def measure(
    objects: np.ndarray,
    rng: np.random.Generator,
    recipe: MeasurementRecipe = MeasurementRecipe(),
) -> Measurement:
    """Measure (k, N, N) complex objects under conditions drawn from ``recipe``."""
    count, n = len(objects), objects.shape[-1]
    intensity = _intensity(objects, peak_offsets(objects, rng))
    blurred = rng.random(count) < recipe.coherence_share
    if blurred.any():
        sigma = rng.uniform(0, recipe.max_coherence, blurred.sum())
        intensity[blurred] = blur_intensity(intensity[blurred], sigma)
    intensity /= np.maximum(intensity.max(axis=_AXES, keepdims=True), 1e-30)

    clean = rng.random(count) < recipe.noise_free_share
    noisy = ~clean
    counts = intensity
    valid = np.ones((count, n, n), bool)
    if noisy.any():
        lo, hi = np.log10(recipe.min_photons), np.log10(recipe.max_photons)
        photons = 10 ** rng.uniform(lo, hi, noisy.sum())
        dark = np.where(
            rng.random(noisy.sum()) < recipe.background_share,
            10 ** rng.uniform(-2, np.log10(recipe.max_background), noisy.sum()),
            0.0,
        )
        expected = intensity[noisy] * photons[:, None, None] + dark[:, None, None]
        counts = intensity.copy()
        counts[noisy] = rng.poisson(expected)
        valid[noisy] = _defects(rng, int(noisy.sum()), n, recipe)
        saturate = np.flatnonzero(noisy)[rng.random(noisy.sum()) < recipe.saturation_share]
        for k in saturate:
            level = rng.uniform(0.2, 0.9) * counts[k].max()
            valid[k] &= counts[k] < level
    magnitudes = np.sqrt(counts) * valid
    return Measurement(magnitudes.astype(np.float32), valid)
