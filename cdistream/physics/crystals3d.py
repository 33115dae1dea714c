"""Training crystals in 3D: what one detector frame near a Bragg peak really sees.

A frame is a slice of the crystal's 3D Bragg peak. By the Fourier slice theorem the slice at a
rocking offset ``q`` (cycles per pixel along the projection axis z) is the 2D Fourier transform
of the crystal's projection along z, each voxel weighted by ``exp(-2 pi i q z)``:

    o(x, y) = sum_z rho(x, y, z) exp(i phi(x, y, z)) exp(-2 pi i q z)

so the amplitude of the 2D object is a thickness map (not a flat top) and its phase a projected
displacement field. Crystals are faceted polyhedra with the habits of real nanocrystals (cubic
{100}, {111}, {110} facets: truncated octahedra, cubes, rods, plates, twinned and rounded ones)
in a random orientation; their displacement fields mix core-shell relaxation, dislocations,
smooth random fields, facet-dependent surface strain, a bend, and a stacking fault across a
twin plane. Pure numpy/scipy, seeded by a ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from .ramp import fit_ramp, ramp_plane

__all__ = ["HABITS", "Crystal3DRecipe", "random_crystal_slice", "random_crystal_slices"]

HABITS = ("truncated_octahedron", "cube", "rod", "plate", "twinned", "rounded")
_FACES_100 = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
_FACES_111 = np.array([[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)], float)
_FACES_111 /= np.sqrt(3)
_FACES_110 = np.array(
    [v for v in ([1, 1, 0], [1, -1, 0], [1, 0, 1], [1, 0, -1], [0, 1, 1], [0, 1, -1])]
    + [[-a for a in v] for v in ([1, 1, 0], [1, -1, 0], [1, 0, 1], [1, 0, -1], [0, 1, 1],
                                 [0, 1, -1])],
    float,
) / np.sqrt(2)


@dataclass(frozen=True)
class Crystal3DRecipe:
    """Knobs of the 3D generator; the defaults are the shipped training recipe.

    - ``min_extent``..``max_extent``: the projection's longer side in pixels, log-uniform (the
      oversampling a beamline meets: 32 / extent from 1.3 to 8);
    - ``min_edge``..``max_edge``: width of the facets' soft edge, pixels;
    - ``max_phase_ptp``: peak-to-peak of the 3D displacement phase inside the crystal, uniform
      from 0 (dislocations add their own 2 pi winding);
    - ``dislocation_share``: crystals holding a dislocation line;
    - ``rocking_centre_share``: frames drawn within half the rocking curve's width of the
      Bragg condition (the rest out to ``max_rocking`` widths, where counts fall to ~15%);
    - ``graded_share``: crystals whose density falls towards the surface (real reconstructions
      show a bright core: strain and the beam's partial coherence weaken the outer shell), over
      a depth up to ``max_grade`` of the crystal's size (as a power up to ``max_grade_power``
      of the depth below the surface), to a surface density from 0 to 0.6;
    - ``shell_share``: crystals with a relaxed surface layer whose phase stands up to
      ``max_shell_phase`` rad from the core's (on top of the strain above; in projection the
      rim, where the crystal is thin, shows it undiluted);
    - ``skirt_share``: crystals wrapped in a faint skirt: a layer up to ``max_skirt_width``
      pixels outside the facets, at a density up to ``max_skirt_level`` of the crystal's, its
      phase 0.5 to 2 rad from the crystal's (the real scan's 2D and 3D reconstructions both
      show a bright core in such a skirt, and its patterns are not fitted without it);
    - ``max_shift``: offset of the crystal's centre from the window's, pixels.
    """

    n: int = 32
    min_extent: float = 4.0
    max_extent: float = 24.0
    min_edge: float = 0.6
    max_edge: float = 1.6
    max_phase_ptp: float = 2 * np.pi
    dislocation_share: float = 0.2
    rocking_centre_share: float = 0.7
    max_rocking: float = 0.8
    max_shift: float = 3.0
    graded_share: float = 0.0
    max_grade: float = 1.0
    max_grade_power: float = 1.0
    shell_share: float = 0.0
    max_shell_phase: float = 3.0
    skirt_share: float = 0.0
    max_skirt_width: float = 4.0
    max_skirt_level: float = 0.4


@dataclass(frozen=True)
class _Shape:
    normals: np.ndarray  # (F, 3) unit facet normals in the crystal frame
    offsets: np.ndarray  # (F,) facet distances, unit-size crystal
    warp: np.ndarray  # (3, 3) applied to crystal-frame points before the facet test
    rounding: float  # smooth-max temperature, in units of the crystal size (0 = sharp)
    twin_normal: np.ndarray | None  # mirror plane of a twinned crystal (through its centre)


def _habit(rng: np.random.Generator, habit: str) -> _Shape:
    """Facets of one habit at unit size, each facet's distance jittered (real crystals are not
    perfect polyhedra), and the warp that makes rods and plates of them."""
    if habit == "cube":
        normals = [_FACES_100]
        offsets = [np.full(6, 1.0)]
        if rng.random() < 0.6:  # corners cut by {111}
            normals.append(_FACES_111)
            offsets.append(np.full(8, rng.uniform(1.2, 1.7)))
    else:  # octahedral habits: {111} with {100} truncation, sometimes {110}
        normals = [_FACES_111, _FACES_100]
        offsets = [np.full(8, 1.0), np.full(6, rng.uniform(0.75, 1.5))]
        if rng.random() < 0.3:
            normals.append(_FACES_110)
            offsets.append(np.full(12, rng.uniform(0.9, 1.25)))
    normals = np.concatenate(normals)
    offsets = np.concatenate(offsets) * rng.uniform(0.9, 1.1, len(normals))
    warp = np.diag(1 / rng.uniform(0.85, 1.15, 3))  # a little anisotropy everywhere
    if habit == "rod":  # elongated along a <100> axis
        axis = _FACES_100[2 * rng.integers(3)]
        warp = warp @ (np.eye(3) + (1 / rng.uniform(1.6, 4.0) - 1) * np.outer(axis, axis))
    elif habit == "plate":  # flattened along a <111> axis: triangles and hexagons
        axis = _FACES_111[rng.integers(8)]
        warp = warp @ (np.eye(3) + (1 / rng.uniform(0.25, 0.6) - 1) * np.outer(axis, axis))
    twin = _FACES_111[rng.integers(8)] if habit == "twinned" else None
    if habit == "rounded":
        rounding = rng.uniform(0.08, 0.3)
    else:
        rounding = rng.uniform(0.02, 0.1) if rng.random() < 0.3 else 0.0
    return _Shape(normals, offsets, warp, rounding, twin)


def _distance(shape: _Shape, points: np.ndarray) -> np.ndarray:
    """Signed distance-like field (unit size; negative inside) of crystal-frame ``points``
    (M, 3): the largest facet distance, or its smooth maximum for rounded crystals."""
    points = points @ shape.warp.T
    if shape.twin_normal is not None:  # mirror-symmetric about the twin plane
        side = points @ shape.twin_normal
        points = points - 2 * np.minimum(side, 0)[:, None] * shape.twin_normal
    d = points @ shape.normals.T - shape.offsets
    if shape.rounding <= 0:
        return d.max(axis=1)
    t = shape.rounding
    top = d.max(axis=1, keepdims=True)
    return top[:, 0] + t * np.log(np.exp((d - top) / t).sum(axis=1)) - t * np.log(len(d[0]) / 4)


def _lab_points(rows: np.ndarray, cols: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(len(rows) * len(cols) * len(depth), 3) voxel centres (x=row, y=col, z=depth)."""
    grid = np.meshgrid(rows, cols, depth, indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1)


