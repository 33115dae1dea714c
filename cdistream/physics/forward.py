"""Forward model and its conventions: far-field magnitudes with zero frequency at [N//2, N//2],
photon noise, scale normalisation, reciprocal-space chi2, and the trivial ambiguities."""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

__all__ = [
    "centre",
    "centre_of_mass",
    "chi2",
    "diffraction_magnitudes",
    "fourier_shift",
    "poisson_magnitudes",
    "predicted_intensity",
    "twin",
]


def diffraction_magnitudes(obj: np.ndarray) -> np.ndarray:
    """|FT| of complex object(s) over the last two axes, fftshifted (zero frequency at N//2)."""
    field = scipy.fft.fft2(obj, axes=(-2, -1))
    return np.abs(scipy.fft.fftshift(field, axes=(-2, -1))).astype(np.float32)


def predicted_intensity(amplitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Far-field intensity |FT|^2 of a reconstruction given as amplitude and phase, zero
    frequency at N//2, in single precision (plenty for a misfit, twice as fast as double).
    For even sizes the fftshift is folded into the object as a (-1)^(row+col) checkerboard."""
    amplitude = np.asarray(amplitude, np.float32)
    phase = np.asarray(phase, np.float32)
    rows, cols = amplitude.shape[-2:]
    field = np.empty(amplitude.shape, np.complex64)
    shifted = rows % 2 == 0 and cols % 2 == 0
    if shifted:
        amplitude = amplitude * _checkerboard(rows, cols)
    np.multiply(amplitude, np.cos(phase), out=field.real)
    np.multiply(amplitude, np.sin(phase), out=field.imag)
    spectrum = scipy.fft.fft2(field, axes=(-2, -1), overwrite_x=True)
    if not shifted:
        spectrum = scipy.fft.fftshift(spectrum, axes=(-2, -1))
    return spectrum.real**2 + spectrum.imag**2


@functools.cache
def _checkerboard(rows: int, cols: int) -> np.ndarray:
    board = np.where((np.add.outer(np.arange(rows), np.arange(cols)) % 2) == 0, 1, -1)
    board = board.astype(np.float32)
    board.flags.writeable = False
    return board


def poisson_magnitudes(
    magnitudes: np.ndarray, photons: float | np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Photon-counting noise: scale each pattern so its brightest pixel holds ``photons``
    counts (a scalar, or an array broadcasting against the batch), draw Poisson counts and
    return their square root (measured magnitudes)."""
    intensity = np.asarray(magnitudes, dtype=np.float64) ** 2
    peak = intensity.max(axis=(-2, -1), keepdims=True)
    counts = rng.poisson(intensity * (photons / np.maximum(peak, 1e-30)))
    return np.sqrt(counts).astype(np.float32)


def chi2(
    measured: np.ndarray,
    amplitude: np.ndarray,
    phase: np.ndarray,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """sum((I_meas - s I_pred)^2) / sum(I_meas^2) per pattern over the ``valid`` pixels (all
    when None: masked pixels measured nothing), where ``measured`` are magnitudes at any scale
    and s is the least-squares scale between the two intensities."""
    i_meas = np.asarray(measured, np.float32) ** 2
    return intensity_chi2(i_meas, predicted_intensity(amplitude, phase), valid)


def intensity_chi2(
    measured: np.ndarray, predicted: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """:func:`chi2` of intensities (n, N, N), each at any scale. Each pattern's intensities
    are scaled to a maximum of 1 first, so float32 sums are exact enough at any photon count."""
    axes = (-2, -1)
    i_meas = np.array(measured, np.float32)
    i_pred = np.array(predicted, np.float32)
    if valid is not None:
        i_meas *= valid
        i_pred *= valid
    i_meas /= np.maximum(i_meas.max(axes, keepdims=True), 1e-30)
    i_pred /= np.maximum(i_pred.max(axes, keepdims=True), 1e-30)
    scale = (i_meas * i_pred).sum(axes) / np.maximum((i_pred**2).sum(axes), 1e-30)
    residual = ((i_meas - scale[..., None, None] * i_pred) ** 2).sum(axes)
    return (residual / np.maximum((i_meas**2).sum(axes), 1e-30)).astype(np.float32)


def fourier_shift(obj: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shift complex object(s) (n, N, N) by sub-pixel ``shift`` (n, 2) through a linear phase
    in reciprocal space: exactly magnitude-preserving, so a true ambiguity of the data."""
    n = obj.shape[-1]
    k = scipy.fft.fftfreq(n)
    ramp = np.exp(
        -2j * np.pi * (shift[:, 0, None, None] * k[:, None] + shift[:, 1, None, None] * k[None, :])
    )
    return scipy.fft.ifft2(scipy.fft.fft2(obj, axes=(-2, -1)) * ramp, axes=(-2, -1))


def centre_of_mass(amplitude: np.ndarray) -> np.ndarray:
    """Circular centre of mass (row, col) of (n, N, N) amplitudes, shape (n, 2): objects
    that straddle the edge of the periodic grid are handled too."""
    n = amplitude.shape[-1]
    phasor = np.exp(2j * np.pi * np.arange(n) / n)
    total = np.maximum(amplitude.sum(axis=(-2, -1)), 1e-30)
    rows = (amplitude.sum(axis=-1) * phasor).sum(-1) / total
    cols = (amplitude.sum(axis=-2) * phasor).sum(-1) / total
    return np.stack([np.angle(rows), np.angle(cols)], axis=-1) * n / (2 * np.pi) % n


def centre(obj: np.ndarray) -> np.ndarray:
    """Shift each object (sub-pixel, in Fourier space) so the centre of mass of its amplitude
    sits exactly on [N//2, N//2].

    This fixes the translation ambiguity for training targets. Integer rounding would not:
    objects a fraction of a pixel apart have the same magnitudes, and a network asked for
    differently rounded targets learns their blurred average.
    """
    obj = np.asarray(obj)
    batch = obj.reshape(-1, *obj.shape[-2:])
    n = batch.shape[-1]
    out = batch
    for _ in range(2):  # a second pass removes what the first one's ringing moved
        shift = n // 2 - centre_of_mass(np.abs(out))
        out = fourier_shift(out, (shift + n / 2) % n - n / 2)  # the shortest way round
    return out.astype(np.result_type(obj.dtype, np.complex64)).reshape(obj.shape)


def twin(obj: np.ndarray) -> np.ndarray:
    """The twin image: centro-symmetric inversion about [N//2, N//2] plus complex conjugate.

    An object and its twin have identical diffraction magnitudes.
    """
    flipped = np.flip(np.asarray(obj), axis=(-2, -1))
    return np.conj(np.roll(flipped, (1, 1), axis=(-2, -1)))
