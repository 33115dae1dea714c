"""Test sets. Independent ones: flat crystals from :mod:`sim_detector.crystals` and slices of
3D crystals' Bragg peaks from :mod:`sim_detector.crystals3d`, measured through
:mod:`sim_detector.farfield`, code that shares nothing with the training generator; and a
fresh seed of the training recipe itself. One set of crystals, measured under each named
condition, so conditions compare pattern for pattern.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from sim_detector.crystals import CrystalRecipe, crystals
from sim_detector.crystals3d import Crystal3DRecipe, crystal3d
from sim_detector.farfield import Conditions, detector_counts, peak_centred

__all__ = [
    "CONDITIONS",
    "CONDITIONS_3D",
    "SIZE_BINS",
    "HoldoutSet",
    "build",
    "build_3d",
    "build_recipe",
    "load",
    "save",
    "size_bin",
]

SIZE_BINS = ((0, 8), (8, 11), (11, 14), (14, 18), (18, 99))  # pixels across


@dataclass(frozen=True)
class Condition:
    """One measurement condition of the test sets."""

    photons: float | None = None  # counts in the brightest pixel; None = noise-free
    dark: float = 0.0  # mean dark counts per pixel
    coherence: float = 0.0  # sigma of the intensity blur, pixels
    stripe: int = 0  # width of a masked module gap through the ROI, pixels
    dead: int = 0  # masked dead pixels
    saturation: float | None = None  # mask counts above this fraction of the peak


CONDITIONS = {
    "noise_free": Condition(),
    "photons_1e5": Condition(photons=1e5),
    "photons_1e4": Condition(photons=1e4),
    "photons_1e3": Condition(photons=1e3),
    "photons_1e2": Condition(photons=1e2),
    "background": Condition(photons=1e4, dark=1.0),
    "coherence_0.7": Condition(coherence=0.7),
    "masked_stripe": Condition(stripe=3, dead=3),
    "saturated": Condition(photons=1e5, saturation=0.5),
    "beamline": Condition(photons=2e4, dark=0.5, coherence=0.4, stripe=3, dead=2),
}


# the slices of 3D crystals and the training recipe's fresh seed: fewer conditions (the flat
# set covers every detector effect one by one)
CONDITIONS_3D = {name: CONDITIONS[name] for name in ("noise_free", "photons_1e4", "beamline")}
ROCKING_SPAN = 0.75  # 3D test frames lie within this many rocking-curve widths of the peak

BIN_LABELS = ("<8", "8-11", "11-14", "14-18", ">=18")


def size_bin(extent: float) -> str:
    """The size bin's label for an object ``extent`` pixels across, e.g. '8-11'."""
    for lo, hi in SIZE_BINS:
        if lo <= extent < hi:
            return f"<{hi}" if lo == 0 else (f">={lo}" if hi == 99 else f"{lo}-{hi}")
    raise ValueError(extent)


def _mask(rng: np.random.Generator, n: int, condition: Condition, counts: np.ndarray):
    valid = np.ones((n, n), bool)
    if condition.stripe:
        start = int(rng.integers(0, n - condition.stripe + 1))
        if rng.random() < 0.5:
            valid[start : start + condition.stripe] = False
        else:
            valid[:, start : start + condition.stripe] = False
    for _ in range(condition.dead):
        valid[rng.integers(n), rng.integers(n)] = False
    if condition.saturation is not None:
        valid &= counts < condition.saturation * counts.max()
    return valid


@dataclass
class HoldoutSet:
    """Truth and measurements: ``objects`` (k, N, N) complex, ``extent`` (k,) pixels across
    (as :func:`cdistream.physics.extent` measures it), ``family`` (k,), ``phase_ptp`` (k,)
    radians, and per condition ``magnitudes`` and ``valid`` (k, N, N)."""

    objects: np.ndarray
    extent: np.ndarray
    family: np.ndarray
    phase_ptp: np.ndarray
    magnitudes: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    meta: dict

    def __len__(self) -> int:
        return len(self.objects)

    def bins(self) -> np.ndarray:
        return np.array([size_bin(e) for e in self.extent])


def build(
    count: int,
    seed: int,
    conditions: dict[str, Condition] | None = None,
    recipe: CrystalRecipe = CrystalRecipe(),
) -> HoldoutSet:
    """``count`` crystals from ``seed``, each measured under every condition."""
    conditions = CONDITIONS if conditions is None else conditions
    drawn = crystals(count, seed, recipe)
    objects = np.stack([c.obj for c in drawn])
    rng = np.random.default_rng([seed, 1])
    subpixel = rng.uniform(-0.5, 0.5, (count, 2))
    clean = np.stack([peak_centred(o, tuple(s)) for o, s in zip(objects, subpixel, strict=True)])
    meta = {"seed": seed, "recipe": asdict(recipe), "generator": "sim_detector.crystals"}
    families = np.array([c.family for c in drawn])
    ptp = np.array([c.phase_ptp for c in drawn])
    return _measured(objects, clean, families, ptp, conditions, seed, meta)


