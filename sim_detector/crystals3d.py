"""Simulated 3D crystals and the detector frames a rocking scan records of them, written
independently of the training generator (:mod:`cdistream.physics.crystals3d`): other shapes
(Wulff polyhedra with {311} facets, superellipsoids, hulls of point clouds), a displacement
*vector* field from elasticity (misfit core-shell, Volterra edge and screw dislocations, random
low-order waves) projected on the Bragg vector, and the far field as an explicit 3D Fourier sum
over the voxels on the detector's plane of reciprocal space, with the rocking direction oblique
to it (as in a real Bragg geometry), not a projection followed by an FFT.

The ground truth a 2D reconstruction is compared with is the object whose 2D Fourier transform
is exactly the field on the detector's pixels: the inverse DFT of that field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation

__all__ = ["Crystal3D", "Crystal3DRecipe", "SHAPES", "crystal3d", "rocking_frames"]

SHAPES = ("wulff", "superellipsoid", "cloud")
POISSON = 0.42  # gold


@dataclass(frozen=True)
class Crystal3DRecipe:
    """Ranges of the 3D crystals: projected extent (pixels, log-uniform), the displacement's
    largest phase (radians, uniform from 0), the share holding a dislocation, the angle between
    the rocking direction and the detector's normal (degrees), the shapes drawn from."""

    min_extent: float = 5.0
    max_extent: float = 20.0
    max_phase: float = 1.5 * np.pi
    dislocation_share: float = 0.25
    max_oblique: float = 35.0
    shapes: tuple[str, ...] = SHAPES


@dataclass(frozen=True)
class Crystal3D:
    """Voxels of a crystal in the detector's frame (u1 = detector rows, u2 = columns, u3 along
    the detector's normal; window pixels), their complex density, and the rocking direction."""

    positions: np.ndarray  # (M, 3) float
    density: np.ndarray  # (M,) complex: partial volume * exp(i G.u)
    rocking_axis: np.ndarray  # (3,) unit vector along which a rocking scan moves in q
    shape: str
    extent: float  # the projection's longer side, pixels (bounding box of the voxels)

    def thickness_width(self) -> float:
        """The rocking curve's width in cycles per pixel along the rocking axis (1 / thickness
        along it, the thickness being the voxels' spread along the axis times sqrt(12))."""
        along = self.positions @ self.rocking_axis
        return 1.0 / max(np.sqrt(12) * along.std(), 1.0)

    def field(self, rocking: float, n: int, offset: tuple[float, float] = (0.0, 0.0)):
        """The far field on n x n detector pixels, one pixel per Fourier frequency of an n-pixel
        window, zero frequency at n//2 + offset, at ``rocking`` cycles per pixel from the Bragg
        condition along the rocking axis: sum_v rho_v exp(-2 pi i q . r_v)."""
        u1, u2 = self.positions[:, 0], self.positions[:, 1]
        along = self.positions @ self.rocking_axis
        weights = self.density * np.exp(-2j * np.pi * rocking * along)
        f1 = (np.arange(n) - n // 2 - offset[0]) / n
        f2 = (np.arange(n) - n // 2 - offset[1]) / n
        rows = np.exp(-2j * np.pi * np.outer(f1, u1))  # (n, M)
        cols = np.exp(-2j * np.pi * np.outer(u2, f2))  # (M, n)
        return (rows * weights) @ cols

    def truth(self, rocking: float, n: int) -> np.ndarray:
        """The 2D object (n x n, centred on n//2) whose Fourier transform is :meth:`field`."""
        field = self.field(rocking, n)
        obj = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(field)))
        return obj.astype(np.complex64)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _family(*hkl: int) -> np.ndarray:
    """All sign and order permutations of the Miller indices ``hkl``, unit length."""
    from itertools import permutations, product

    out = {tuple(s * x for s, x in zip(signs, p, strict=True))
           for p in permutations(hkl) for signs in product((1, -1), repeat=3)}
    return _unit(np.array(sorted(out), float))


def _inside(rng: np.random.Generator, shape: str):
    """A test ``inside(points) -> bool`` for a crystal of about unit radius."""
    if shape == "wulff":  # facet distances from random surface energies
        families = [(_family(1, 1, 1), 1.0), (_family(1, 0, 0), rng.uniform(1.0, 1.25)),
                    (_family(1, 1, 0), rng.uniform(1.05, 1.3)),
                    (_family(3, 1, 1), rng.uniform(1.02, 1.2))]
        normals = np.concatenate([f for f, _ in families])
        dist = np.concatenate([np.full(len(f), g) for f, g in families])
        dist = dist * rng.uniform(0.92, 1.08, len(dist))
        return lambda p: (p @ normals.T <= dist).all(axis=1)
    if shape == "superellipsoid":  # rounded cubes to spheres, elongated or flattened
        power = rng.uniform(2.0, 6.0)
        axes = rng.uniform(0.6, 1.0, 3)
        return lambda p: (np.abs(p / axes) ** power).sum(axis=1) <= 1.0
    points = rng.normal(size=(int(rng.integers(6, 30)), 3)) * rng.uniform(0.5, 1.0, 3)
    hull = ConvexHull(points / np.abs(points).max())
    return lambda p: (p @ hull.equations[:, :3].T + hull.equations[:, 3] <= 0).all(axis=1)


