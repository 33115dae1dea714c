"""What a reconstruction is: amplitude, phase, support and chi2, with the product's conventions
(support = amplitude above 0.1, phase in radians in [-pi, pi] and 0 outside the support)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from cdistream.physics import chi2

__all__ = ["SUPPORT_THRESHOLD", "Reconstruction", "finish", "normalise_amplitude"]

SUPPORT_THRESHOLD = 0.1  # the paper's threshold on the normalised amplitude


@dataclass(frozen=True)
class Reconstruction:
    """Reconstructions of n patterns: arrays of shape (n, N, N), chi2 of shape (n,)."""

    amplitude: np.ndarray  # float32 in [0, 1], maximum 1 per pattern
    phase: np.ndarray  # float32 radians in [-pi, pi], 0 outside the support
    support: np.ndarray  # bool, amplitude > SUPPORT_THRESHOLD
    chi2: np.ndarray  # float32, reciprocal-space misfit against the measured pattern

    def __len__(self) -> int:
        return len(self.chi2)

    @staticmethod
    def concatenate(parts: list[Reconstruction]) -> Reconstruction:
        """One Reconstruction from several, in order."""
        names = [f.name for f in fields(Reconstruction)]
        return Reconstruction(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))

    def complex_object(self) -> np.ndarray:
        """amplitude * exp(i phase), for comparisons and further phase retrieval."""
        return self.amplitude * np.exp(1j * self.phase)


def _centre_phase(phase: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Shift each phase map so its weighted mean is 0 where that keeps it inside [-pi, pi]
    (a global phase offset is not measurable), then wrap what is left outside."""
    axes = (-2, -1)
    total = np.maximum(weight.sum(axes), 1e-30)
    mean = (weight * phase).sum(axes) / total
    big, small = np.pi * 1e3, -np.pi * 1e3
    hi = np.where(weight > 0, phase, small).max(axes)
    lo = np.where(weight > 0, phase, big).min(axes)
    offset = np.clip(mean, np.minimum(hi - np.pi, lo + np.pi), np.maximum(hi - np.pi, lo + np.pi))
    shifted = phase - offset[:, None, None].astype(phase.dtype)
    # wrap into [-pi, pi): floor is vectorised, float remainder (%) is 8x slower
    return shifted - np.float32(2 * np.pi) * np.floor(
        (shifted + np.float32(np.pi)) / np.float32(2 * np.pi)
    )


def normalise_amplitude(amplitude: np.ndarray) -> np.ndarray:
    """Non-negative float32 amplitudes with maximum 1 per pattern."""
    amp = np.maximum(np.asarray(amplitude, np.float32), np.float32(0))
    amp /= np.maximum(amp.max(axis=(-2, -1), keepdims=True), np.float32(1e-30))
    return amp


def finish(measured: np.ndarray, amplitude: np.ndarray, phase: np.ndarray) -> Reconstruction:
    """Apply the conventions to raw (n, N, N) amplitude and phase estimates and score them
    against the ``measured`` magnitudes."""
    amp = normalise_amplitude(amplitude)
    support = amp > SUPPORT_THRESHOLD
    phase = _centre_phase(np.asarray(phase, np.float32), amp * support)
    phase *= support  # 0 outside the support
    return Reconstruction(amp, phase, support, chi2(measured, amp, phase))
