"""3D phase retrieval of a rocking scan's Bragg peak: ER/HIO with Gaussian shrink-wrap on a
cube of magnitudes (the detector's ROI in two axes, the rocking angle as the third), the
sequence BCDI practice uses (cohere's ``3*(20*ER+180*HIO)+20*ER``), vectorised with numpy's
FFTs; and the scores of a 3D reconstruction: chi2 against the measured cube and the support
IoU with another reconstruction, twin and shift registered."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.ndimage import gaussian_filter

__all__ = [
    "SEQUENCE",
    "Phasing3D",
    "chi2_3d",
    "compare_3d",
    "parse_sequence",
    "phase_retrieval_3d",
    "support_3d",
    "twin_3d",
]

SEQUENCE = "3*(20*ER+180*HIO)+20*ER"  # 620 iterations, as APS reconstructs 34-ID-C scans


def parse_sequence(text: str) -> list[str]:
    """``"3*(20*ER+180*HIO)+20*ER"`` -> ["ER"] * 20 + ["HIO"] * 180 + ... (one per iteration)."""
    out: list[str] = []
    for term in re.findall(r"(?:(\d+)\*\(([^)]*)\))|(?:(\d+)\*(ER|HIO))", text.replace(" ", "")):
        repeat, inner, count, name = term
        if repeat:
            out += parse_sequence(inner) * int(repeat)
        else:
            out += [name] * int(count)
    if not out:
        raise ValueError(f"{text!r}: not a sequence such as {SEQUENCE!r}")
    return out


@dataclass(frozen=True)
class Phasing3D:
    """The parameters of a 3D reconstruction (recorded beside its result)."""

    sequence: str = SEQUENCE
    beta: float = 0.9
    shrinkwrap_every: int = 20  # iterations; cohere's trigger [1, 20]
    sigma: float = 1.0  # the shrink-wrap's Gaussian, voxels
    threshold: float = 0.1  # of the blurred amplitude's maximum
    initial_support: float = 0.5  # a box this share of each axis around the centre
    average_last: int = 20


def _fft(x):
    return scipy.fft.fftn(x, workers=-1)


def _ifft(x):
    return scipy.fft.ifftn(x, workers=-1)


def phase_retrieval_3d(
    magnitudes: np.ndarray,
    params: Phasing3D = Phasing3D(),
    *,
    valid: np.ndarray | None = None,
    start: np.ndarray | None = None,
    support: np.ndarray | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Retrieve a complex 3D object from fftshifted magnitudes (zero frequency at the cube's
    centre); ``valid`` False leaves a voxel's modulus free (masked, off the detector). Without
    ``start`` the phases start random (``seed``) in a box ``initial_support`` of the cube.
    Returns the object (complex128), centred like the cube."""
    m = np.asarray(magnitudes, np.float64)
    modulus = scipy.fft.ifftshift(m)
    free = None if valid is None else ~scipy.fft.ifftshift(np.asarray(valid, bool))
    rng = np.random.default_rng(seed)
    if support is None:
        supp = np.zeros(m.shape, bool)
        share = params.initial_support
        box = tuple(slice(int(n * (1 - share) / 2), int(n * (1 + share) / 2)) for n in m.shape)
        supp[box] = True
        supp = scipy.fft.ifftshift(supp)
    else:
        supp = scipy.fft.ifftshift(np.asarray(support, bool))
    if start is None:
        obj = _ifft(modulus * np.exp(2j * np.pi * rng.random(m.shape))) * supp
    else:
        obj = scipy.fft.ifftshift(np.asarray(start, np.complex128)) * supp
    steps = parse_sequence(params.sequence)
    total = np.zeros_like(obj)
    tail = max(len(steps) - params.average_last, 0)
    for it, step in enumerate(steps):
        field = _fft(obj)
        ratio = modulus / np.maximum(np.abs(field), 1e-30)
        if free is not None:
            ratio[free] = 1.0
        projected = _ifft(field * ratio)
        if step == "HIO":
            obj = np.where(supp, projected, obj - params.beta * projected)
        else:
            obj = projected * supp
        if params.shrinkwrap_every and (it + 1) % params.shrinkwrap_every == 0 and it < tail:
            blurred = gaussian_filter(np.abs(obj), params.sigma, mode="wrap")
            supp = blurred > params.threshold * blurred.max()
        if it >= tail:
            total += obj
    if tail < len(steps):  # average_last 0: the last iterate itself
        obj = total / (len(steps) - tail)
    return scipy.fft.fftshift(obj)