def _displacement(rng: np.random.Generator, r: np.ndarray, recipe: Crystal3DRecipe):
    """(M, 3) displacement (in lattice spacings along the Bragg vector's direction, i.e. phase
    = 2 pi g.u) of voxels at ``r`` (crystal centred on 0, unit radius)."""
    u = np.zeros_like(r)
    radius = np.linalg.norm(r, axis=1)
    if rng.random() < 0.6:  # misfit shell: radial expansion growing towards the surface
        u += rng.uniform(-1, 1) * r * (radius[:, None] ** rng.uniform(1, 3))
    for _ in range(int(rng.integers(1, 4))):  # random low-order displacement waves
        k = rng.normal(size=3) * rng.uniform(0.5, 2.0)
        u += rng.normal(size=3) * np.sin(r @ k + rng.uniform(0, 2 * np.pi))[:, None] * 0.3
    return u


def _dislocation(rng: np.random.Generator, r: np.ndarray) -> np.ndarray:
    """Phase G.u of a Volterra dislocation (isotropic elasticity) through the crystal, a screw
    or an edge line, its Burgers vector with G.b = +-2 pi (plus, for an edge, a share of the
    displacement across b)."""
    line = _unit(rng.normal(size=3))
    ex = _unit(np.cross(line, rng.normal(size=3)))
    ey = np.cross(line, ex)
    rel = r - rng.uniform(-0.4, 0.4, 3)
    x, y = rel @ ex, rel @ ey
    theta = np.arctan2(y, x)
    r2 = np.maximum(x * x + y * y, 1e-6)
    turns = rng.choice([-1, 1])  # G.b = 2 pi n: one turn of phase around the line
    if rng.random() < 0.5:  # screw: u = b theta / 2 pi along the line
        return turns * theta
    nu = POISSON  # edge, b along ex: u_x along b, u_y across it
    along = theta + x * y / (2 * (1 - nu) * r2)
    across = -((1 - 2 * nu) / (4 * (1 - nu)) * np.log(r2) + (x * x - y * y) / (4 * (1 - nu) * r2))
    return turns * along + rng.uniform(-0.5, 0.5) * across


def crystal3d(rng: np.random.Generator, recipe: Crystal3DRecipe = Crystal3DRecipe()) -> Crystal3D:
    """One random crystal in a random orientation, its projection ``extent`` pixels across."""
    shape = recipe.shapes[rng.integers(len(recipe.shapes))]
    inside = _inside(rng, shape)
    extent = float(np.exp(rng.uniform(np.log(recipe.min_extent), np.log(recipe.max_extent))))
    rot = Rotation.random(random_state=rng).as_matrix()
    # 2 x 2 x 2 sub-voxel samples give each voxel its partial volume (a smooth surface)
    coarse = np.stack(np.meshgrid(*[np.linspace(-1.3, 1.3, 27)] * 3, indexing="ij"), -1)
    coarse = coarse.reshape(-1, 3)
    span = (coarse[inside(coarse)] @ rot.T)[:, :2]
    scale = extent / max(np.ptp(span[:, 0]), np.ptp(span[:, 1]), 1e-3)  # pixels per unit
    half = int(np.ceil(1.35 * scale)) + 1
    grid = np.arange(-half, half + 1, dtype=float)
    centres = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    sub = np.array([[a, b, c] for a in (-0.25, 0.25) for b in (-0.25, 0.25) for c in (-0.25, 0.25)])
    fill = np.zeros(len(centres))
    for s in sub:  # in the crystal's own frame (its unit radius = scale pixels)
        fill += inside((centres + s) / scale)
    keep = fill > 0
    crys = centres[keep] / scale
    volume = fill[keep] / len(sub)
    g = _unit(rng.normal(size=3))  # the Bragg vector's direction, crystal frame
    u = _displacement(rng, crys, recipe)
    phase = 2 * np.pi * (u @ g)
    if rng.random() < recipe.dislocation_share:
        phase = phase + _dislocation(rng, crys)
    spread = np.ptp(phase) or 1.0
    phase = phase * (rng.uniform(0, recipe.max_phase) / spread)
    positions = centres[keep] @ rot.T  # detector frame, pixels, centred on 0
    positions[:, :2] += rng.uniform(-2, 2, 2)
    oblique = np.deg2rad(rng.uniform(0, recipe.max_oblique))
    turn = rng.uniform(0, 2 * np.pi)
    axis = np.array([np.sin(oblique) * np.cos(turn), np.sin(oblique) * np.sin(turn),
                     np.cos(oblique)])
    projected = positions[:, :2]
    measured = float(max(np.ptp(projected[:, 0]), np.ptp(projected[:, 1])))
    return Crystal3D(positions, volume * np.exp(1j * phase), axis, shape, measured)


def rocking_frames(crystal: Crystal3D, steps: int, n: int, span: float = 2.0) -> np.ndarray:
    """Intensities (steps, n, n) of a rocking scan through the Bragg condition: ``steps``
    offsets evenly over +-``span`` rocking-curve widths, the Bragg condition at the middle."""
    width = crystal.thickness_width()
    offsets = np.linspace(-span, span, steps) * width
    fields = np.stack([crystal.field(q, n) for q in offsets])
    return fields.real**2 + fields.imag**2
