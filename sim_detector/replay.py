"""Replay frames recorded in HDF5 (a NeXus/DECTRIS master-style ``/entry/data/data`` stack, or
a top-level ``frames`` dataset), optionally with a pixel mask dataset beside them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

__all__ = ["FRAME_PATHS", "open_frames"]

FRAME_PATHS = ("entry/data/data", "frames")
MASK_PATHS = ("entry/instrument/detector/pixel_mask", "mask")


def open_frames(
    path: str | Path,
) -> tuple[int, tuple[int, int], str, np.ndarray | None, Iterator[np.ndarray]]:
    """(count, shape, dtype, mask, iterator over frames) of an HDF5 stack, read lazily."""
    f = h5py.File(path, "r")
    name = next((p for p in FRAME_PATHS if p in f), None)
    if name is None:
        f.close()
        raise ValueError(f"{path}: no frame stack at any of {FRAME_PATHS}")
    data = f[name]
    if data.ndim != 3:
        f.close()
        raise ValueError(f"{path}:{name} has shape {data.shape}, expected (frames, rows, cols)")
    mask_name = next((p for p in MASK_PATHS if p in f), None)
    mask = f[mask_name][()].astype(bool) if mask_name else None

    def frames() -> Iterator[np.ndarray]:
        with f:
            for i in range(data.shape[0]):
                yield data[i]

    return data.shape[0], tuple(data.shape[1:]), data.dtype.name, mask, frames()
