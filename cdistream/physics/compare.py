"""Ambiguity-invariant comparison of reconstructions with ground truth.

Diffraction magnitudes cannot tell an object from its translated copy, from a copy with a
global phase offset, or from its twin image, so every score first registers the
reconstruction (each twin candidate, best circular shift, best global phase) on the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.registration import phase_cross_correlation

from .forward import fourier_shift, twin

__all__ = ["Comparison", "align", "compare"]


@dataclass(frozen=True)
class Comparison:
    """Per-pattern scores, each an array of shape (n,)."""

    iou: np.ndarray  # support IoU, supports at half maximum of the amplitude
    amplitude_error: np.ndarray  # ||a s - A|| / ||A|| with the best scale s
    phase_rmse: np.ndarray  # radians, inside the true support, global offset removed
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


def align(reconstruction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Register complex reconstruction(s) on the truth, both (n, N, N) or (N, N): pick the
    object or its twin, the best circular shift and the best global phase.
    Returns (aligned reconstructions, whether each was matched as the twin)."""
    recon = np.asarray(reconstruction, dtype=np.complex128).reshape(-1, *np.shape(truth)[-2:])
    true = np.asarray(truth, dtype=np.complex128).reshape(recon.shape)
    direct, score_direct = _register(recon, true)
    flipped, score_twin = _register(twin(recon), true)
    twinned = score_twin > score_direct
    return np.where(twinned[:, None, None], flipped, direct), twinned


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

    diff = np.angle(best * np.conj(true))
    rmse = np.empty(len(true))
    for k in range(len(true)):
        d = diff[k][s_true[k]]
        d = np.angle(np.exp(1j * (d - np.angle(np.exp(1j * d).mean()))))  # remove global offset
        rmse[k] = np.sqrt(np.mean(d**2))
    return Comparison(iou=iou, amplitude_error=amp_err, phase_rmse=rmse, twinned=twinned)
