"""Seeded training sets in HDF5: the crystals as simulated and their centred targets.

The detector conditions (photons, background, coherence, sub-pixel peak position, masks) are
drawn afresh for every batch during training (:class:`Batches`), so each epoch sees every
crystal under new conditions. Chunks are seeded from one ``SeedSequence``, so a dataset is the
same whatever the number of worker processes; all cores generate in parallel.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import h5py
import keras
import numpy as np
from tqdm import tqdm

from cdistream.physics import (
    Crystal3DRecipe,
    MeasurementRecipe,
    ObjectRecipe,
    centre,
    measure,
    random_crystal_slices,
    random_objects,
)

__all__ = ["Batches", "CrystalSet", "generate", "load"]

log = logging.getLogger(__name__)
CHUNK = 512


SHARE_2D = 0.2  # flat 2D crystals (the paper's recipe) beside slices of 3D crystals


def _at_size(recipe_3d: Crystal3DRecipe, recipe: ObjectRecipe) -> Crystal3DRecipe:
    """The 3D recipe with the window, extents and offsets of the 2D one (one size range)."""
    return replace(recipe_3d, n=recipe.n, min_extent=recipe.min_extent,
                   max_extent=recipe.max_extent, max_shift=recipe.max_shift)


def mixed_objects(
    count: int,
    seed: np.random.SeedSequence,
    recipe: ObjectRecipe,
    share_2d: float,
    recipe_3d: Crystal3DRecipe = Crystal3DRecipe(),
) -> np.ndarray:
    """``count`` training objects: slices of 3D crystals (``recipe_3d``, at ``recipe``'s size
    and extents), a ``share_2d`` of flat ones."""
    flat, deep, pick = seed.spawn(3)
    is_flat = np.random.default_rng(pick).random(count) < share_2d
    objects = np.empty((count, recipe.n, recipe.n), np.complex64)
    if is_flat.any():
        objects[is_flat] = random_objects(int(is_flat.sum()), flat, recipe)
    if (~is_flat).any():
        objects[~is_flat] = random_crystal_slices(int((~is_flat).sum()), deep,
                                                  _at_size(recipe_3d, recipe))
    return objects


def _chunk(args: tuple[int, np.random.SeedSequence, ObjectRecipe, float, Crystal3DRecipe]):
    count, seed, recipe, share_2d, recipe_3d = args
    objects = mixed_objects(count, seed, recipe, share_2d, recipe_3d)
    centred = centre(objects)
    # the sub-pixel shift rings faintly outside the object; the loss weighs phase only on
    # the support, so the targets stay exactly consistent with the magnitudes
    return objects, np.abs(centred).astype(np.float32), np.angle(centred).astype(np.float32)


def generate(
    path: str | Path,
    count: int,
    seed: int,
    recipe: ObjectRecipe = ObjectRecipe(),
    workers: int | None = None,
    share_2d: float = SHARE_2D,
    recipe_3d: Crystal3DRecipe = Crystal3DRecipe(),
) -> Path:
    """Write ``count`` crystals to ``path``: ``objects`` (complex64, as simulated: slices of 3D
    crystals, and a ``share_2d`` of flat 2D ones) and the targets ``amplitude`` and ``phase``
    (the object centred on N//2; phases wrapped: the loss is blind to 2 pi)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = recipe.n
    sizes = [min(CHUNK, count - start) for start in range(0, count, CHUNK)]
    seeds = np.random.SeedSequence(seed).spawn(len(sizes))
    workers = workers or os.cpu_count() or 1
    tmp = path.with_suffix(".partial")
    with h5py.File(tmp, "w") as f:
        chunks = (min(CHUNK, count), n, n)
        dsets = {
            "objects": f.create_dataset("objects", (count, n, n), "c8", chunks=chunks),
            "amplitude": f.create_dataset("amplitude", (count, n, n), "f4", chunks=chunks),
            "phase": f.create_dataset("phase", (count, n, n), "f4", chunks=chunks),
        }
        f.attrs["seed"] = seed
        f.attrs["recipe"] = json.dumps(asdict(recipe))
        f.attrs["recipe_3d"] = json.dumps(asdict(_at_size(recipe_3d, recipe)))
        f.attrs["share_2d"] = share_2d
        start = 0
        with ProcessPoolExecutor(workers) as pool, tqdm(total=count, unit="crystal") as bar:
            jobs = [(size, sd, recipe, share_2d, recipe_3d)
                    for size, sd in zip(sizes, seeds, strict=True)]
            for objects, amp, phase in pool.map(_chunk, jobs):
                stop = start + len(objects)
                dsets["objects"][start:stop] = objects
                dsets["amplitude"][start:stop] = amp
                dsets["phase"][start:stop] = phase
                start = stop
                bar.update(len(objects))
    tmp.replace(path)
    log.info("wrote %d crystals to %s", count, path)
    return path


def drawn_with(
    path: str | Path, recipe_3d: Crystal3DRecipe, recipe: ObjectRecipe = ObjectRecipe()
) -> bool:
    """Whether ``path`` is a crystal set :func:`generate` drew with ``recipe_3d``; knobs of the
    3D recipe newer than the file read as their defaults (off)."""
    path = Path(path)
    if not path.exists():
        return False
    with h5py.File(path, "r") as f:
        written = json.loads(f.attrs.get("recipe_3d", "{}"))
    wanted = json.loads(json.dumps(asdict(_at_size(recipe_3d, recipe))))
    if {**asdict(Crystal3DRecipe()), **written} == wanted:
        return True
    log.info("%s was drawn with another 3D recipe", path)
    return False


class CrystalSet:
    """Crystals held in memory: complex objects and centred targets, (count, N, N) each."""

    def __init__(self, objects: np.ndarray, amplitude: np.ndarray, phase: np.ndarray, meta):
        self.objects, self.amplitude, self.phase, self.meta = objects, amplitude, phase, meta

    def __len__(self) -> int:
        return len(self.objects)

    def split(self, holdout: int) -> tuple[CrystalSet, CrystalSet]:
        """(first len - holdout, last holdout) crystals."""
        cut = len(self) - holdout
        head = CrystalSet(self.objects[:cut], self.amplitude[:cut], self.phase[:cut], self.meta)
        tail = CrystalSet(self.objects[cut:], self.amplitude[cut:], self.phase[cut:], self.meta)
        return head, tail


def load(path: str | Path, limit: int | None = None) -> CrystalSet:
    """Read a set written by :func:`generate` (the first ``limit`` crystals if given)."""
    with h5py.File(path, "r") as f:
        sl = slice(0, limit)
        meta = {"seed": int(f.attrs["seed"]), "recipe": json.loads(f.attrs["recipe"])}
        if "recipe_3d" in f.attrs:
            meta["recipe_3d"] = json.loads(f.attrs["recipe_3d"])
            meta["share_2d"] = float(f.attrs["share_2d"])
        return CrystalSet(f["objects"][sl], f["amplitude"][sl], f["phase"][sl], meta)


class Batches(keras.utils.PyDataset):
    """Training batches: crystals in a new random order each epoch, each measured under
    conditions drawn from ``recipe``. ``fixed`` batches (validation) draw the same conditions
    every time. Inputs {magnitudes, valid}; target (batch, N, N, 4): amplitude, phase,
    magnitudes, valid (the loss compares the prediction's far field with the magnitudes).

    Every random draw is seeded from (seed, epoch, batch), so a run is reproducible whatever
    the number of data-loading workers.
    """

    def __init__(
        self,
        data: CrystalSet,
        batch_size: int,
        recipe: MeasurementRecipe = MeasurementRecipe(),
        seed: int = 0,
        fixed: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.data, self.batch_size, self.recipe = data, batch_size, recipe
        self.seed, self.fixed, self.epoch = seed, fixed, 0
        self._order = np.arange(len(data))
        if not fixed:
            self.on_epoch_end()

    def __len__(self) -> int:
        whole = len(self.data) // self.batch_size  # training: whole batches only
        return -(-len(self.data) // self.batch_size) if self.fixed else whole

    def on_epoch_end(self) -> None:
        if self.fixed:
            return
        self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.data))
        self.epoch += 1

    def __getitem__(self, index: int):
        idx = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        rng = np.random.default_rng([self.seed, 0 if self.fixed else self.epoch, index])
        measured = measure(self.data.objects[idx], rng, self.recipe)
        target = np.stack(
            [self.data.amplitude[idx], self.data.phase[idx], measured.magnitudes, measured.valid],
            axis=-1,
        ).astype(np.float32)
        inputs = {"magnitudes": measured.magnitudes, "valid": measured.valid.astype(np.float32)}
        return inputs, target