def chi2_3d(measured: np.ndarray, obj: np.ndarray, valid: np.ndarray | None = None) -> float:
    """sum((I_meas - s I_pred)^2) / sum(I_meas^2) over the valid voxels, s the least-squares
    scale: the product's 2D chi2, on the cube."""
    i_meas = np.asarray(measured, np.float64) ** 2
    i_pred = np.abs(scipy.fft.fftshift(_fft(scipy.fft.ifftshift(obj)))) ** 2
    if valid is not None:
        i_meas, i_pred = i_meas * valid, i_pred * valid
    scale = (i_meas * i_pred).sum() / max((i_pred**2).sum(), 1e-300)
    return float(((i_meas - scale * i_pred) ** 2).sum() / max((i_meas**2).sum(), 1e-300))


def twin_3d(obj: np.ndarray) -> np.ndarray:
    """The twin: inversion through the cube's centre plus complex conjugate (same magnitudes)."""
    flipped = np.flip(np.asarray(obj), axis=(0, 1, 2))
    return np.conj(np.roll(flipped, (1, 1, 1), axis=(0, 1, 2)))


def _aligned(candidate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, float]:
    """The candidate circularly shifted (integer voxels) to best overlap the reference's
    amplitude, and its amplitude correlation with the reference."""
    a, b = np.abs(reference), np.abs(candidate)
    xcorr = _ifft(_fft(a) * np.conj(_fft(b))).real
    shift = np.unravel_index(int(np.argmax(xcorr)), xcorr.shape)
    moved = np.roll(candidate, shift, axis=(0, 1, 2))
    score = float((np.abs(moved) * a).sum() / max(np.sqrt((a**2).sum() * (b**2).sum()), 1e-300))
    return moved, score


SUPPORT_SIGMA, SUPPORT_LEVEL = 1.0, 0.1


def support_3d(obj: np.ndarray) -> np.ndarray:
    """The support of a 3D reconstruction as shrink-wrap draws it (and BCDI reports it): the
    amplitude blurred by a Gaussian of one voxel, above 10% of its maximum. Thresholding the
    noisy amplitude itself would give a ragged support that no two starts agree on."""
    blurred = gaussian_filter(np.abs(obj), SUPPORT_SIGMA, mode="wrap")
    return blurred > SUPPORT_LEVEL * blurred.max()


def compare_3d(candidate: np.ndarray, reference: np.ndarray) -> dict:
    """Support IoU (:func:`support_3d`) of a 3D reconstruction and a reference, twin- and
    shift-invariant: the candidate and its twin, each moved onto the reference by the shift
    that best overlaps their amplitudes, then by each shift of at most one voxel from there;
    the best IoU counts. ``aligned``: the candidate as it overlapped best."""
    ref = support_3d(reference)
    best = (-1.0, False, candidate)
    for twinned, obj in ((False, candidate), (True, twin_3d(candidate))):
        moved, _ = _aligned(obj, reference)
        supp = support_3d(moved)
        for shift in np.ndindex(3, 3, 3):
            step = tuple(int(k) - 1 for k in shift)
            s = np.roll(supp, step, axis=(0, 1, 2))
            iou = float((s & ref).sum() / max((s | ref).sum(), 1))
            if iou > best[0]:
                best = (iou, twinned, np.roll(moved, step, axis=(0, 1, 2)))
    return {"iou": best[0], "twinned": best[1], "aligned": best[2]}
