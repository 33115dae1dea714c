"""How well a pattern samples its crystal, before any phasing: the inverse Fourier transform of
the measured intensity is the object's autocorrelation, which spans twice the object's extent.
N over the object's extent is the oversampling; under 2 the crystal does not fit the window
and no phasing method (network or iterative) can represent it."""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy.ndimage import label

__all__ = ["AUTOCORRELATION_THRESHOLD", "object_extent", "oversampling"]

AUTOCORRELATION_THRESHOLD = 0.03  # of the autocorrelation's peak, the noise spike removed


def object_extent(counts: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The object's extent along rows and columns in pixels of the window, (2,) for one
    (N, N) pattern of counts (zero frequency near N//2): half the extent of the connected
    region around zero lag where the autocorrelation exceeds
    :data:`AUTOCORRELATION_THRESHOLD` of its peak. The photon noise's spike at zero lag and
    a flat dark floor (the pattern's median over the window's border) are removed first, and
    the pattern is tapered to its edges (a Hann window), so that one cut by the window does not
    ring."""
    i = np.asarray(counts, np.float64)
    if valid is not None:
        i = i * valid
    border = np.concatenate([i[0], i[-1], i[1:-1, 0], i[1:-1, -1]])
    i = np.maximum(i - np.median(border), 0)
    if valid is not None:
        i = i * valid
    n0, n1 = i.shape
    # a Hann window: a pattern cut by the window's edge would ring across the autocorrelation
    i = i * np.outer(np.hanning(n0 + 2)[1:-1], np.hanning(n1 + 2)[1:-1])
    auto = np.abs(scipy.fft.ifft2(scipy.fft.ifftshift(i)))
    # zero lag holds the noise (sum of counts): take it from its neighbours
    auto[0, 0] = (auto[1, 0] + auto[-1, 0] + auto[0, 1] + auto[0, -1]) / 4
    auto = scipy.fft.fftshift(auto)
    region, _ = label(auto > AUTOCORRELATION_THRESHOLD * auto.max())
    centre = region[n0 // 2, n1 // 2]
    inside = region == centre if centre else np.zeros_like(region, bool)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if len(rows) == 0:
        return np.zeros(2)
    return np.array([(np.ptp(rows) + 1) / 2, (np.ptp(cols) + 1) / 2])


def oversampling(counts: np.ndarray, valid: np.ndarray | None = None) -> float:
    """N over the object's longer extent (:func:`object_extent`): 2 is the least at which a
    crystal fits its window; inf for a pattern with no measurable extent."""
    extent = float(object_extent(counts, valid).max())
    return float(np.shape(counts)[-1]) / extent if extent > 0 else float("inf")
