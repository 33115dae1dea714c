"""Refinement that stops at the data's noise: error reduction from a given start, within a
support it may tighten but never grow, judged on pixels it is not fitted to.

A few per cent of the measured pixels are held out of the iterations (cross-validation, as a
free R factor in crystallography). While the image learns the crystal their misfit falls with
the rest; once it starts fitting the noise, what it learns no longer predicts pixels it never
saw and their misfit stops falling or rises. The iterate where the held-out misfit was lowest
is kept. Every figure is a ratio, so nothing depends on the input's absolute scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.ndimage import gaussian_filter

__all__ = ["HeldOut", "RefineSettings", "held_out_pixels", "refine_cross_validated"]

_AXES = (-2, -1)
_TINY = np.float32(1e-30)
TIE = 1e-3  # relative: a held-out misfit lower by less is no better (see below)


@dataclass(frozen=True)
class RefineSettings:
    """How the refinement runs (defaults chosen on the 34-ID-C scan's 3D slices and the
    independent simulated sets: ``models/MODEL_CARD.md``, "Real measurement" and "Known
    limits")."""

    held_out: float = 0.05  # share of the valid pixels kept out of the iterations
    check_every: int = 5  # iterations between two looks at the held-out misfit
    shrinkwrap_every: int = 10  # iterations; 0: the start's support is kept throughout
    sigma: float = 1.0  # the shrink-wrap's Gaussian, pixels
    threshold: float = 0.1  # of the blurred amplitude's maximum
    seed: int = 0  # which pixels are held out: one fixed pattern, the same for every frame


@dataclass(frozen=True)
class HeldOut:
    """What the held-out pixels said: per frame the iteration kept (0: the start itself) and
    the held-out misfit at the start and at that iteration."""

    iterations: np.ndarray  # int (n,)
    misfit_start: np.ndarray  # float (n,)
    misfit_kept: np.ndarray  # float (n,)


def held_out_pixels(n: int, share: float, seed: int = 0) -> np.ndarray:
    """One fixed (n, n) pattern of held-out pixels: the same for every frame, so a frame's
    refinement does not depend on the batch it came in."""
    return np.random.default_rng([seed, n]).random((n, n)) < share


def _misfit(field_abs: np.ndarray, modulus: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """sum((s |F| - m)^2) / sum(m^2) over ``pixels``, s the least-squares scale: a magnitude
    misfit, where Poisson noise weighs about the same in every pixel, bright or faint."""
    a, m = field_abs * pixels, modulus * pixels
    s = (a * m).sum(_AXES) / np.maximum((a * a).sum(_AXES), _TINY)
    return ((s[:, None, None] * a - m) ** 2).sum(_AXES) / np.maximum((m * m).sum(_AXES), _TINY)


def refine_cross_validated(
    magnitudes: np.ndarray,
    start: np.ndarray,
    support: np.ndarray,
    iterations: int,
    valid: np.ndarray | None = None,
    settings: RefineSettings = RefineSettings(),
) -> tuple[np.ndarray, HeldOut]:
    """Refine complex ``start`` objects (n, N, N) against fftshifted ``magnitudes`` (n, N, N)
    by at most ``iterations`` of error reduction within ``support`` (bool, n, N, N);
    ``valid`` False leaves a pixel's modulus free. Shrink-wrap may only take pixels out of the
    support. Returns the objects at each frame's lowest held-out misfit (complex64) and what
    the held-out pixels said. Single precision, each pattern divided by its maximum first:
    twice as fast as double, and the same to the last bit at any input scale."""
    m = np.asarray(magnitudes, np.float64)
    m = (m / np.maximum(m.max(axis=_AXES, keepdims=True), _TINY)).astype(np.float32)
    n = m.shape[-1]
    modulus = scipy.fft.ifftshift(m, axes=_AXES)
    measured = np.ones(m.shape, bool) if valid is None else np.asarray(valid, bool).copy()
    measured = scipy.fft.ifftshift(measured.reshape(m.shape), axes=_AXES)
    held = scipy.fft.ifftshift(held_out_pixels(n, settings.held_out, settings.seed)) & measured
    free = ~measured | held  # the held-out pixels' modulus is as free as a masked one's
    outer = scipy.fft.ifftshift(np.asarray(support, bool).reshape(m.shape), axes=_AXES)
    supp = outer.copy()
    obj = scipy.fft.ifftshift(np.asarray(start, np.complex64).reshape(m.shape), axes=_AXES)
    # the start brought to the measured scale (Parseval): nothing depends on the input's scale
    energy = (np.abs(scipy.fft.fft2(obj, axes=_AXES)) ** 2).sum(_AXES)
    obj = obj * np.sqrt((modulus**2).sum(_AXES) / np.maximum(energy, _TINY))[:, None, None]
    obj = obj * supp

    field = scipy.fft.fft2(obj, axes=_AXES)
    magnitude = np.abs(field)
    first = _misfit(magnitude, modulus, held)
    best, best_misfit = obj.copy(), first.copy()
    kept = np.zeros(len(m), int)
    # every look to the last: the held-out misfit can plateau and fall again (a large strain
    # is learnt slowly), so stopping at the first plateau keeps too little of it
    for it in range(1, iterations + 1):
        ratio = modulus / np.maximum(magnitude, _TINY)
        ratio[free] = 1.0
        obj = scipy.fft.ifft2(field * ratio, axes=_AXES) * supp
        if settings.shrinkwrap_every and it % settings.shrinkwrap_every == 0:
            blurred = gaussian_filter(np.abs(obj), (0, settings.sigma, settings.sigma), mode="wrap")
            supp = outer & (blurred > settings.threshold * blurred.max(_AXES, keepdims=True))
            obj = obj * supp
        field = scipy.fft.fft2(obj, axes=_AXES)
        magnitude = np.abs(field)  # the next modulus step's and this look's
        if it % settings.check_every and it != iterations:
            continue
        misfit = _misfit(magnitude, modulus, held)
        # a new lowest only by more than TIE: closer misfits are the same fit, and letting
        # rounding decide between them would make the image depend on the input's scale
        better = misfit < best_misfit * (1 - TIE)
        best[better], best_misfit[better], kept[better] = obj[better], misfit[better], it
    return scipy.fft.fftshift(best, axes=_AXES), HeldOut(kept, first, best_misfit)
