"""Operando scenarios: what the simulated crystal and its Bragg peak do over a series.

Every frame's ground truth is a pure function of (scenario, seed, frame index), so a test can
rebuild exactly what the detector showed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crystals import CrystalRecipe, crystal

__all__ = ["SCENARIOS", "FrameTruth", "Scenario"]

SCENARIOS = ("static", "strain", "drift", "operando")


@dataclass(frozen=True)
class FrameTruth:
    """What the detector saw in one frame."""

    obj: np.ndarray  # complex (N, N): the crystal, phase = strain
    peak_row: float  # detector pixel of the Bragg peak (zero frequency of the pattern)
    peak_col: float
    strain_scale: float  # 0..1, how much of the final strain phase is present


class Scenario:
    """A crystal whose strain grows and/or whose Bragg peak drifts across the detector.

    - ``static``: nothing changes;
    - ``strain``: the phase grows linearly from 10% to 100% of a strain field whose final peak
      to peak is ``max_strain`` radians;
    - ``drift``: the peak moves ``drift`` pixels per frame along a fixed direction;
    - ``operando``: both at once.

    The crystal comes from :mod:`sim_detector.crystals` (8 to 14 pixels across by default);
    ``recipe`` chooses others, e.g. ``CrystalRecipe(families=("ellipse",))`` for a
    centro-symmetric one whose early, weakly strained frames hardly tell it from its twin.
    """

    def __init__(
        self,
        name: str = "operando",
        seed: int = 0,
        frames: int = 100,
        detector_shape: tuple[int, int] = (512, 512),
        drift: float = 0.5,
        recipe: CrystalRecipe = CrystalRecipe(min_extent=8, max_extent=14),
        max_strain: float = 3.5,
    ):
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; choose from {SCENARIOS}")
        self.name, self.seed, self.frames = name, seed, max(frames, 1)
        self.detector_shape = detector_shape
        rng = np.random.default_rng(seed)
        base = crystal(rng, recipe).obj
        self._amplitude = np.abs(base)
        self._phase = np.angle(base)
        if name in ("strain", "operando"):  # make sure there is strain to watch grow
            ptp = np.ptp(self._phase[self._amplitude > 0.1]) or 1.0
            self._phase = self._phase * (max_strain / ptp)  # grows to max_strain peak-to-peak
        margin = recipe.n
        rows, cols = detector_shape
        self._start = np.array([rows / 2, cols / 2]) + rng.uniform(-0.1, 0.1, 2) * [rows, cols]
        angle = rng.uniform(0, 2 * np.pi)
        self._direction = np.array([np.sin(angle), np.cos(angle)])
        self._drift = drift if name in ("drift", "operando") else 0.0
        self._bounds = (margin, rows - margin, margin, cols - margin)

    def strain_scale(self, frame: int) -> float:
        if self.name not in ("strain", "operando"):
            return 1.0
        return 0.1 + 0.9 * min(frame, self.frames - 1) / max(self.frames - 1, 1)

    def peak(self, frame: int) -> tuple[float, float]:
        """Peak position, reflected at a margin of N pixels from the detector's edges."""
        pos = self._start + self._direction * self._drift * frame
        r0, r1, c0, c1 = self._bounds
        row = r0 + _reflect(pos[0] - r0, r1 - r0)
        col = c0 + _reflect(pos[1] - c0, c1 - c0)
        return float(row), float(col)

    def truth_at(self, strain_scale: float) -> np.ndarray:
        """The crystal with ``strain_scale`` (0..1) of its final strain phase."""
        return (self._amplitude * np.exp(1j * self._phase * strain_scale)).astype(np.complex64)

    def truth(self, frame: int) -> FrameTruth:
        """Ground truth of frame ``frame`` (0-based)."""
        scale = self.strain_scale(frame)
        row, col = self.peak(frame)
        return FrameTruth(self.truth_at(scale), row, col, scale)


def _reflect(x: float, span: float) -> float:
    """Fold x into [0, span] by reflection, like a ball bouncing between two walls."""
    if span <= 0:
        return 0.0
    x = x % (2 * span)
    return x if x <= span else 2 * span - x
