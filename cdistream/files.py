"""Detector frames saved in files, read lazily: a DECTRIS file-writer master file (its data
files linked from ``/entry/data``, bitshuffle/LZ4 through ``hdf5plugin``), any HDF5 stack
named as ``FILE.h5::/path/to/dataset`` (NeXus, areaDetector), an areaDetector TIFF series (a
folder, a glob or a multi-page file, :mod:`cdistream.tiff`), or a cdistream archive (its saved
ROIs, to re-run a newer model on them). Raw frames can be dark- and flat-field corrected on the
way (:mod:`cdistream.calibration`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cdistream.calibration import Calibration
from cdistream.errors import CdistreamError
from cdistream.tiff import TiffSeries, is_tiff_spec, read_image, tiff_series
from cdistream.wire.eiger_v1 import DETECTOR_CONFIG_NAMES

__all__ = [
    "CalibrationFiles",
    "FrameSource",
    "SavedFramesError",
    "add_calibration_args",
    "open_source",
]


class SavedFramesError(CdistreamError):
    """A file (or dataset) that holds no frames this reader understands."""


@dataclass
class FrameSource:
    """Frames of one file: ``count`` images of ``shape``; ``rois`` True when they are already
    cropped ROIs (a cdistream archive), with ``valid`` masks beside them."""

    path: str
    count: int
    shape: tuple[int, int]
    dtype: str
    mask: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)
    rois: bool = False
    _stacks: list[h5py.Dataset | TiffSeries] = field(default_factory=list, repr=False)
    _valid: h5py.Dataset | None = field(default=None, repr=False)
    _file: h5py.File | None = field(default=None, repr=False)
    calibration: Calibration | None = None

    def calibrate(self, calibration: Calibration) -> None:
        """Correct every frame read from now on; its uncorrectable pixels join the mask."""
        if self.rois:
            raise SavedFramesError(f"{self.path}: cropped ROIs cannot be dark/flat corrected")
        self.calibration = calibration
        self.mask = calibration.mask if self.mask is None else self.mask | calibration.mask
        self.dtype = "float32"

    def frames(self, chunk: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(frames, valid masks or None) in chunks of up to ``chunk`` images, in order."""
        for stack_index, stack in enumerate(self._stacks):
            for start in range(0, stack.shape[0], chunk):
                block = stack[start : start + chunk]
                if self.calibration is not None:
                    block = self.calibration.apply(block)
                valid = None
                if self._valid is not None and stack_index == 0:
                    valid = self._valid[start : start + chunk].astype(bool)
                yield block, valid

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _scalar(node: Any) -> Any:
    value = node[()]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, int | float | str) else None


def _dectris(f: h5py.File, path: str) -> FrameSource:
    data = f["entry/data"]
    names = sorted(k for k in data if k.startswith("data_"))
    stacks = []
    for name in names:
        try:
            stacks.append(data[name])
        except KeyError:  # a linked data file that is not there
            raise SavedFramesError(f"{path}: {name} links to a data file that is missing") from None
    det = f.get("entry/instrument/detector")
    meta: dict[str, Any] = {"format": "dectris-file"}
    mask, saturation = None, None
    if det is not None:
        for key, name in DETECTOR_CONFIG_NAMES.items():
            if key in det:
                meta[name] = _scalar(det[key])
        specific = det.get("detectorSpecific")
        if specific is not None:
            if "pixel_mask" in specific:
                mask = specific["pixel_mask"][()] != 0
            if "countrate_correction_count_cutoff" in specific:
                saturation = _scalar(specific["countrate_correction_count_cutoff"])
    beam = f.get("entry/instrument/beam")
    if beam is not None and "incident_wavelength" in beam:
        meta["wavelength"] = _scalar(beam["incident_wavelength"])
    if saturation is not None:
        meta["saturation_value"] = saturation
    shape = tuple(stacks[0].shape[1:])
    count = sum(s.shape[0] for s in stacks)
    return FrameSource(path, count, shape, stacks[0].dtype.name, mask, meta, False, stacks, None, f)


