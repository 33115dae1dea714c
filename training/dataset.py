"""Seeded training and test sets in HDF5: diffraction magnitudes and centred targets.

Chunks are seeded from one ``SeedSequence`` so a dataset is the same whatever the number of
worker processes; both cores generate in parallel.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from cdistream.physics import ObjectRecipe, centre, diffraction_magnitudes, random_objects

__all__ = ["Dataset", "generate", "load"]

log = logging.getLogger(__name__)
CHUNK = 512


def _chunk(args: tuple[int, np.random.SeedSequence, ObjectRecipe]) -> tuple[np.ndarray, ...]:
    count, seed, recipe = args
    objects = random_objects(count, seed, recipe)
    magnitudes = diffraction_magnitudes(objects)
    centred = centre(objects)
    # the sub-pixel shift rings faintly outside the object; the loss weighs phase only on
    # the support, so the targets stay exactly consistent with the magnitudes
    return magnitudes, np.abs(centred).astype(np.float32), np.angle(centred).astype(np.float32)


def generate(
    path: str | Path,
    count: int,
    seed: int,
    recipe: ObjectRecipe = ObjectRecipe(),
    workers: int | None = None,
) -> Path:
    """Write ``count`` noise-free examples to ``path``: ``magnitudes`` (fftshifted |FT| of the
    object as simulated), ``amplitude`` and ``phase`` (the object centred on N//2)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = recipe.n
    sizes = [min(CHUNK, count - start) for start in range(0, count, CHUNK)]
    seeds = np.random.SeedSequence(seed).spawn(len(sizes))
    workers = workers or os.cpu_count() or 1
    tmp = path.with_suffix(".partial")
    with h5py.File(tmp, "w") as f:
        dsets = {
            name: f.create_dataset(name, (count, n, n), "f4", chunks=(min(CHUNK, count), n, n))
            for name in ("magnitudes", "amplitude", "phase")
        }
        f.attrs["seed"] = seed
        f.attrs["recipe"] = json.dumps(asdict(recipe))
        start = 0
        with ProcessPoolExecutor(workers) as pool, tqdm(total=count, unit="pattern") as bar:
            jobs = zip(sizes, seeds, [recipe] * len(sizes), strict=True)
            for mags, amp, phase in pool.map(_chunk, jobs):
                stop = start + len(mags)
                dsets["magnitudes"][start:stop] = mags
                dsets["amplitude"][start:stop] = amp
                dsets["phase"][start:stop] = phase
                start = stop
                bar.update(len(mags))
    tmp.replace(path)
    log.info("wrote %d examples to %s", count, path)
    return path


class Dataset:
    """A dataset held in memory: arrays of shape (count, N, N) and the recipe it came from."""

    def __init__(
        self, magnitudes: np.ndarray, amplitude: np.ndarray, phase: np.ndarray, meta: dict
    ):
        self.magnitudes, self.amplitude, self.phase, self.meta = magnitudes, amplitude, phase, meta

    def __len__(self) -> int:
        return len(self.magnitudes)

    def objects(self) -> np.ndarray:
        """The (centred) complex ground-truth objects."""
        return self.amplitude * np.exp(1j * self.phase)

    def split(self, holdout: int) -> tuple[Dataset, Dataset]:
        """(first len - holdout, last holdout) examples."""
        cut = len(self) - holdout
        head = Dataset(self.magnitudes[:cut], self.amplitude[:cut], self.phase[:cut], self.meta)
        tail = Dataset(self.magnitudes[cut:], self.amplitude[cut:], self.phase[cut:], self.meta)
        return head, tail


def load(path: str | Path, limit: int | None = None) -> Dataset:
    """Read a dataset written by :func:`generate` (the first ``limit`` examples if given)."""
    with h5py.File(path, "r") as f:
        sl = slice(0, limit)
        meta = {"seed": int(f.attrs["seed"]), "recipe": json.loads(f.attrs["recipe"])}
        return Dataset(f["magnitudes"][sl], f["amplitude"][sl], f["phase"][sl], meta)
