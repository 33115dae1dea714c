"""The 3D engine held to a known truth: rocking scans of 3D crystals from the independent
generator (:mod:`sim_detector.crystals3d`: faceted and rounded crystals, a smooth displacement
field, the far field as an explicit Fourier sum over the voxels), each plane of the cube a
detector frame with photon noise and dark counts, reconstructed by our 3D engine
(:func:`cdistream.volume.reconstruct_volume`, as ``cdistream reconstruct --3d`` runs it) and by
cohere-core's best of 4 on the very same cube, both against the truth: support IoU (at half
maximum, and as shrink-wrap draws it) and the phase inside the crystal, twin and shift
registered, modulo offset and ramp. ``python -m training.volumes``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft

from cdistream.physics.iterative3d import Phasing3D, chi2_3d, compare_3d
from cdistream.volume import STARTS, Cube, reconstruct_volume
from sim_detector.crystals3d import Crystal3DRecipe, crystal3d

__all__ = ["TruthCube", "evaluate", "score", "truth_cubes"]

log = logging.getLogger(__name__)

N = 32
# crystals of about 400 to 1,700 voxels with a smooth displacement of 1 to 2 rad, the rocking
# axis along the detector's normal (so that the cube's third axis is the crystal's)
RECIPE = Crystal3DRecipe(min_extent=9.0, max_extent=15.0, max_phase=2.0,
                         dislocation_share=0.0, max_oblique=0.0)
PHOTONS = 1e5  # in the cube's brightest voxel
DARK = 0.5  # mean dark counts per voxel


@dataclass
class TruthCube:
    """A measured cube (magnitudes, zero frequency at the centre) and its true object."""

    magnitudes: np.ndarray
    truth: np.ndarray
    voxels: float  # the crystal's volume in voxels (partial volumes summed)
    phase_ptp: float  # radians, inside the crystal


def truth_cubes(count: int, seed: int) -> list[TruthCube]:
    """``count`` crystals: the rocking scan's N planes, one per Fourier frequency along the
    rocking axis, and the truth each implies (the inverse 3D DFT of the noise-free field)."""
    rng = np.random.default_rng([seed, 31])
    out = []
    while len(out) < count:
        crystal = crystal3d(rng, RECIPE)
        voxels = float(np.abs(crystal.density).sum())
        if not 400 <= voxels <= 1700:
            continue
        offsets = (np.arange(N) - N // 2) / N
        field = np.stack([crystal.field(q, N) for q in offsets])
        truth = scipy.fft.fftshift(scipy.fft.ifftn(scipy.fft.ifftshift(field)))
        intensity = np.abs(field) ** 2
        counts = rng.poisson(intensity * (PHOTONS / intensity.max()) + DARK)
        inside = np.abs(truth) > 0.5 * np.abs(truth).max()
        phase = np.angle(truth[inside] * np.conj(truth[inside].mean()))
        out.append(TruthCube(np.sqrt(counts).astype(np.float32), truth, voxels,
                             float(np.ptp(phase))))
    return out


def _ramp_free(residual: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The phase of a complex residual, its global phase and best linear ramp removed."""
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in residual.shape],
                                  indexing="ij"), -1)
    z = residual * np.exp(-1j * np.angle((weight * residual).sum()))
    for _ in range(3):  # refit on the unwrapped remainder: the ramp is small after alignment
        phase = np.angle(z)
        sel = weight > 0
        design = np.column_stack([coords[sel], np.ones(sel.sum())])
        w = np.sqrt(weight[sel])
        coef, *_ = np.linalg.lstsq(design * w[:, None], phase[sel] * w, rcond=None)
        z = z * np.exp(-1j * (coords @ coef[:3] + coef[3]))
    return np.angle(z)


def score(obj: np.ndarray, truth: np.ndarray) -> dict:
    """Support IoU and phase RMSE (radians, inside the crystal: above half of the truth's
    maximum amplitude, modulo offset and ramp) of a 3D reconstruction against the truth."""
    compared = compare_3d(obj, truth)
    moved = compared["aligned"]
    a, t = np.abs(moved), np.abs(truth)
    half_r, half_t = a > 0.5 * a.max(), t > 0.5 * t.max()
    iou = float((half_r & half_t).sum() / max((half_r | half_t).sum(), 1))
    rest = _ramp_free(moved * np.conj(truth), half_t.astype(float))
    return {"iou_half_max": iou, "iou_wrapped": compared["iou"],
            "phase_rmse": float(np.sqrt((rest[half_t] ** 2).mean()))}


def _cohere(magnitudes: np.ndarray, valid: np.ndarray, starts: int) -> np.ndarray:
    from .realdata import cohere_best_3d

    return cohere_best_3d(magnitudes, valid, starts)[0]


def evaluate(count: int = 14, seed: int = 2026, starts: int = STARTS,
             params: Phasing3D = Phasing3D(), cohere: bool = True) -> dict:
    """Ours and (with ``cohere``) cohere-core's best of 4 on ``count`` truth cubes."""
    rows = []
    for k, cube in enumerate(truth_cubes(count, seed)):
        valid = np.ones(cube.magnitudes.shape, bool)
        t0 = time.perf_counter()
        volume = reconstruct_volume(Cube(cube.magnitudes, valid, np.arange(N), (0, 0)),
                                    starts, params)
        row = {"voxels": cube.voxels, "phase_ptp": cube.phase_ptp,
               "ours": {**score(volume.obj, cube.truth), "chi2": volume.chi2,
                        "seconds": time.perf_counter() - t0}}
        if cohere:
            obj = _cohere(cube.magnitudes, valid, 4)
            row["cohere"] = {**score(obj, cube.truth),
                             "chi2": chi2_3d(cube.magnitudes, obj, valid)}
        log.info("crystal %d (%.0f voxels): %s", k, cube.voxels,
                 {e: (round(r["iou_half_max"], 3), round(r["phase_rmse"], 3))
                  for e, r in row.items() if isinstance(r, dict)})
        rows.append(row)
    engines = [e for e in ("ours", "cohere") if e in rows[0]]
    summary = {e: {m: float(np.median([r[e][m] for r in rows]))
                   for m in ("iou_half_max", "iou_wrapped", "phase_rmse", "chi2")}
               for e in engines}
    for e in engines:
        summary[e]["worst_iou_half_max"] = float(min(r[e]["iou_half_max"] for r in rows))
    return {"count": count, "seed": seed, "recipe": asdict(RECIPE), "photons": PHOTONS,
            "dark": DARK, "params": asdict(params), "starts": starts, "summary": summary,
            "crystals": rows}


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m training.volumes", description=__doc__)
    p.add_argument("--count", type=int, default=14)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--no-cohere", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    out = evaluate(args.count, args.seed, cohere=not args.no_cohere)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(json.dumps(out["summary"], indent=1))  # noqa: T201


if __name__ == "__main__":
    main()