def _archive(f: h5py.File, path: str) -> FrameSource:
    det = f["entry/instrument/detector"]
    rois = det["data"]
    meta = json.loads(_scalar(det["metadata"]) or "{}") if "metadata" in det else {}
    meta = {**meta, "format": "cdistream-archive", "source_run": _scalar(f["entry/run_uid"])}
    return FrameSource(path, rois.shape[0], tuple(rois.shape[1:]), "float32", None, meta, True,
                       [rois], det["valid"], f)


def _dataset(f: h5py.File, path: str, name: str) -> FrameSource:
    if name not in f:
        raise SavedFramesError(f"{path}: no dataset {name}")
    stack = f[name]
    if not isinstance(stack, h5py.Dataset) or stack.ndim not in (2, 3):
        raise SavedFramesError(f"{path}::{name}: not an image or a stack of images")
    if stack.ndim == 2:
        stack = stack[()][None]
    mask = None
    for candidate in ("entry/instrument/detector/pixel_mask", "mask"):
        if candidate in f and f[candidate].shape == stack.shape[1:]:
            mask = f[candidate][()] != 0
    return FrameSource(path, stack.shape[0], tuple(stack.shape[1:]), stack.dtype.name, mask,
                       {"format": "hdf5", "dataset": name}, False, [stack], None, f)


@dataclass(frozen=True)
class CalibrationFiles:
    """Dark and flat-field images (TIFF, or ``FILE.h5::/dataset``) to correct raw frames with;
    ``origin``: where the frames start on the detector when the images cover all of it."""

    dark: str | None = None
    flat: str | None = None
    origin: tuple[int, int] | None = None

    def load(self, shape: tuple[int, int]) -> Calibration | None:
        if self.dark is None and self.flat is None:
            return None
        images = [None if p is None else _image(p) for p in (self.dark, self.flat)]
        return Calibration.build(shape, images[0], images[1], self.origin)


def _image(spec: str) -> np.ndarray:
    if is_tiff_spec(spec) and "::" not in spec:
        return read_image(spec)
    with open_source(spec) as source:
        block, _ = next(source.frames(chunk=1))
        return block[0]


def _tiff(spec: str) -> FrameSource:
    series = tiff_series(spec)
    return FrameSource(spec, series.shape[0], series.shape[1:], series.dtype.name, None,
                       series.metadata(), False, [series], None, None)


def open_source(spec: str | Path, calibration: CalibrationFiles | None = None) -> FrameSource:
    """Open ``FILE.h5::/dataset``, a DECTRIS master file, a cdistream archive or a TIFF series
    (folder, glob, file), its frames corrected by ``calibration`` when given."""
    source = _open(str(spec))
    if calibration is not None:
        try:
            correction = calibration.load(source.shape)
            if correction is not None:
                source.calibrate(correction)
        except Exception:
            source.close()
            raise
    return source


def _open(text: str) -> FrameSource:
    import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters with HDF5)

    if "::" not in text and is_tiff_spec(text):
        return _tiff(text)
    path, _, name = text.partition("::")
    if not Path(path).is_file():
        raise SavedFramesError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise SavedFramesError(f"{path}: not an HDF5 file ({exc})") from None
    try:
        if name:
            return _dataset(f, path, name.lstrip("/"))
        if "entry/reconstruction" in f and "entry/instrument/detector/data" in f:
            return _archive(f, path)
        data = f.get("entry/data")
        if isinstance(data, h5py.Group) and any(k.startswith("data_") for k in data):
            return _dectris(f, path)
        for candidate in ("entry/data/data", "frames"):
            if candidate in f:
                return _dataset(f, path, candidate)
    except Exception:
        f.close()
        raise
    f.close()
    raise SavedFramesError(
        f"{path}: no frames found; name the dataset as {path}::/entry/data/data"
    )


def _origin(text: str) -> tuple[int, int]:
    """ROW,COL -> (row, col)."""
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ROW,COL") from None
    return row, col


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    """--dark, --flat, --calibration-origin: shared by `reconstruct` and the simulator's replay."""
    p.add_argument("--dark", default=None, help="dark image subtracted from every raw frame")
    p.add_argument("--flat", default=None, help="flat-field image every raw frame is divided by")
    p.add_argument("--calibration-origin", type=_origin, default=None, metavar="ROW,COL",
                   help="the frames' first pixel on the detector, when the dark and flat"
                   " images cover the whole detector and the frames a region of it")
