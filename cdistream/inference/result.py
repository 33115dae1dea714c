"""What a reconstruction is: amplitude, phase, support, chi2 and where the Bragg peak's centre
lies, with the product's conventions (support = amplitude above 0.1; phase in radians in
[-pi, pi), 0 outside the support, its best-fit linear ramp removed: a ramp only says where the
peak's centre lies within the ROI's centre pixel, which ``peak_offset`` reports)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from cdistream.physics import chi2, plane_fit, ramp_plane, ramp_to_offset

__all__ = ["SUPPORT_THRESHOLD", "Reconstruction", "finish", "normalise_amplitude"]

SUPPORT_THRESHOLD = 0.1  # the paper's threshold on the normalised amplitude


@dataclass(frozen=True)
class Reconstruction:
    """Reconstructions of n patterns: arrays of shape (n, N, N), chi2 (n,), peak_offset (n, 2)."""

    amplitude: np.ndarray  # float32 in [0, 1], maximum 1 per pattern
    phase: np.ndarray  # float32 radians in [-pi, pi), 0 outside the support, ramp removed
    support: np.ndarray  # bool, amplitude > SUPPORT_THRESHOLD
    chi2: np.ndarray  # float32, reciprocal-space misfit against the measured pattern
    peak_offset: np.ndarray  # float32 (row, col): zero frequency minus the ROI centre, pixels

    def __len__(self) -> int:
        return len(self.chi2)

    @staticmethod
    def concatenate(parts: list[Reconstruction]) -> Reconstruction:
        """One Reconstruction from several, in order."""
        names = [f.name for f in fields(Reconstruction)]
        return Reconstruction(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))

    def select(self, index: np.ndarray) -> Reconstruction:
        """The reconstructions at ``index`` (an index array or boolean mask)."""
        return Reconstruction(*(getattr(self, f.name)[index] for f in fields(Reconstruction)))

    def replace(self, index: np.ndarray, other: Reconstruction) -> Reconstruction:
        """A copy with the reconstructions at ``index`` taken from ``other`` (same order)."""
        out = []
        for f in fields(Reconstruction):
            values = getattr(self, f.name).copy()
            values[index] = getattr(other, f.name)
            out.append(values)
        return Reconstruction(*out)

    def complex_object(self) -> np.ndarray:
        """amplitude * exp(i phase), for comparisons and further phase retrieval."""
        return self.amplitude * np.exp(1j * self.phase)


def normalise_amplitude(amplitude: np.ndarray) -> np.ndarray:
    """Non-negative float32 amplitudes with maximum 1 per pattern."""
    amp = np.maximum(np.asarray(amplitude, np.float32), np.float32(0))
    amp /= np.maximum(amp.max(axis=(-2, -1), keepdims=True), np.float32(1e-30))
    return amp


def _wrap(phase: np.ndarray) -> np.ndarray:
    """Into [-pi, pi); floor is vectorised, float remainder (%) is 8x slower."""
    two_pi = np.float32(2 * np.pi)
    return phase - two_pi * np.floor((phase + np.float32(np.pi)) / two_pi)


def finish(
    measured: np.ndarray,
    amplitude: np.ndarray,
    phase: np.ndarray,
    valid: np.ndarray | None = None,
    ramp: np.ndarray | None = None,
) -> Reconstruction:
    """Apply the conventions to raw (n, N, N) amplitude and phase estimates and score them
    against the ``measured`` magnitudes (on the ``valid`` pixels).

    ``ramp`` (n, 3): the phase's best-fit plane when the caller has it (wrapped phases need
    :func:`cdistream.physics.fit_ramp`); else fitted here in closed form, which assumes the
    unwrapped phase a network outputs. chi2 scores the phase as estimated, ramp included (the
    ramp is what places the pattern's centre); the published phase has it removed."""
    amp = normalise_amplitude(amplitude)
    support = amp > SUPPORT_THRESHOLD
    raw = np.asarray(phase, np.float32)
    if ramp is None:
        ramp = plane_fit(raw, amp * support)
    n = raw.shape[-1]
    published = _wrap(raw - ramp_plane(ramp, n)) * support
    misfit = chi2(measured, amp, raw, valid)
    offset = ramp_to_offset(ramp, n).astype(np.float32)
    return Reconstruction(amp, published, support, misfit, offset)
