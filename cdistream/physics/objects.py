"""Random compact crystals after the paper's Methods, over the range a beamline meets: a convex
support from 4 to 24 pixels across (oversampling 1.3 to 8 per dimension), round to needle-thin,
with a soft edge, carrying a smooth strain phase of up to 2 pi peak to peak.
Pure numpy/scipy, seeded by a ``numpy.random.Generator``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import ConvexHull, QhullError

__all__ = ["ObjectRecipe", "random_object", "random_objects", "strain_phase"]

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
SUPERSAMPLE = 4  # sub-pixel samples per pixel and axis when rasterising a polygon


@dataclass(frozen=True)
class ObjectRecipe:
    """Knobs of the object generator, each a documented range; the defaults are the training
    recipe of the shipped models (``models/MODEL_CARD.md``).

    - ``min_extent``..``max_extent``: the longer side of the crystal, pixels, log-uniform (each
      octave of oversampling gets the same share of examples);
    - ``max_aspect``: longer over shorter side, log-uniform from 1 (thin, elongated crystals);
    - ``min_points``..``max_points``: points whose convex hull is the crystal;
    - ``min_edge``..``max_edge``: full width at half maximum of the Gaussian edge, pixels;
    - ``max_phase_ptp``: phase peak-to-peak inside the crystal as drawn (the paper's Methods),
      uniform from 0; the best-fit ramp is removed afterwards (it only moves the Bragg peak);
    - the strain mixes one to three kinds of field (:func:`strain_phase`);
    - ``max_shift``: offset of the crystal's centre from the window's, pixels.
    """

    n: int = 32
    min_extent: float = 4.0
    max_extent: float = 24.0
    max_aspect: float = 5.0
    min_points: int = 4
    max_points: int = 15
    min_edge: float = 0.5
    max_edge: float = 1.5
    max_phase_ptp: float = 2 * np.pi
    max_shift: float = 3.0


def _convex_coverage(points: np.ndarray, n: int) -> np.ndarray:
    """n x n area coverage (0..1) of the convex hull of ``points`` (row, col in pixel units,
    pixel centres at integers), by half-plane tests on a supersampled grid."""
    hull = ConvexHull(points)
    s = SUPERSAMPLE
    sub = (np.arange(n * s) + 0.5) / s - 0.5
    rows, cols = np.meshgrid(sub, sub, indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()], axis=1)
    inside = (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9).all(axis=1)
    return inside.reshape(n, s, n, s).mean(axis=(1, 3))


def _gratings(rng: np.random.Generator, rows, cols, mask, size: float) -> np.ndarray:
    """Sine gratings with random weights, periods (1 to 4 crystal sizes) and directions."""
    field = np.zeros(rows.shape)
    for _ in range(rng.integers(1, 4)):
        angle = rng.uniform(0, np.pi)
        k = 2 * np.pi / (rng.uniform(1.0, 4.0) * size)
        field += rng.uniform(-1, 1) * np.sin(
            k * (np.cos(angle) * rows + np.sin(angle) * cols) + rng.uniform(0, 2 * np.pi)
        )
    return field


def _bumps(rng: np.random.Generator, rows, cols, mask, size: float) -> np.ndarray:
    """Gaussian bumps (inclusions, point defects) inside or near the crystal."""
    inside = np.argwhere(mask)
    field = np.zeros(rows.shape)
    for _ in range(rng.integers(1, 4)):
        c = inside[rng.integers(len(inside))] + rng.normal(0, 1, 2)
        width = rng.uniform(0.1, 0.6) * size
        r2 = (rows - c[0]) ** 2 + (cols - c[1]) ** 2
        field += rng.uniform(-1, 1) * np.exp(-r2 / (2 * width**2))
    return field


def _random_field(rng: np.random.Generator, rows, cols, mask, size: float) -> np.ndarray:
    """A smooth random field: white noise correlated over 0.1 to 0.7 crystal sizes."""
    noise = rng.normal(size=rows.shape)
    return gaussian_filter(noise, rng.uniform(0.1, 0.7) * size, mode="wrap")


def _polynomial(rng: np.random.Generator, rows, cols, mask, size: float) -> np.ndarray:
    """A large-scale gradient across the crystal: bend and twist, polynomial up to cubic."""
    centre = np.argwhere(mask).mean(axis=0)
    r, c = (rows - centre[0]) / size, (cols - centre[1]) / size
    terms = [r * r, r * c, c * c, r**3, r * r * c, r * c * c, c**3]
    weights = rng.uniform(-1, 1, len(terms)) * (rng.random(len(terms)) < 0.6)
    return sum(w * t for w, t in zip(weights, terms, strict=True))


def _surface(rng: np.random.Generator, rows, cols, mask, size: float) -> np.ndarray:
    """Surface relaxation: strain in a shell under the surface, 0.5 to 3 pixels deep,
    modulated around the crystal (facets relax differently)."""
    interior = gaussian_filter(mask.astype(float), rng.uniform(0.5, 3.0), mode="wrap")
    centre = np.argwhere(mask).mean(axis=0)
    angle = np.arctan2(rows - centre[0], cols - centre[1])
    lobes = rng.integers(1, 4) * angle + rng.uniform(0, 2 * np.pi)
    return (1 - interior) * mask * (1 + rng.uniform(0, 1) * np.cos(lobes))


STRAIN_TERMS = (_gratings, _bumps, _random_field, _polynomial, _surface)


def strain_phase(rng: np.random.Generator, mask: np.ndarray, size: float) -> np.ndarray:
    """Smooth strain phase: one to three of sine gratings, Gaussian bumps, a correlated random
    field, a bend/twist polynomial and surface relaxation, each normalised inside the crystal
    (``mask``) and mixed with random weights. Returned unscaled; :func:`random_object` fixes
    its peak-to-peak inside the crystal."""
    n = mask.shape[0]
    rows, cols = np.mgrid[0:n, 0:n].astype(float)
    field = np.zeros((n, n))
    chosen = rng.choice(len(STRAIN_TERMS), size=int(rng.integers(1, 4)), replace=False)
    for k in chosen:
        term = STRAIN_TERMS[k](rng, rows, cols, mask, size)
        spread = term[mask].std()
        if spread > 1e-12:
            field += rng.uniform(0.3, 1.0) * rng.choice([-1, 1]) * term / spread
    return field


def _without_ramp(field: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """Subtract the amplitude-weighted best-fit plane from a phase field.

    A linear phase ramp only moves the Bragg peak on the detector; the ROI's centre defines the
    reference, so a ramp is not strain.
    """
    rows, cols = np.nonzero(amplitude > 0.1)
    weight = amplitude[rows, cols]
    design = np.stack([rows, cols, np.ones_like(rows)], axis=1).astype(float) * weight[:, None]
    coef = np.linalg.lstsq(design, field[rows, cols] * weight, rcond=None)[0]
    grid_r, grid_c = np.mgrid[0 : field.shape[0], 0 : field.shape[1]]
    return field - (coef[0] * grid_r + coef[1] * grid_c + coef[2])


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _support(rng: np.random.Generator, recipe: ObjectRecipe) -> tuple[np.ndarray, float]:
    """(coverage, extent) of one random convex crystal."""
    n = recipe.n
    while True:
        extent = _log_uniform(rng, recipe.min_extent, recipe.max_extent)
        aspect = _log_uniform(rng, 1.0, recipe.max_aspect)
        width = max(extent / aspect, 2.0)
        count = int(rng.integers(recipe.min_points, recipe.max_points + 1))
        local = rng.uniform(-0.5, 0.5, (count, 2))
        span = np.ptp(local, axis=0)
        if (span < 1e-3).any():
            continue
        local = (local - local.min(axis=0) - span / 2) / span * [extent, width]  # exact extent
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = n / 2 + rng.uniform(-recipe.max_shift, recipe.max_shift, 2)
        points = local @ rot.T + centre
        try:
            coverage = _convex_coverage(points, n)
        except QhullError:  # degenerate (collinear) draw
            continue
        if coverage.sum() >= 4:
            return coverage, extent


def random_object(rng: np.random.Generator, recipe: ObjectRecipe = ObjectRecipe()) -> np.ndarray:
    """One complex n x n object: amplitude in [0, 1] with a soft edge, phase 0 outside."""
    coverage, extent = _support(rng, recipe)
    edge = rng.uniform(recipe.min_edge, recipe.max_edge) / FWHM_PER_SIGMA
    amplitude = gaussian_filter(coverage, edge, mode="wrap")
    amplitude /= amplitude.max()
    field = strain_phase(rng, amplitude > 0.5, extent)
    inside = field[amplitude > 0.1]
    ptp = inside.max() - inside.min()
    field = field * (rng.uniform(0, recipe.max_phase_ptp) / ptp if ptp > 0 else 0.0)
    field = _without_ramp(field, amplitude)
    inside = field[amplitude > 0.1]
    phase = field - (inside.max() + inside.min()) / 2
    phase = np.where(amplitude > 0.1, np.clip(phase, -np.pi, np.pi), 0.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def random_objects(
    count: int, seed: int | np.random.SeedSequence, recipe: ObjectRecipe = ObjectRecipe()
) -> np.ndarray:
    """``count`` objects from one seed, shape (count, n, n) complex64, reproducible."""
    rng = np.random.default_rng(seed)
    return np.stack([random_object(rng, recipe) for _ in range(count)])
