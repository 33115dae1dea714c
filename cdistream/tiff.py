"""areaDetector TIFF series as beamlines save them: one frame per file (NDFileTIFF), named with
a counter, in a folder; or one multi-page TIFF. Read lazily with ``tifffile``, in name order."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdistream.errors import CdistreamError

__all__ = ["TiffSeries", "is_tiff_spec", "read_image", "tiff_series"]

_SUFFIXES = (".tif", ".tiff")
# what tifffile raises on a truncated or foreign file (its TiffFileError is a ValueError)
_BROKEN = (OSError, ValueError, IndexError, KeyError, EOFError)
# areaDetector's NDFileTIFF private tags: the NDArray's timeStamp and uniqueId
_TAG_TIMESTAMP, _TAG_UNIQUE_ID = 65000, 65001


class TiffError(CdistreamError):
    """TIFF files that hold no series of equal-sized 2D frames."""


def is_tiff_spec(spec: str) -> bool:
    """A folder, a glob pattern, or a file named .tif/.tiff."""
    path = Path(spec)
    return (
        path.is_dir()
        or any(ch in spec for ch in "*?[")
        or path.suffix.lower() in _SUFFIXES
    )


def _files(spec: str) -> list[str]:
    path = Path(spec)
    if path.is_dir():
        names = [str(p) for p in path.iterdir() if p.suffix.lower() in _SUFFIXES]
    else:
        names = glob.glob(spec)
    return sorted(names)


def read_image(path: str | Path) -> np.ndarray:
    """One 2D image from a TIFF file (a dark or flat-field image, say)."""
    import tifffile

    try:
        image = tifffile.imread(path)
    except _BROKEN as exc:
        raise TiffError(f"{path}: not a readable TIFF ({exc})") from None
    if image.ndim != 2:
        raise TiffError(f"{path}: expected one 2D image, got shape {image.shape}")
    return image


@dataclass
class TiffSeries:
    """Frames of a TIFF series, indexable like an HDF5 dataset: ``series[a:b]`` is a
    (b - a, rows, cols) array read from the files then."""

    files: list[str]
    pages: int  # frames per file: 1 for an areaDetector series, more for one multi-page file
    shape: tuple[int, int, int]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        import tifffile

        start, stop, _ = index.indices(self.shape[0])
        out = np.empty((max(stop - start, 0), *self.shape[1:]), self.dtype)
        for k, frame in enumerate(range(start, stop)):
            name, page = divmod(frame, self.pages)
            try:
                image = tifffile.imread(self.files[name], key=page)
            except _BROKEN as exc:
                raise TiffError(f"{self.files[name]}: not a readable TIFF ({exc})") from None
            if image.shape != self.shape[1:]:
                raise TiffError(
                    f"{self.files[name]}: {image.shape[0]}x{image.shape[1]}, the series' first"
                    f" frame is {self.shape[1]}x{self.shape[2]}"
                )
            out[k] = image
        return out

    def metadata(self) -> dict:
        """What the first file says: areaDetector's uniqueId and timeStamp where it wrote them."""
        import tifffile

        meta: dict = {"format": "tiff", "first_file": self.files[0], "files": len(self.files)}
        with tifffile.TiffFile(self.files[0]) as tif:
            tags = tif.pages[0].tags
            for code, name in ((_TAG_UNIQUE_ID, "first_unique_id"),
                               (_TAG_TIMESTAMP, "first_timestamp")):
                if code in tags and isinstance(tags[code].value, int | float):
                    meta[name] = tags[code].value
            software = tags.get(305)  # Software
            if software is not None:
                meta["software"] = str(software.value)
        return meta


def tiff_series(spec: str) -> TiffSeries:
    """The series named by ``spec``: a folder of TIFF files, a glob such as
    ``scan/S0054_*.tif``, or one (multi-page) TIFF file."""
    import tifffile

    files = _files(spec)
    if not files:
        raise TiffError(f"{spec}: no TIFF files")
    try:
        with tifffile.TiffFile(files[0]) as tif:
            pages = len(tif.pages)
            first = tif.pages[0]
            shape, dtype = tuple(first.shape), first.dtype
    except _BROKEN as exc:
        raise TiffError(f"{files[0]}: not a readable TIFF ({exc})") from None
    if len(shape) != 2:
        raise TiffError(f"{files[0]}: pages of shape {shape}, not 2D images")
    if len(files) > 1 and pages != 1:
        raise TiffError(f"{spec}: {len(files)} files of {pages} pages; give one at a time")
    count = len(files) * pages
    return TiffSeries(files, pages, (count, *shape), np.dtype(dtype))