def _fields(rng, points, box, inside, dist, shape, rot, size):
    """Unscaled strain terms, each of unit spread inside the crystal (list of (M,) arrays)."""
    centre = points[inside].mean(axis=0)
    rel = (points - centre) / size
    terms = []
    kinds = rng.choice(5, size=int(rng.integers(1, 4)), replace=False)
    for kind in kinds:
        if kind == 0:  # core-shell relaxation: a layer under the surface
            depth = rng.uniform(0.03, 0.2)
            terms.append(np.exp(np.minimum(dist, 0) / depth))
        elif kind == 1:  # facet-dependent surface strain
            crys = (rel @ rot) @ shape.warp.T
            d = crys @ shape.normals.T - shape.offsets
            weights = rng.normal(size=len(shape.offsets))
            terms.append((np.exp(np.minimum(d, 0) / rng.uniform(0.05, 0.2)) * weights).sum(1))
        elif kind == 2:  # smooth random field
            field = gaussian_filter(rng.normal(size=box), rng.uniform(0.15, 0.5) * size)
            terms.append(field.ravel())
        elif kind == 3:  # bend / twist: second and third order terms
            x, y, z = rel.T
            basis = [x * x, y * y, z * z, x * y, y * z, x * z, x * y * z, x**3, y**3, z**3]
            w = rng.uniform(-1, 1, len(basis)) * (rng.random(len(basis)) < 0.5)
            terms.append(sum(wi * b for wi, b in zip(w, basis, strict=True)))
        else:  # inclusion: a Gaussian bump of dilatation
            c = points[inside][rng.integers(inside.sum())]
            width = rng.uniform(0.1, 0.4) * size
            terms.append(np.exp(-((points - c) ** 2).sum(1) / (2 * width**2)))
    return terms