def _measured(objects, clean, families, ptp, conditions, seed, meta) -> HoldoutSet:
    """The set: ``clean`` intensities (k, N, N) measured under each condition."""
    from cdistream.physics import extent

    n = objects.shape[-1]
    mags, valids = {}, {}
    for k, (name, cond) in enumerate(conditions.items()):
        crng = np.random.default_rng([seed, 2, k])
        far = Conditions(cond.photons, cond.dark, cond.coherence)
        counts = np.stack([detector_counts(i, far, crng) for i in clean])
        valid = np.stack([_mask(crng, n, cond, c) for c in counts])
        mags[name] = (np.sqrt(counts) * valid).astype(np.float32)
        valids[name] = valid
    meta = {**meta, "conditions": {k: asdict(v) for k, v in conditions.items()}}
    return HoldoutSet(objects, extent(np.abs(objects)), families, ptp, mags, valids, meta)


def _support_ptp(obj: np.ndarray) -> float:
    amp = np.abs(obj)
    phase = np.angle(obj)[amp > 0.1 * amp.max()]
    return float(np.ptp(phase)) if phase.size else 0.0


def build_3d(
    count: int,
    seed: int,
    conditions: dict[str, Condition] | None = None,
    recipe: Crystal3DRecipe = Crystal3DRecipe(),
    n: int = 32,
) -> HoldoutSet:
    """``count`` frames of 3D crystals (:mod:`sim_detector.crystals3d`), each at a rocking
    offset within ``ROCKING_SPAN`` widths of its Bragg condition, the ROI centred on the
    brightest pixel with the true centre anywhere within it."""
    conditions = CONDITIONS_3D if conditions is None else conditions
    rng = np.random.default_rng([seed, 3])
    objects, clean, families, ptp = [], [], [], []
    for _ in range(count):
        crystal = crystal3d(rng, recipe)
        q = rng.uniform(-ROCKING_SPAN, ROCKING_SPAN) * crystal.thickness_width()
        centred = np.abs(crystal.field(q, n)) ** 2
        row, col = np.unravel_index(int(np.argmax(centred)), centred.shape)
        offset = (n // 2 - row + rng.uniform(-0.5, 0.5), n // 2 - col + rng.uniform(-0.5, 0.5))
        field = crystal.field(q, n, offset)
        clean.append(field.real**2 + field.imag**2)
        obj = crystal.truth(q, n)
        objects.append(obj)
        families.append(crystal.shape)
        ptp.append(_support_ptp(obj))
    meta = {"seed": seed, "recipe": asdict(recipe), "generator": "sim_detector.crystals3d",
            "rocking_span": ROCKING_SPAN}
    return _measured(np.stack(objects), np.stack(clean), np.array(families), np.array(ptp),
                     conditions, seed, meta)


def build_recipe(count: int, seed: int, conditions: dict[str, Condition] | None = None):
    """``count`` crystals of the training recipe itself (a fresh seed, never trained on),
    measured like the independent sets."""
    from cdistream.physics import ObjectRecipe, centre

    from .dataset import SHARE_2D, mixed_objects

    conditions = CONDITIONS_3D if conditions is None else conditions
    objects = mixed_objects(count, np.random.SeedSequence(seed), ObjectRecipe(), SHARE_2D)
    rng = np.random.default_rng([seed, 1])
    subpixel = rng.uniform(-0.5, 0.5, (count, 2))
    clean = np.stack([peak_centred(o, tuple(s)) for o, s in zip(objects, subpixel, strict=True)])
    meta = {"seed": seed, "generator": "training recipe (cdistream.physics)",
            "share_2d": SHARE_2D}
    families = np.array(["recipe"] * count)
    ptp = np.array([_support_ptp(o) for o in objects])
    return _measured(centre(objects), clean, families, ptp, conditions, seed, meta)


def save(data: HoldoutSet, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["objects"], f["extent"] = data.objects, data.extent
        f["family"] = data.family.astype("S")
        f["phase_ptp"] = data.phase_ptp
        for name in data.magnitudes:
            f[f"conditions/{name}/magnitudes"] = data.magnitudes[name]
            f[f"conditions/{name}/valid"] = data.valid[name]
        f.attrs["meta"] = json.dumps(data.meta)
    return path


def load(path: str | Path) -> HoldoutSet:
    with h5py.File(path, "r") as f:
        names = list(f["conditions"])
        return HoldoutSet(
            f["objects"][()],
            f["extent"][()],
            f["family"][()].astype(str),
            f["phase_ptp"][()],
            {k: f[f"conditions/{k}/magnitudes"][()] for k in names},
            {k: f[f"conditions/{k}/valid"][()] for k in names},
            json.loads(f.attrs["meta"]),
        )
