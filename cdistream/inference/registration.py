"""One orientation through a series: the twin image, a translation and a global phase offset
are exact ambiguities of one pattern, but a series is one crystal. Each reconstruction is
registered on the previous one of the same run, so a plan sees a continuous evolution, never
a flipped phase."""

from __future__ import annotations

import numpy as np
import scipy.fft

from cdistream.physics import centre_of_mass, fourier_shift, plane_fit, ramp_plane, twin

from .result import SUPPORT_THRESHOLD, Reconstruction

__all__ = ["FLIP_RATIO", "SeriesRegistration"]

# the twin replaces the networks' own orientation only when it matches the series' reference
# this many times better: the networks' orientation is itself consistent through a series (they
# learnt one of the two for each pattern, continuously), and a matching criterion alone, on
# noisy reconstructions of weakly strained crystals, flipped frames the networks had right
# (measured: 0.5 with the smoothed reference below left no flip the networks had not made)
FLIP_RATIO = 0.5


def _roll_each(fields: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """np.roll of each (N, N) field of (m, N, N) by its own integer (row, col) shift."""
    n = fields.shape[-1]
    grid = np.arange(n)
    r = (grid[None, :] - rows[:, None]) % n  # (m, N): source row of each output row
    c = (grid[None, :] - cols[:, None]) % n
    return fields[np.arange(len(fields))[:, None, None], r[:, :, None], c[:, None, :]]


def _misfit(moved: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(misfit, overlap sum(conj(candidate) * reference)) of each aligned candidate (m, N, N)
    against the reference (N, N): the amplitude error after the best scale plus the mean
    square phase difference, less its best-fit plane (offset and ramp), over the reference's
    half-maximum support. Phase enters to first order here, unlike in the overlap's
    magnitude, where a weak strain (or a blurred amplitude) leaves an object and its twin
    nearly equal."""
    a_ref, a_mov = np.abs(reference), np.abs(moved)
    scale = (a_mov * a_ref).sum(axis=(1, 2)) / np.maximum((a_mov**2).sum(axis=(1, 2)), 1e-30)
    amp = ((a_mov * scale[:, None, None] - a_ref) ** 2).sum(axis=(1, 2))
    amp /= max(float((a_ref**2).sum()), 1e-30)
    weight = a_ref * (a_ref > 0.5 * a_ref.max())
    product = moved * np.conj(reference)
    overlap = (weight * product).sum(axis=(1, 2))
    diff = np.angle(product * np.exp(-1j * np.angle(overlap))[:, None, None]).astype(np.float32)
    weights = np.broadcast_to(weight, diff.shape)
    rest = diff - ramp_plane(plane_fit(diff, weights), diff.shape[-1])
    rest = (rest + np.pi) % (2 * np.pi) - np.pi
    phase = (weight * rest**2).sum(axis=(1, 2)) / max(float(weight.sum()), 1e-30)
    return amp + phase, (np.conj(moved) * reference).sum(axis=(1, 2))


class SeriesRegistration:
    """Call :meth:`register` on each batch of a run, in frame order; :meth:`reset` between runs.

    For each frame: the networks' orientation, or its twin where that matches the reference
    (the run's last published frames, smoothed) :data:`FLIP_RATIO` times better (in
    amplitude, and in phase modulo an offset and a ramp: shape and strain); shifted by the
    translation that best overlaps its amplitude (the integer one by cross-correlation; the
    choice judged after a further sub-pixel shift, centre of mass on centre of mass); turned
    by the global phase that best matches the reference. The first frame of a run keeps the
    networks' orientation and the ramp-free, zero-mean phase convention."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self.flips = 0  # frames published as the twin of what the networks returned

    def reset(self) -> None:
        self._previous = None

    def register(self, result: Reconstruction) -> Reconstruction:
        """The batch registered on the run's reference (vectorised: every frame of the batch
        against the reference as it stood before the batch; a batch spans milliseconds)."""
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
        # judged sub-pixel (centre of mass on centre of mass, a magnitude-preserving shift),
        # published with the integer shift: no interpolation of what the networks returned
        size = xcorr.shape[-1]
        rest = centre_of_mass(np.abs(reference)[None]) - centre_of_mass(np.abs(moved))
        rest = (rest + size / 2) % size - size / 2
        misfit, overlap = _misfit(fourier_shift(moved, rest), reference)
        flipped = misfit[n:] < FLIP_RATIO * misfit[:n]
        pick = np.arange(n) + n * flipped
        aligned = moved[pick] * np.exp(1j * np.angle(overlap[pick]))[:, None, None]
        self.flips += int(flipped.sum())
        # the reference: the last frames, smoothed (a single noisy frame misleads the next)
        self._previous = 0.5 * reference + 0.5 * aligned[-min(n, 4):].mean(axis=0)
        amplitude = np.abs(aligned).astype(np.float32)
        support = amplitude > SUPPORT_THRESHOLD
        phase = (np.angle(aligned) * support).astype(np.float32)
        return Reconstruction(amplitude, phase, support, result.chi2, result.peak_offset)