def _dislocation(rng, points, inside) -> np.ndarray:
    """Phase of a dislocation line through the crystal: G.b = +-2 pi, i.e. one turn of phase
    around the line (the winding term of a screw or edge dislocation's displacement)."""
    through = points[inside][rng.integers(inside.sum())]
    line = Rotation.random(random_state=rng).apply([0.0, 0.0, 1.0])
    a = np.cross(line, [1.0, 0, 0] if abs(line[0]) < 0.9 else [0, 1.0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(line, a)
    rel = points - through
    return rng.choice([-1, 1]) * np.arctan2(rel @ b, rel @ a)


def _draw_skirt(rng: np.random.Generator, recipe: Crystal3DRecipe) -> tuple[float, float] | None:
    """(width in pixels, density) of a faint skirt, or None; draws nothing unless asked, so
    recipes without one keep their random stream."""
    if not recipe.skirt_share or rng.random() >= recipe.skirt_share:
        return None
    return rng.uniform(1.0, recipe.max_skirt_width), rng.uniform(0.05, recipe.max_skirt_level)


def _skirt_density(
    rng: np.random.Generator,
    skirt: tuple[float, float],
    dist_px: np.ndarray,
    rho: np.ndarray,
    box: tuple[int, ...],
    size: float,
) -> np.ndarray:
    """Complex density of the skirt: falling linearly from the facets to ``width`` pixels out,
    with its own phase (an offset of 0.5 to 2 rad and a smooth random field)."""
    width, level = skirt
    shell = level * np.clip(1.0 - np.maximum(dist_px, 0.0) / width, 0.0, 1.0) * (1.0 - rho)
    field = gaussian_filter(rng.normal(size=box), rng.uniform(0.15, 0.5) * size).ravel()
    field = field / max(field.std(), 1e-12)
    offset = rng.choice([-1, 1]) * rng.uniform(0.5, 2.0)
    return shell * np.exp(1j * (offset + rng.uniform(0.0, 0.8) * field))


def _projected_extent(amplitude: np.ndarray) -> float:
    """Longer side of the bounding box of the projection's half-maximum support, pixels."""
    support = amplitude > 0.5 * amplitude.max()
    rows, cols = np.flatnonzero(support.any(1)), np.flatnonzero(support.any(0))
    return float(max(np.ptp(rows), np.ptp(cols)) + 1)


def random_crystal_slice(
    rng: np.random.Generator, recipe: Crystal3DRecipe = Crystal3DRecipe()
) -> tuple[np.ndarray, dict]:
    """One n x n complex object (amplitude max 1, phase ramp-free with zero weighted mean, 0
    outside the support) seen at a rocking offset, and what was drawn (habit, projected
    extent, offset in rocking-curve widths, 3D phase peak-to-peak)."""
    n = recipe.n
    habit = HABITS[rng.integers(len(HABITS))]
    shape = _habit(rng, habit)
    rot = Rotation.random(random_state=rng).as_matrix()
    target = float(np.exp(rng.uniform(np.log(recipe.min_extent), np.log(recipe.max_extent))))
    # a coarse pass finds the scale that gives the drawn projected extent
    axis = np.linspace(-2, 2, 17)
    coarse = _lab_points(axis, axis, axis)
    inside = _distance(shape, coarse @ rot) < 0
    if inside.sum() < 8:
        return random_crystal_slice(rng, recipe)
    lab = coarse[inside]
    unit_extent = max(np.ptp(lab[:, 0]), np.ptp(lab[:, 1])) + 0.25
    size = target / unit_extent
    shift = np.append(rng.uniform(-recipe.max_shift, recipe.max_shift, 2), 0.0)
    skirt = _draw_skirt(rng, recipe)
    margin = 3 + (skirt[0] if skirt else 0.0)
    # voxels only in the crystal's bounding box (plus its edge), the window's grid elsewhere
    low = np.floor(lab.min(axis=0) * size + shift - margin).astype(int)
    high = np.ceil(lab.max(axis=0) * size + shift + margin).astype(int)
    low[:2] = np.maximum(low[:2], -(n // 2))
    high[:2] = np.minimum(high[:2], n - n // 2 - 1)
    axes = [np.arange(lo, hi + 1, dtype=float) for lo, hi in zip(low, high, strict=True)]
    box = tuple(len(a) for a in axes)
    points = _lab_points(*axes)
    crys = ((points - shift) / size) @ rot
    dist = _distance(shape, crys)  # unit-size distance
    edge = rng.uniform(recipe.min_edge, recipe.max_edge) / size
    rho = np.clip(0.5 - dist / edge, 0.0, 1.0)
    if recipe.graded_share and rng.random() < recipe.graded_share:  # a brighter core
        depth = rng.uniform(0.15, recipe.max_grade)
        floor = rng.uniform(0.0, 0.6)
        power = rng.uniform(1.0, recipe.max_grade_power)
        rho = rho * (floor + (1 - floor) * np.clip(-dist / depth, 0.0, 1.0) ** power)
    inside = dist < 0
    if inside.sum() < 4:
        return random_crystal_slice(rng, recipe)
    terms = _fields(rng, points, box, inside, dist, shape, rot, max(target, 3.0))
    strain = np.zeros(len(points))
    for t in terms:
        spread = t[inside].std()
        if spread > 1e-12:
            strain += rng.uniform(0.3, 1.0) * rng.choice([-1, 1]) * t / spread
    if shape.twin_normal is not None and rng.random() < 0.7:  # a stacking fault's phase jump
        strain_jump = (crys @ shape.twin_normal > 0) * rng.choice([-1, 1]) * 2 * np.pi / 3
    else:
        strain_jump = 0.0
    ptp = np.ptp(strain[inside])
    scale = rng.uniform(0, recipe.max_phase_ptp) / ptp if ptp > 0 else 0.0
    fixed = strain_jump
    if rng.random() < recipe.dislocation_share:
        fixed = fixed + _dislocation(rng, points, inside)
    if recipe.shell_share and rng.random() < recipe.shell_share:  # a relaxed surface layer
        layer = np.exp(np.minimum(dist, 0) / rng.uniform(0.05, 0.25))
        fixed = fixed + rng.choice([-1, 1]) * rng.uniform(0.5, recipe.max_shell_phase) * layer
    thickness = rho.reshape(box).sum(axis=2)
    mean_thickness = thickness.sum() / max((thickness > 0.5 * thickness.max()).sum(), 1)
    width = 1.0 / max(mean_thickness, 1.0)  # the rocking curve's width, cycles per pixel
    if rng.random() < recipe.rocking_centre_share:
        q = rng.uniform(0, 0.5) * width
    else:
        q = rng.uniform(0.5, recipe.max_rocking) * width
    q *= rng.choice([-1, 1])
    phase3d = scale * strain + fixed - 2 * np.pi * q * points[:, 2]
    density = rho.astype(complex)
    if skirt:
        density = density + _skirt_density(rng, skirt, dist * size, rho, box, target)
    obj = np.zeros((n, n), complex)
    r0, c0 = low[0] + n // 2, low[1] + n // 2
    obj[r0 : r0 + box[0], c0 : c0 + box[1]] = (density * np.exp(1j * phase3d)).reshape(box).sum(2)
    amp = np.abs(obj) / np.abs(obj).max()
    support = amp > 0.1
    obj = obj * np.exp(-1j * ramp_plane(fit_ramp(obj[None], (amp * support)[None]), n)[0])
    obj *= np.exp(-1j * np.angle((amp * obj).sum()))  # zero mean phase, weighted
    phase = np.where(support, np.angle(obj), 0.0)
    info = {
        "habit": habit,
        "extent": _projected_extent(amp),
        "rocking": float(q / width),
        "phase_ptp": float(np.ptp((scale * strain)[inside])),
    }
    return (amp * np.exp(1j * phase)).astype(np.complex64), info


def random_crystal_slices(
    count: int, seed: int | np.random.SeedSequence, recipe: Crystal3DRecipe = Crystal3DRecipe()
) -> np.ndarray:
    """``count`` objects from one seed, (count, n, n) complex64, reproducible."""
    rng = np.random.default_rng(seed)
    return np.stack([random_crystal_slice(rng, recipe)[0] for _ in range(count)])
