"""Replay frames saved in files, read by the same code as ``cdistream reconstruct``
(:mod:`cdistream.files`): a DECTRIS file-writer master file with its linked, bitshuffle/LZ4
compressed data files, any HDF5 stack named as ``FILE.h5::/path/to/dataset`` (NeXus,
areaDetector), a file with ``/entry/data/data`` or ``/frames``, with its pixel mask, or an
areaDetector TIFF series (folder, glob or multi-page file), dark- and flat-field corrected when
asked. Frames go out in a pixel type the chosen wire format carries, as that detector would
send them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cdistream.files import CalibrationFiles, open_source

__all__ = ["open_frames", "wire_dtype"]

# what each format's detectors send: DECTRIS unsigned counts; areaDetector any NDArray type
_NATIVE = {"uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64"}
_UNSIGNED_ONLY = ("native", "eiger-v1", "eiger-v2")


def wire_dtype(format: str, dtype: str) -> str:
    """The pixel type frames of ``dtype`` travel in over ``format``: DECTRIS streams carry
    unsigned counts (signed or corrected frames go as uint32), areaDetector's ADZMQ and PVA
    any NDArray type."""
    if format in _UNSIGNED_ONLY:
        return dtype if dtype in ("uint8", "uint16", "uint32") else "uint32"
    return dtype if dtype in _NATIVE else "float32"


def _convert(image: np.ndarray, dtype: str) -> np.ndarray:
    if image.dtype == dtype:
        return image
    target = np.dtype(dtype)
    if target.kind == "u":  # counts: rounded, never negative, clipped at the type's top
        top = np.iinfo(target).max
        return np.clip(np.rint(image), 0, top).astype(target)
    return image.astype(target)


def open_frames(
    spec: str | Path,
    calibration: CalibrationFiles | None = None,
    format: str = "native",
) -> tuple[int, tuple[int, int], str, np.ndarray | None, dict, Iterator[np.ndarray]]:
    """(count, shape, dtype on the wire, mask, metadata, iterator over frames) of saved
    frames, read lazily."""
    source = open_source(spec, calibration)
    if source.rois:
        source.close()
        raise ValueError(f"{spec}: a cdistream archive holds cropped ROIs, not detector frames")
    dtype = wire_dtype(format, source.dtype)

    def frames() -> Iterator[np.ndarray]:
        with source:
            for block, _ in source.frames():
                for image in block:
                    yield _convert(image, dtype)

    meta = {k: v for k, v in source.meta.items() if isinstance(v, str | int | float | bool)}
    return source.count, source.shape, dtype, source.mask, meta, frames()
