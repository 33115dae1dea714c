"""Ambiguity-invariant comparison of reconstructions with ground truth.

Diffraction magnitudes cannot tell an object from its translated copy, from a copy with a
global phase offset, or from its twin image, so every score first registers the
reconstruction (each twin candidate, best circular shift, best global phase) on the truth.
Phases are compared modulo the best-fit linear ramp: a ramp is where the ROI put the Bragg
peak's centre, not strain (as in BCDI practice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .forward import fourier_shift, twin
from .ramp import remove_ramp

__all__ = ["Comparison", "align", "compare", "extent", "twin_distinction"]


@dataclass(frozen=True)
class Comparison:
    """Per-pattern scores, each an array of shape (n,)."""

    iou: np.ndarray  # support IoU, supports at half maximum of the amplitude
    amplitude_error: np.ndarray  # ||a s - A|| / ||A|| with the best scale s
    phase_rmse: np.ndarray  # radians, inside the true support, modulo offset and linear ramp
    twinned: np.ndarray  # bool: the reconstruction matched as the twin image

    def medians(self) -> dict[str, float]:
        """Median of each score, for reports and model cards."""
        return {
            "iou": float(np.median(self.iou)),
            "amplitude_error": float(np.median(self.amplitude_error)),
            "phase_rmse": float(np.median(self.phase_rmse)),
            "twin_fraction": float(np.mean(self.twinned)),
        }


def _register(candidate: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift each candidate (sub-pixel, magnitude-preserving) to best overlap the truth by
    amplitude cross-correlation, then rotate its global phase onto the truth.
    Returns (registered, |<truth, registered>|)."""
    from skimage.registration import phase_cross_correlation  # scikit-image only when scoring

    shifts = np.stack(
        [
            phase_cross_correlation(np.abs(t), np.abs(c), upsample_factor=20, normalization=None)[0]
            for t, c in zip(truth, candidate, strict=True)
        ]
    )
    shifted = fourier_shift(candidate, shifts)
    overlap = (truth * np.conj(shifted)).sum(axis=(-2, -1))
    registered = shifted * np.exp(1j * np.angle(overlap))[:, None, None]
    return registered, np.abs(overlap)


def _half_max_support(amplitude: np.ndarray) -> np.ndarray:
    return amplitude > 0.5 * amplitude.max(axis=(-2, -1), keepdims=True)


def _misfit(registered: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Amplitude error squared plus the mean square ramp-free phase difference on the true
    support, per pattern: what decides between an object and its twin."""
    a_true, a_rec = np.abs(truth), np.abs(registered)
    axes = (-2, -1)
    scale = (a_true * a_rec).sum(axes) / np.maximum((a_rec**2).sum(axes), 1e-30)
    amp = ((a_rec * scale[:, None, None] - a_true) ** 2).sum(axes)
    amp /= np.maximum((a_true**2).sum(axes), 1e-30)
    weight = a_true * _half_max_support(a_true)
    rest = remove_ramp(np.angle(registered * np.conj(truth)), weight)
    return amp + (weight * rest**2).sum(axes) / np.maximum(weight.sum(axes), 1e-30)


def align(reconstruction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Register complex reconstruction(s) on the truth, both (n, N, N) or (N, N): pick the
    object or its twin (whichever fits better modulo a phase ramp), the best sub-pixel circular
    shift and the best global phase.
    Returns (aligned reconstructions, whether each was matched as the twin)."""
    recon = np.asarray(reconstruction, dtype=np.complex128).reshape(-1, *np.shape(truth)[-2:])
    true = np.asarray(truth, dtype=np.complex128).reshape(recon.shape)
    # a ramp only places the pattern's centre: remove it first, so that shifting cannot smear
    # a ramp that does not fit the periodic window
    amp = np.abs(recon)
    weight = amp * (amp > 0.1 * amp.max(axis=(-2, -1), keepdims=True))
    recon = amp * np.exp(1j * remove_ramp(np.angle(recon), weight))
    direct, _ = _register(recon, true)
    flipped, _ = _register(twin(recon), true)
    twinned = _misfit(flipped, true) < _misfit(direct, true)
    return np.where(twinned[:, None, None], flipped, direct), twinned


def twin_distinction(obj: np.ndarray) -> np.ndarray:
    """How far each object (n, N, N) is from its own twin image, registered on it (shift,
    global phase, ramp): near 0, no measurement can tell the two apart."""
    true = np.asarray(obj, dtype=np.complex128).reshape(-1, *np.shape(obj)[-2:])
    registered, _ = _register(twin(true), true)
    return _misfit(registered, true)


def compare(reconstruction: np.ndarray, truth: np.ndarray) -> Comparison:
    """Score complex reconstruction(s) against complex truth, shape (n, N, N) or (N, N)."""
    best, twinned = align(reconstruction, truth)
    true = np.asarray(truth, dtype=np.complex128).reshape(best.shape)

    a_true, a_rec = np.abs(true), np.abs(best)
    s_true, s_rec = _half_max_support(a_true), _half_max_support(a_rec)
    axes = (-2, -1)
    union = np.maximum((s_true | s_rec).sum(axes), 1)
    iou = (s_true & s_rec).sum(axes) / union

    scale = (a_true * a_rec).sum(axes) / np.maximum((a_rec**2).sum(axes), 1e-30)
    amp_err = np.linalg.norm((a_rec * scale[:, None, None] - a_true).reshape(len(true), -1), axis=1)
    amp_err /= np.maximum(np.linalg.norm(a_true.reshape(len(true), -1), axis=1), 1e-30)

    rest = remove_ramp(np.angle(best * np.conj(true)), a_true * s_true)
    rmse = np.sqrt((rest**2 * s_true).sum(axes) / np.maximum(s_true.sum(axes), 1))
    return Comparison(iou=iou, amplitude_error=amp_err, phase_rmse=rmse, twinned=twinned)


def extent(amplitude: np.ndarray) -> np.ndarray:
    """Pixels across: the longer side of the bounding box of each amplitude's half-maximum
    support (k,). N / extent is the oversampling along that axis; size bins use this."""
    amp = np.abs(np.asarray(amplitude)).reshape(-1, *np.shape(amplitude)[-2:])
    support = _half_max_support(amp)
    rows, cols = support.any(axis=2), support.any(axis=1)
    # the smallest circular arc holding the support: objects may straddle the periodic edge
    return np.maximum(_arc(rows), _arc(cols)).astype(float)


def _arc(occupied: np.ndarray) -> np.ndarray:
    """Length of the shortest circular interval covering the True entries of each row."""
    n = occupied.shape[-1]
    out = np.empty(len(occupied), int)
    for k, occ in enumerate(occupied):
        idx = np.flatnonzero(occ)
        if len(idx) == 0:
            out[k] = 0
            continue
        gaps = np.diff(np.concatenate([idx, [idx[0] + n]]))
        out[k] = n - (gaps.max() - 1)
    return out
