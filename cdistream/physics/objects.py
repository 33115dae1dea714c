"""Random compact crystals as in the paper's Methods: a convex support with a soft edge
carrying a smooth strain phase. Pure numpy/scipy, seeded by a ``numpy.random.Generator``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import ConvexHull, QhullError

__all__ = ["ObjectRecipe", "random_object", "random_objects", "strain_phase"]


@dataclass(frozen=True)
class ObjectRecipe:
    """Knobs of the object generator; the defaults are the recipe the shipped models learn.

    Object widths stay at or below ``n * max_size`` so a pattern sampled on the same n x n grid
    is oversampled at least twice in each direction (the condition for phase retrieval).
    """

    n: int = 32
    min_size: float = 0.3  # bounding box side as a fraction of n
    max_size: float = 0.5
    min_points: int = 5
    max_points: int = 15
    edge_sigma: float = 0.5  # pixels: the 1-pixel soft edge
    max_phase_ptp: float = 2 * np.pi  # peak-to-peak of the phase inside the support
    max_shift: float = 0.125  # random offset of the object centre, fraction of n


def _convex_mask(points: np.ndarray, n: int) -> np.ndarray:
    """Boolean n x n mask of the convex hull of ``points`` (row, col), by half-plane tests."""
    hull = ConvexHull(points)
    rows, cols = np.mgrid[0:n, 0:n]
    grid = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(float)
    inside = grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9
    return inside.all(axis=1).reshape(n, n)


def strain_phase(rng: np.random.Generator, n: int, centre: np.ndarray, size: float) -> np.ndarray:
    """Smooth phase field: sine gratings plus Gaussians with random weights, periods, positions.

    Returned unscaled; :func:`random_object` fixes its peak-to-peak inside the support.
    """
    rows, cols = np.mgrid[0:n, 0:n].astype(float)
    field = np.zeros((n, n))
    for _ in range(rng.integers(1, 4)):
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(1.0, 4.0) * size
        k = 2 * np.pi / period
        field += rng.uniform(-1, 1) * np.sin(
            k * (np.cos(angle) * rows + np.sin(angle) * cols) + rng.uniform(0, 2 * np.pi)
        )
    for _ in range(rng.integers(1, 4)):
        c = centre + rng.uniform(-0.5, 0.5, 2) * size
        width = rng.uniform(0.15, 0.6) * size
        r2 = (rows - c[0]) ** 2 + (cols - c[1]) ** 2
        field += rng.uniform(-1, 1) * np.exp(-r2 / (2 * width**2))
    return field


def _without_ramp(field: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """Subtract the amplitude-weighted best-fit plane from a phase field.

    A linear phase ramp only moves the Bragg peak on the detector (a lattice-constant or
    orientation change); the ROI re-centres on the peak and BCDI removes ramps likewise, so
    objects carry none and the peak of their pattern sits at zero frequency.
    """
    rows, cols = np.nonzero(amplitude > 0.1)
    weight = amplitude[rows, cols]
    design = np.stack([rows, cols, np.ones_like(rows)], axis=1).astype(float) * weight[:, None]
    coef = np.linalg.lstsq(design, field[rows, cols] * weight, rcond=None)[0]
    grid_r, grid_c = np.mgrid[0 : field.shape[0], 0 : field.shape[1]]
    return field - (coef[0] * grid_r + coef[1] * grid_c + coef[2])


def random_object(rng: np.random.Generator, recipe: ObjectRecipe = ObjectRecipe()) -> np.ndarray:
    """One complex n x n object: amplitude in [0, 1] with a soft edge, phase 0 outside."""
    n = recipe.n
    while True:
        size = rng.uniform(recipe.min_size, recipe.max_size) * n
        centre = n / 2 + rng.uniform(-recipe.max_shift, recipe.max_shift, 2) * n
        count = int(rng.integers(recipe.min_points, recipe.max_points + 1))
        points = centre + rng.uniform(-size / 2, size / 2, (count, 2))
        try:
            mask = _convex_mask(points, n)
        except QhullError:  # degenerate (collinear) draw
            continue
        if mask.sum() >= 6:
            break
    amplitude = gaussian_filter(mask.astype(float), recipe.edge_sigma)
    amplitude /= amplitude.max()
    field = strain_phase(rng, n, centre, size)
    inside = field[mask]
    ptp = inside.max() - inside.min()
    target = rng.uniform(0, recipe.max_phase_ptp)
    field = field * (target / ptp if ptp > 0 else 0.0)
    field = _without_ramp(field, amplitude)
    inside = field[mask]
    phase = field - (inside.max() + inside.min()) / 2
    phase = np.where(amplitude > 0.1, np.clip(phase, -np.pi, np.pi), 0.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def random_objects(
    count: int, seed: int | np.random.SeedSequence, recipe: ObjectRecipe = ObjectRecipe()
) -> np.ndarray:
    """``count`` objects from one seed, shape (count, n, n) complex64, reproducible."""
    rng = np.random.default_rng(seed)
    return np.stack([random_object(rng, recipe) for _ in range(count)])
