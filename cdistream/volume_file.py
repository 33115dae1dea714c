"""A 3D reconstruction in one NeXus file that h5py, silx and h5web open with the crystal's
amplitude as the default plot (NXroot -> NXentry -> NXdata), with the CXI convention's complex
image (``/entry/image_1/data``, as PyNX and cohere write it), the measured cube and the
parameters; never overwritten."""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np

from cdistream._version import __version__
from cdistream.volume import Cube, Volume

__all__ = ["STREAM_DATASETS", "VOLUME_DATASETS", "read_volume", "volume_path", "write_volume"]

# where each array lives, for readers
VOLUME_DATASETS = {
    "amplitude": "/entry/data/amplitude",
    "phase": "/entry/data/phase",
    "support": "/entry/data/support",
}
# the same arrays as one event of a Bluesky stream (a leading axis of 1: virtual datasets on
# the ones above, no copy), for the StreamResources that announce them to Tiled
STREAM_DATASETS = {name: f"/entry/volume_stream/{name}" for name in VOLUME_DATASETS}


def volume_path(archive: str | Path) -> Path:
    """The volume beside a run's archive: ``series_7_ab12.h5`` -> ``series_7_ab12_volume.h5``."""
    archive = Path(archive)
    return archive.with_name(archive.stem + "_volume.h5")


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + "Z"


def write_volume(path: str | Path, volume: Volume, cube: Cube, meta: dict | None = None) -> Path:
    """Write ``volume`` (and the ``cube`` it came from) to a new file at ``path``."""
    path = Path(path)
    depth, rows, cols = volume.obj.shape
    with h5py.File(path, "w-") as f:  # w-: an existing file is never overwritten
        f.attrs.update({"NX_class": "NXroot", "default": "entry", "creator": "cdistream",
                        "file_time": _iso(time.time())})
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "default": "data"})
        entry["title"] = "cdistream 3D reconstruction of a rocking scan"
        entry["program_name"] = f"cdistream {__version__}"
        data = entry.create_group("data")
        data.attrs.update({"NX_class": "NXdata", "signal": "amplitude",
                           "axes": ["rocking", "row", "col"],
                           "rocking_indices": 0, "row_indices": 1, "col_indices": 2})
        data.create_dataset("amplitude", data=volume.amplitude, compression="gzip")
        phase = data.create_dataset("phase", data=volume.phase, compression="gzip")
        phase.attrs["units"] = "rad"
        data.create_dataset("support", data=volume.support.astype(np.uint8), compression="gzip")
        rocking = cube.motor if cube.motor is not None else cube.frames.astype(float)
        data["rocking"] = rocking
        data["rocking"].attrs["long_name"] = ("rocking motor position" if cube.motor is not None
                                              else "detector frame")
        data["row"] = np.arange(rows) - rows // 2 + cube.centre[0]
        data["col"] = np.arange(cols) - cols // 2 + cube.centre[1]
        stream = entry.create_group("volume_stream")
        stream.attrs["note"] = "the arrays above as one event (a leading axis of 1), for Tiled"
        for name in VOLUME_DATASETS:
            source = data[name]
            layout = h5py.VirtualLayout(shape=(1, *source.shape), dtype=source.dtype)
            layout[0] = h5py.VirtualSource(source)
            stream.create_virtual_dataset(name, layout)
        image = entry.create_group("image_1")  # CXI: the complex object
        image.attrs["NX_class"] = "NXdata"
        image.attrs["signal"] = "data"
        image.create_dataset("data", data=volume.obj.astype(np.complex64), compression="gzip")
        image.create_dataset("support", data=volume.support.astype(np.uint8))
        process = entry.create_group("process_1")
        process.attrs["NX_class"] = "NXprocess"
        process["program"] = "cdistream"
        process["version"] = __version__
        process["date"] = _iso(time.time())
        process["parameters"] = json.dumps(volume.params)
        process["chi2"] = volume.chi2
        process["starts_chi2"] = np.asarray(volume.starts_chi2)
        process["seconds"] = volume.seconds
        process["note"] = ("support: the amplitude blurred by a 1-voxel Gaussian above 10% of"
                           " its maximum; phase in radians, 0 outside it")
        image["process_1"] = process  # the CXI link from the image to how it was made
        det = entry.create_group("instrument").create_group("detector")
        entry["instrument"].attrs["NX_class"] = "NXinstrument"
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("data", data=cube.magnitudes**2, compression="gzip")
        det["data"].attrs.update({"units": "counts", "interpretation": "image"})
        det.create_dataset("valid", data=cube.valid.astype(np.uint8), compression="gzip")
        det["frames"] = cube.frames
        det["window_centre"] = np.asarray(cube.centre)
        det["metadata"] = json.dumps(meta or {}, default=str)
    return path


def read_volume(path: str | Path) -> dict[str, np.ndarray]:
    """amplitude, phase, support, object (complex) and the measured counts of a volume file."""
    with h5py.File(path, "r") as f:
        out = {name: f[where][()] for name, where in VOLUME_DATASETS.items()}
        out["object"] = f["entry/image_1/data"][()]
        out["counts"] = f["entry/instrument/detector/data"][()]
        out["chi2"] = float(f["entry/process_1/chi2"][()])
        out["rocking"] = f["entry/data/rocking"][()]
    return out
