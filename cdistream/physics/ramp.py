"""Linear phase ramps: a ramp across the object only says where the Bragg peak's centre lies
relative to the ROI's centre pixel (a sub-pixel shift in reciprocal space), not strain. These
functions find the amplitude-weighted best-fit plane of wrapped phases, vectorised over a
batch, so the service can publish ramp-free phase and the peak's sub-pixel position."""

from __future__ import annotations

import numpy as np

__all__ = ["fit_ramp", "plane_fit", "ramp_plane", "ramp_to_offset", "remove_ramp"]

_ROUNDS = 2


def _deramp(z: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """z * exp(-i (a*row + b*col + c)) for per-pattern coef (k, 3); separable, so cheap."""
    grid = np.arange(z.shape[-1], dtype=np.float64)
    rows = np.exp(-1j * (coef[:, 0, None] * grid + coef[:, 2, None]))
    cols = np.exp(-1j * coef[:, 1, None] * grid)
    return z * rows[:, :, None] * cols[:, None, :]


def fit_ramp(field: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Best-fit plane a*row + b*col + c (radians) of the phase of complex ``field`` (k, N, N),
    weighted by ``weight`` (k, N, N); returns (k, 3) [a, b, c].

    Robust to wrapping: the slopes start from the weighted mean of the wrapped phase
    differences between neighbouring pixels (exact for a pure ramp of under pi per pixel), then
    a weighted least-squares fit of the wrapped residual refines them."""
    w = np.asarray(weight, np.float64)
    field = np.asarray(field, np.complex128)
    z = np.where(w > 0, field / np.maximum(np.abs(field), 1e-300), 0)
    k, n = z.shape[0], z.shape[-1]
    pair_r = w[:, 1:, :] * w[:, :-1, :]
    pair_c = w[:, :, 1:] * w[:, :, :-1]
    slope_r = np.angle((pair_r * z[:, 1:, :] * np.conj(z[:, :-1, :])).sum(axis=(1, 2)))
    slope_c = np.angle((pair_c * z[:, :, 1:] * np.conj(z[:, :, :-1])).sum(axis=(1, 2)))
    coef = np.stack([slope_r, slope_c, np.zeros(k)], axis=1)
    coef[:, 2] = np.angle((w * _deramp(z, coef)).sum(axis=(1, 2)))
    grid = np.arange(n, dtype=np.float64)
    design = np.stack(
        [np.repeat(grid, n), np.tile(grid, n), np.ones(n * n)], axis=1
    )  # (N*N, 3): row, col, 1
    wflat = w.reshape(k, -1)
    outer = (design[:, :, None] * design[:, None, :]).reshape(n * n, 9)
    normal = (wflat @ outer).reshape(k, 3, 3) + 1e-9 * np.eye(3)
    for _ in range(_ROUNDS):
        rest = np.angle(_deramp(z, coef)).reshape(k, -1)
        rhs = (wflat * rest) @ design
        coef = coef + np.linalg.solve(normal, rhs[..., None])[..., 0]
    return coef


def plane_fit(phase: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted least-squares plane (k, 3) [a, b, c] of *unwrapped* phase maps (k, N, N), such as
    a network's raw output: closed form, a few microseconds a pattern."""
    ph = np.asarray(phase, np.float32)
    w = np.asarray(weight, np.float32)
    n = ph.shape[-1]
    grid = np.arange(n, dtype=np.float32)
    sw = np.maximum(w.sum(axis=(1, 2)), 1e-12)
    wr, wc = w.sum(axis=2), w.sum(axis=1)  # (k, N) marginals
    mr, mc = (wr @ grid) / sw, (wc @ grid) / sw
    r = grid[None, :] - mr[:, None]  # (k, N) centred coordinates
    c = grid[None, :] - mc[:, None]
    srr = (wr * r * r).sum(axis=1)
    scc = (wc * c * c).sum(axis=1)
    src = np.einsum("kij,ki,kj->k", w, r, c)
    wp = w * ph
    mp = wp.sum(axis=(1, 2)) / sw
    srp = (wp.sum(axis=2) * r).sum(axis=1)
    scp = (wp.sum(axis=1) * c).sum(axis=1)
    det = np.maximum(srr * scc - src * src, 1e-12)
    a = (scc * srp - src * scp) / det
    b = (srr * scp - src * srp) / det
    return np.stack([a, b, mp - a * mr - b * mc], axis=1).astype(np.float64)


def ramp_plane(coef: np.ndarray, n: int) -> np.ndarray:
    """The planes a*row + b*col + c of (k, 3) coefficients, (k, N, N) float32."""
    grid = np.arange(n, dtype=np.float32)
    coef = np.asarray(coef, np.float32)
    return (coef[:, 0, None, None] * grid[:, None] + coef[:, 1, None, None] * grid) + coef[
        :, 2, None, None
    ]


def remove_ramp(phase: np.ndarray, weight: np.ndarray, field: np.ndarray | None = None):
    """Phase map(s) (k, N, N) or (N, N) minus their ``weight``-weighted best-fit plane (offset
    and linear ramp), wrapped to [-pi, pi), 0 where the weight is 0. ``field`` (complex) is
    used to fit the plane when given (its phase is ``phase``)."""
    ph = np.asarray(phase, np.float64)
    single = ph.ndim == 2
    ph = ph[None] if single else ph
    wt = np.asarray(weight, np.float64).reshape(ph.shape)
    z = np.exp(1j * ph) if field is None else np.asarray(field).reshape(ph.shape)
    coef = fit_ramp(z, wt)
    out = np.angle(_deramp(np.exp(1j * ph), coef)) * (wt > 0)
    return out[0] if single else out


def ramp_to_offset(coef: np.ndarray, n: int) -> np.ndarray:
    """(k, 2) position of the pattern's zero frequency relative to the ROI's centre pixel, in ROI
    pixels, from ramp slopes (radians per pixel): a ramp exp(2 pi i d.x / N) moves it by d."""
    return np.asarray(coef)[:, :2] * n / (2 * np.pi)
