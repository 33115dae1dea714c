"""Optional HDF5 archive: one file per detector series with every reconstruction, the ROI it
came from, chi2, frame number and peak position; appended batch by batch."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from cdistream.inference import Reconstruction

__all__ = ["SeriesArchive"]

log = logging.getLogger(__name__)


class SeriesArchive:
    """``<dir>/series_<n>.h5`` with resizable datasets along the first axis."""

    def __init__(self, directory: str | Path, series: int, n: int, attrs: dict | None = None):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"series_{series:06d}.h5"
        self._file = h5py.File(self.path, "w")
        for key, value in (attrs or {}).items():
            self._file.attrs[key] = value if isinstance(value, int | float | str) else str(value)
        image = {"shape": (0, n, n), "maxshape": (None, n, n), "chunks": (16, n, n)}
        scalar = {"shape": (0,), "maxshape": (None,), "chunks": (256,)}
        self._dsets = {
            "roi": self._file.create_dataset("roi", dtype="f4", **image),
            "amplitude": self._file.create_dataset("amplitude", dtype="f4", **image),
            "phase": self._file.create_dataset("phase", dtype="f4", **image),
            "chi2": self._file.create_dataset("chi2", dtype="f4", **scalar),
            "frame": self._file.create_dataset("frame", dtype="i8", **scalar),
            "peak_row": self._file.create_dataset("peak_row", dtype="i4", **scalar),
            "peak_col": self._file.create_dataset("peak_col", dtype="i4", **scalar),
        }
        self._file["phase"].attrs["units"] = "rad"

    def append(
        self, frames: list[int], rois: np.ndarray, peaks: np.ndarray, result: Reconstruction
    ) -> None:
        columns = {
            "roi": rois,
            "amplitude": result.amplitude,
            "phase": result.phase,
            "chi2": result.chi2,
            "frame": np.asarray(frames),
            "peak_row": peaks[:, 0],
            "peak_col": peaks[:, 1],
        }
        for name, values in columns.items():
            dset = self._dsets[name]
            start = dset.shape[0]
            dset.resize(start + len(values), axis=0)
            dset[start:] = values

    def close(self) -> None:
        self._file.close()
        log.info("archived %s", self.path)
