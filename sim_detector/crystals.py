"""Simulated crystals, written independently of the training generator
(:mod:`cdistream.physics.objects`): other shape families, an analytic edge instead of a blurred
mask, other strain fields and wider ranges. The test sets and the simulated detector use these,
so a model is never judged only on the recipe it learned from.

Shapes are intersections of half-planes (facets). The amplitude is the error-function profile
of the signed distance to the facets, averaged over 3 x 3 sub-pixel samples; the strain phase
mixes low-order polynomials, a correlated random field and a core-shell (surface relaxation)
profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.special import erfc

__all__ = ["FAMILIES", "Crystal", "CrystalRecipe", "crystal", "crystals"]

FAMILIES = ("cloud", "habit", "ellipse", "rod")


@dataclass(frozen=True)
class CrystalRecipe:
    """Ranges of the simulated crystals (each wider than the training recipe's):

    - ``min_extent``..``max_extent``: longer side, pixels, log-uniform;
    - ``min_points``..``max_points``: points of a Gaussian cloud whose hull is a ``cloud``;
    - ``min_edge``..``max_edge``: width of the edge, pixels (the FWHM of the Gaussian whose
      integral is the error-function profile);
    - ``max_aspect``: longer over shorter side (``rod`` crystals use 3 to this), the shorter at
      least ``min_width`` pixels (a thinner crystal is not resolved at this sampling);
    - ``max_phase_ptp``: phase peak-to-peak inside the crystal (the field as drawn, gradients
      included, as in the paper's Methods), uniform from 0;
    - ``max_offset``: offset of the crystal's centre from the window's, pixels;
    - ``families``: the shape families drawn from (all of ``FAMILIES`` by default).
    """

    n: int = 32
    min_extent: float = 4.0
    max_extent: float = 24.0
    min_width: float = 2.0
    min_points: int = 3
    max_points: int = 40
    min_edge: float = 0.3
    max_edge: float = 2.0
    max_aspect: float = 6.0
    max_phase_ptp: float = 2 * np.pi
    max_offset: float = 4.0
    families: tuple[str, ...] = FAMILIES


def _facets(rng: np.random.Generator, family: str, recipe: CrystalRecipe):
    """Unit normals (m, 2) and offsets (m,) of the facets of a shape centred at the origin
    with unit longer extent, before rotation: inside where normals @ x <= offsets."""
    if family == "ellipse":
        aspect = np.exp(rng.uniform(0, np.log(recipe.max_aspect)))
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        # tangent lines of the ellipse x^2/a^2 + y^2/b^2 = 1 at 64 points
        a, b = 0.5, 0.5 / aspect
        normals = np.stack([np.cos(angles) / a, np.sin(angles) / b], axis=1)
        norm = np.linalg.norm(normals, axis=1)
        return normals / norm[:, None], 1.0 / norm
    if family == "rod":
        aspect = rng.uniform(3.0, recipe.max_aspect)
        normals = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
        return normals, np.array([0.5, 0.5, 0.5 / aspect, 0.5 / aspect])
    if family == "habit":  # a regular polygon, stretched, with corners cut
        sides = int(rng.integers(3, 9))
        angles = np.arange(sides) * 2 * np.pi / sides + rng.uniform(0, 2 * np.pi)
        normals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        offsets = np.full(sides, 0.5)
        cuts = int(rng.integers(0, 4))
        cut_angles = rng.uniform(0, 2 * np.pi, cuts)
        normals = np.concatenate([normals, np.stack([np.cos(cut_angles), np.sin(cut_angles)], 1)])
        offsets = np.concatenate([offsets, rng.uniform(0.35, 0.5, cuts)])
        stretch = np.array([1.0, 1.0 / np.exp(rng.uniform(0, np.log(recipe.max_aspect / 2)))])
        normals = normals / stretch  # the shape x -> x * stretch
        norm = np.linalg.norm(normals, axis=1)
        return normals / norm[:, None], offsets / norm
    # cloud: the convex hull of Gaussian points, facets from the hull's edges
    count = int(rng.integers(recipe.min_points, recipe.max_points + 1))
    spread = np.array([1.0, 1.0 / np.exp(rng.uniform(0, np.log(recipe.max_aspect)))])
    pts = rng.normal(size=(max(count, 3), 2)) * spread
    return _hull_facets(pts)


def _hull_facets(points: np.ndarray):
    """Facets of the convex hull of 2-D points by gift wrapping (no Qhull): normals, offsets."""
    start = int(np.argmin(points[:, 0]))
    hull = [start]
    while True:
        current = hull[-1]
        candidate = (current + 1) % len(points)
        for j in range(len(points)):
            v1 = points[candidate] - points[current]
            v2 = points[j] - points[current]
            cross = v1[0] * v2[1] - v1[1] * v2[0]
            if cross < 0 or (cross == 0 and v2 @ v2 > v1 @ v1):
                candidate = j
        if candidate == start or len(hull) > len(points):
            break
        hull.append(candidate)
    verts = points[hull]
    edges = np.roll(verts, -1, axis=0) - verts
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    keep = np.linalg.norm(normals, axis=1) > 1e-9
    normals = normals[keep] / np.linalg.norm(normals[keep], axis=1)[:, None]
    offsets = (normals * verts[keep]).sum(axis=1)
    centre = verts.mean(axis=0)
    if (normals @ centre - offsets > 0).mean() > 0.5:  # wound the other way round
        normals, offsets = -normals, -offsets
    span = np.ptp(verts[:, 0])
    centre_x = (verts[:, 0].max() + verts[:, 0].min()) / 2
    offsets = offsets - normals @ np.array([centre_x, centre[1]])
    return normals, offsets / max(span, 1e-9)


def _amplitude(normals, offsets, extent, angle, centre, edge_fwhm, n) -> np.ndarray:
    """Error-function edge profile of the signed distance to the facets, 3 x 3 sub-samples."""
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    sigma = edge_fwhm / (2 * np.sqrt(2 * np.log(2)))
    sub = (np.arange(3 * n) + 0.5) / 3 - 0.5
    y, x = np.meshgrid(sub, sub, indexing="ij")
    local = (np.stack([x.ravel() - centre[1], y.ravel() - centre[0]], axis=1) @ rot.T) / extent
    distance = ((local @ normals.T) - offsets).max(axis=1) * extent  # pixels, < 0 inside
    amplitude = 0.5 * erfc(distance / (np.sqrt(2) * sigma))
    return amplitude.reshape(n, 3, n, 3).mean(axis=(1, 3))


def _strain(rng: np.random.Generator, amplitude: np.ndarray, centre, extent) -> np.ndarray:
    """Unscaled strain field: one to three of polynomial, correlated-random, core-shell."""
    n = amplitude.shape[0]
    y, x = np.mgrid[0:n, 0:n].astype(float)
    u, v = (y - centre[0]) / extent, (x - centre[1]) / extent
    field = np.zeros((n, n))
    kinds = rng.choice(3, size=int(rng.integers(1, 4)), replace=False)
    for kind in kinds:
        if kind == 0:  # cubic polynomial
            c = rng.normal(size=7)
            term = c[0] * u * u + c[1] * u * v + c[2] * v * v
            term += c[3] * u**3 + c[4] * u * u * v + c[5] * u * v * v + c[6] * v**3
        elif kind == 1:  # white noise smoothed over a correlation length
            length = rng.uniform(0.15, 0.8) * extent
            freq = np.fft.fftfreq(n)
            filt = np.exp(-2 * (np.pi * length) ** 2 * (freq[:, None] ** 2 + freq[None] ** 2))
            term = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * filt).real
        else:  # surface relaxation: strain decaying with depth below the surface
            depth = distance_transform_edt(amplitude > 0.5)
            term = np.exp(-depth / rng.uniform(1.0, 3.0))
        inside = amplitude > 0.5
        spread = term[inside].std() if inside.any() else 1.0
        field += rng.uniform(0.3, 1.0) * term / max(spread, 1e-12)
    return field


def _width(amplitude: np.ndarray) -> float:
    """Shorter side of the half-maximum support, pixels (from its second moments, exact for a
    rectangle: side = sqrt(12 variance))."""
    rows, cols = np.nonzero(amplitude > 0.5 * amplitude.max())
    if len(rows) < 3:
        return 0.0
    cov = np.cov(np.stack([rows, cols]).astype(float)) + np.eye(2) / 12  # pixels have width
    return float(np.sqrt(12 * np.linalg.eigvalsh(cov)[0]))


@dataclass(frozen=True)
class Crystal:
    """One simulated crystal and how it was drawn."""

    obj: np.ndarray  # complex (N, N): amplitude in [0, 1], phase (radians) 0 outside
    family: str
    extent: float  # the longer side as drawn, pixels
    edge: float  # FWHM of the edge, pixels
    phase_ptp: float  # strain peak to peak inside the crystal, radians


def crystal(rng: np.random.Generator, recipe: CrystalRecipe = CrystalRecipe()) -> Crystal:
    """Draw one crystal."""
    n = recipe.n
    while True:
        family = recipe.families[int(rng.integers(len(recipe.families)))]
        normals, offsets = _facets(rng, family, recipe)
        extent = float(np.exp(rng.uniform(np.log(recipe.min_extent), np.log(recipe.max_extent))))
        centre = n / 2 + rng.uniform(-recipe.max_offset, recipe.max_offset, 2)
        edge = float(rng.uniform(recipe.min_edge, recipe.max_edge))
        amplitude = _amplitude(normals, offsets, extent, rng.uniform(0, np.pi), centre, edge, n)
        rim = np.concatenate([amplitude[[0, -1]].ravel(), amplitude[:, [0, -1]].ravel()])
        fits = rim.max() < 0.05 * amplitude.max()  # the crystal lies inside the field of view
        if fits and amplitude.max() > 0.2 and _width(amplitude) >= recipe.min_width:
            break
    amplitude = amplitude / amplitude.max()
    inside = amplitude > 0.1
    field = _strain(rng, amplitude, centre, extent)
    ptp = float(np.ptp(field[inside]))
    target = rng.uniform(0, recipe.max_phase_ptp)
    field = field * (target / ptp if ptp > 0 else 0.0)
    field = field - (field[inside].max() + field[inside].min()) / 2
    phase = np.where(inside, field, 0.0)
    obj = (amplitude * np.exp(1j * phase)).astype(np.complex64)
    return Crystal(obj, family, extent, edge, target)


def crystals(count: int, seed: int, recipe: CrystalRecipe = CrystalRecipe()) -> list[Crystal]:
    """``count`` crystals from one seed, reproducible."""
    rng = np.random.default_rng(seed)
    return [crystal(rng, recipe) for _ in range(count)]
