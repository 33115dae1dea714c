"""The crystal in 3D from a rocking scan: the series' ROIs stacked around the Bragg peak into a
cube (the detector's ROI in two axes, the rocking angle as the third) and reconstructed by 3D
phase retrieval, best of a few random starts by chi2. What a series' frames need to be kept
for it is bounded (:class:`CubeCollector`)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from cdistream.physics.iterative3d import (
    Phasing3D,
    chi2_3d,
    compare_3d,
    phase_retrieval_3d,
    support_3d,
)

__all__ = [
    "CUBE_DEPTH",
    "STARTS",
    "Cube",
    "CubeCollector",
    "Volume",
    "reconstruct_volume",
    "stack_cube",
]

CUBE_DEPTH = 32  # frames along the rocking axis: with a 32 x 32 ROI a 32^3 cube
STARTS = 8  # random starts averaged (measured on the 34-ID-C scan, models/MODEL_CARD.md)
MIN_FRAMES = 8  # fewer frames around the peak than this: not a rocking scan worth phasing
PEAKED = 2.0  # a rocking curve's peak holds at least this many times what both its ends hold


@dataclass
class Cube:
    """Magnitudes (depth, N, N): rocking axis first, zero frequency at the centre; which
    voxels were measured; the detector frame of each slice (-1: none, padding) and the
    window's centre on the detector (row, col) the slices were aligned on."""

    magnitudes: np.ndarray
    valid: np.ndarray
    frames: np.ndarray
    centre: tuple[int, int]
    motor: np.ndarray | None = None  # the rocking motor's position per slice, when known


def _shifted(image: np.ndarray, dr: int, dc: int, fill) -> np.ndarray:
    """``image`` moved by (dr, dc) pixels, ``fill`` where nothing came in."""
    out = np.full_like(image, fill)
    n0, n1 = image.shape
    src = image[max(-dr, 0) : n0 - max(dr, 0), max(-dc, 0) : n1 - max(dc, 0)]
    out[max(dr, 0) : max(dr, 0) + src.shape[0], max(dc, 0) : max(dc, 0) + src.shape[1]] = src
    return out


def stack_cube(
    counts: np.ndarray,
    valid: np.ndarray,
    peaks: np.ndarray,
    frames: np.ndarray,
    depth: int = CUBE_DEPTH,
    motor: np.ndarray | None = None,
) -> Cube:
    """The cube of ``depth`` frames centred on the brightest one: each ROI (k, N, N), cropped
    around its own frame's peak (``peaks`` (k, 2), detector pixels), moved onto the brightest
    frame's window; pixels that come from outside a frame's ROI, and slices past the series'
    ends, are not valid (their modulus stays free)."""
    k, n, _ = counts.shape
    order = np.argsort(frames)
    counts, valid, peaks, frames = counts[order], valid[order], peaks[order], frames[order]
    motor = None if motor is None else np.asarray(motor, float)[order]
    brightest = int(np.argmax(counts.reshape(k, -1).sum(axis=1)))
    centre = (int(peaks[brightest, 0]), int(peaks[brightest, 1]))
    cube = np.zeros((depth, n, n), np.float32)
    ok = np.zeros((depth, n, n), bool)
    numbers = np.full(depth, -1, np.int64)
    positions = np.full(depth, np.nan) if motor is not None else None
    first = brightest - depth // 2
    for s in range(depth):
        j = first + s
        if not 0 <= j < k:
            continue
        dr, dc = int(peaks[j, 0]) - centre[0], int(peaks[j, 1]) - centre[1]
        cube[s] = _shifted(counts[j], dr, dc, 0)
        ok[s] = _shifted(valid[j], dr, dc, False)
        numbers[s] = frames[j]
        if positions is not None:
            positions[s] = motor[j]
    return Cube(np.sqrt(np.maximum(cube, 0)) * ok, ok, numbers, centre, positions)


@dataclass
class Volume:
    """A reconstructed crystal: the complex object (depth, N, N), its support, its chi2
    against the cube, the chi2 of every start, the parameters and the
    time it took."""

    obj: np.ndarray
    support: np.ndarray
    chi2: float
    starts_chi2: list[float]
    params: dict
    seconds: float
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def amplitude(self) -> np.ndarray:
        amp = np.abs(self.obj).astype(np.float32)
        return amp / max(float(amp.max()), 1e-30)

    @property
    def phase(self) -> np.ndarray:
        """Radians, 0 outside the support."""
        return (np.angle(self.obj) * self.support).astype(np.float32)


