"""One orientation through a series: the twin image, a translation and a global phase offset
are exact ambiguities of one pattern, but a series is one crystal. Each reconstruction is
registered on the previous one of the same run, so a plan sees a continuous evolution, never
a flipped phase."""

from __future__ import annotations

import numpy as np
import scipy.fft

from cdistream.physics import twin

from .result import SUPPORT_THRESHOLD, Reconstruction

__all__ = ["SeriesRegistration"]


def _roll_each(fields: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """np.roll of each (N, N) field of (m, N, N) by its own integer (row, col) shift."""
    n = fields.shape[-1]
    grid = np.arange(n)
    r = (grid[None, :] - rows[:, None]) % n  # (m, N): source row of each output row
    c = (grid[None, :] - cols[:, None]) % n
    return fields[np.arange(len(fields))[:, None, None], r[:, :, None], c[:, None, :]]


class SeriesRegistration:
    """Call :meth:`register` on each batch of a run, in frame order; :meth:`reset` between runs.

    For each frame: the object or its twin, whichever overlaps the previous frame better (by the
    complex overlap, which compares shape and strain), shifted by the integer translation that
    best overlaps its amplitude, and turned by the global phase that best matches the previous
    frame's. The first frame of a run keeps the networks' orientation and the ramp-free,
    zero-mean phase convention."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self.flips = 0  # frames published as the twin of what the networks returned

    def reset(self) -> None:
        self._previous = None

    def register(self, result: Reconstruction) -> Reconstruction:
        """The batch registered on the run's previous frame (vectorised: every frame of the
        batch against the last one published before it; a batch spans milliseconds)."""
        objects = result.amplitude * np.exp(1j * result.phase)
        if self._previous is None:
            self._previous = objects[0]
        n = len(objects)
        candidates = np.concatenate([objects, twin(objects)])  # (2n, N, N)
        reference = self._previous
        xcorr = scipy.fft.ifft2(
            scipy.fft.fft2(np.abs(reference)) * np.conj(scipy.fft.fft2(np.abs(candidates)))
        ).real
        flat = xcorr.reshape(2 * n, -1).argmax(axis=1)
        rows, cols = np.divmod(flat, xcorr.shape[-1])
        moved = _roll_each(candidates, rows, cols)
        overlap = (np.conj(moved) * reference).sum(axis=(1, 2))
        flipped = np.abs(overlap[n:]) > np.abs(overlap[:n])
        pick = np.arange(n) + n * flipped
        aligned = moved[pick] * np.exp(1j * np.angle(overlap[pick]))[:, None, None]
        self.flips += int(flipped.sum())
        self._previous = aligned[-1]
        amplitude = np.abs(aligned).astype(np.float32)
        support = amplitude > SUPPORT_THRESHOLD
        phase = (np.angle(aligned) * support).astype(np.float32)
        return Reconstruction(amplitude, phase, support, result.chi2, result.peak_offset)
