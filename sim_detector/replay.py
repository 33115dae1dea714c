"""Replay frames saved in files, read by the same code as ``cdistream reconstruct``
(:mod:`cdistream.files`): a DECTRIS file-writer master file with its linked, bitshuffle/LZ4
compressed data files, any HDF5 stack named as ``FILE.h5::/path/to/dataset`` (NeXus,
areaDetector), or a file with ``/entry/data/data`` or ``/frames``, with its pixel mask."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cdistream.files import open_source

__all__ = ["open_frames"]


def open_frames(
    spec: str | Path,
) -> tuple[int, tuple[int, int], str, np.ndarray | None, Iterator[np.ndarray]]:
    """(count, shape, dtype, mask, iterator over frames) of saved frames, read lazily."""
    source = open_source(spec)
    if source.rois:
        source.close()
        raise ValueError(f"{spec}: a cdistream archive holds cropped ROIs, not detector frames")

    def frames() -> Iterator[np.ndarray]:
        with source:
            for block, _ in source.frames():
                yield from block

    return source.count, source.shape, source.dtype, source.mask, frames()