def reconstruct_volume(cube: Cube, starts: int = STARTS, params: Phasing3D = Phasing3D(),
                       seed: int = 0) -> Volume:
    """``starts`` random starts of 3D ER/HIO; the better half by chi2, each registered on the
    best (twin, shift, global phase), averaged: what the starts agree on stays, what each
    start's noise decided averages out (BCDI practice). The average fits the data worse than
    any start, yet lies closer to the truth: on crystals of the independent 3D generator
    (``python -m training.volumes``) its support and phase beat both the best start by chi2
    and the start whose support agreed best with the average (models/MODEL_CARD.md). Only the
    better half: on a real crystal some starts land far from the rest (amplitude correlation
    with the best 0.4 to 0.6), and all 8 averaged misfit the cube three times worse."""
    t0 = time.perf_counter()
    objects, scores = [], []
    for s in range(starts):
        obj = phase_retrieval_3d(cube.magnitudes, params, valid=cube.valid, seed=seed + s)
        objects.append(obj)
        scores.append(chi2_3d(cube.magnitudes, obj, cube.valid))
    order = np.argsort(scores)
    best = objects[order[0]]
    aligned = [compare_3d(objects[k], best)["aligned"] for k in order[: max(starts // 2, 1)]]
    aligned = [a * np.exp(-1j * np.angle((a * np.conj(best)).sum())) for a in aligned]
    chosen = np.mean(aligned, axis=0)
    support = support_3d(chosen)
    # the global phase: zero mean inside the support, weighted by the amplitude
    chosen = chosen * np.exp(-1j * np.angle((np.abs(chosen) * support * chosen).sum()))
    return Volume(chosen, support, chi2_3d(cube.magnitudes, chosen, cube.valid), scores,
                  {**asdict(params), "starts": starts, "seed": seed,
                   "chosen": "the better half of the starts by chi2, registered, averaged"},
                  time.perf_counter() - t0, cube.frames)


class CubeCollector:
    """Keeps what a series' 3D reconstruction needs, boundedly: every frame's ROI until
    ``cap`` frames, then only those within a cube's depth of the brightest so far."""

    def __init__(self, depth: int = CUBE_DEPTH, cap: int = 2048):
        self.depth, self.cap = depth, cap
        self._rows: list[tuple[int, np.ndarray, np.ndarray, tuple[int, int], float]] = []
        self._totals: list[float] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, frame: int, counts: np.ndarray, valid: np.ndarray, peak: tuple[int, int],
            motor: float = float("nan")) -> None:
        self._rows.append((frame, counts, valid, peak, motor))
        self._totals.append(float(counts.sum()))
        if len(self._rows) > self.cap:
            order = np.argsort([r[0] for r in self._rows])
            frames = np.array([self._rows[i][0] for i in order])
            bright = frames[int(np.argmax(np.array(self._totals)[order]))]
            keep = [i for i in order if abs(self._rows[i][0] - bright) <= self.depth]
            self._rows = [self._rows[i] for i in keep]
            self._totals = [self._totals[i] for i in keep]

    def rocking(self) -> bool:
        """Enough frames, and a rocking curve: the frames' counts rise to a peak inside the
        series and fall again, both ends :data:`PEAKED` times under it (a steady crystal, or
        one whose pattern only grows, as an operando series', is not a rocking scan)."""
        if len(self._rows) < MIN_FRAMES:
            return False
        order = np.argsort([r[0] for r in self._rows])
        totals = np.asarray(self._totals)[order]
        top = int(np.argmax(totals))
        if not 2 <= top <= len(totals) - 3:
            return False
        ends = max(float(totals[:2].mean()), float(totals[-2:].mean()))
        return float(totals[top]) >= PEAKED * max(ends, 1e-30)

    def cube(self) -> Cube:
        rows = self._rows
        motor = np.array([r[4] for r in rows])
        return stack_cube(
            np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
            np.array([r[3] for r in rows]), np.array([r[0] for r in rows]), self.depth,
            None if np.isnan(motor).all() else motor,
        )
