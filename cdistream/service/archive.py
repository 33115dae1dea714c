"""The archive: one NeXus file per run, which silx, NeXpy and h5web open and plot.

Never overwritten: the name carries the series, what makes the series unique (DECTRIS
``series_unique_id``, else the run's uid) and is created exclusively. Written batch by batch,
every column extended together and flushed, readable by another process while it is written
(HDF5 SWMR). A full disk must never interrupt a write (HDF5 then leaves a file no reader can
open), so before each batch the room left (free space, the process's file-size limit) is
checked; without room for the batch and a margin, the file is closed, consistent, and the
frames are counted by the caller as ``archive_failed``. A write that fails anyway is rolled
back, so the file's columns always have the same length.

Layout (NeXus; the CXI conventions of PyNX and cohere where they fit)::

    /entry                      NXentry, default -> data
      data/                     NXdata: signal amplitude (frames, N, N), axes frame
        amplitude, phase (rad), support, frame
      image_1/                  NXdata (CXI): data = amplitude * exp(i phase), complex64
      reconstruction/           NXprocess: program, version, model, model card, parameters,
        chi2, peak_offset, refined, trusted, timestamp
      instrument/detector/      NXdetector: the series metadata, roi (counts), valid, peak
      start_time, end_time, exit_status, title, run_uid
"""

from __future__ import annotations

import json
import logging
import re
import resource
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cdistream.errors import CdistreamError
from cdistream.inference import Reconstruction

__all__ = ["ArchiveError", "RunArchive", "archive_name"]

log = logging.getLogger(__name__)

_FIXED = "S64"  # fields written at close, when SWMR allows no new objects
CHUNK = 16  # frames per chunk of the image columns
MARGIN = 1 << 20  # bytes kept free for HDF5's metadata and the file's closing


class ArchiveError(CdistreamError):
    """The archive could not be created or written; the run goes on without it."""


def archive_name(series: int, unique: str) -> str:
    """``series_000007_<unique>.h5`` with anything but letters, digits, '-', '_' and '.' made
    '_' (a series_unique_id is the detector's text)."""
    label = re.sub(r"[^A-Za-z0-9._-]", "_", unique)[:64] or "run"
    return f"series_{series:06d}_{label}.h5"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


class RunArchive:
    """Create with the run's description; :meth:`append` each batch; :meth:`close` at the end."""

    def __init__(
        self,
        directory: str | Path,
        series: int,
        unique: str,
        n: int,
        run: dict[str, Any],
        detector: dict[str, Any],
        exact: bool = False,
    ):
        """One file in ``directory``, named by :func:`archive_name`; ``exact``: ``directory``
        is the file's own path, and an existing file there is an error, not a suffix."""
        directory = Path(directory)
        self.path = directory if exact else directory / archive_name(series, unique)
        self.rows = 0
        self._file: h5py.File | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._create(self.path, retry=not exact)
            self._layout(n, series, run, detector)
            self._file.swmr_mode = True  # from here, readers may open it with swmr=True
        except FileExistsError as exc:
            raise ArchiveError(f"will not overwrite: {exc}") from exc
        except Exception as exc:
            created = self._file is not None
            self._abandon()
            if created:  # our own half-made file, never someone else's
                self.path.unlink(missing_ok=True)
            raise ArchiveError(f"cannot create {self.path}: {exc}") from exc

    @staticmethod
    def _create(path: Path, retry: bool = True) -> h5py.File:
        """Exclusively: an existing file is never truncated; a name taken is suffixed."""
        for k in range(1000 if retry else 1):
            candidate = path if k == 0 else path.with_name(f"{path.stem}_{k}{path.suffix}")
            try:
                return h5py.File(candidate, "x", libver="latest")
            except FileExistsError:
                continue
        raise FileExistsError(f"{path} exists" + (" and 999 suffixed names" if retry else ""))

    def _layout(self, n: int, series: int, run: dict[str, Any], detector: dict[str, Any]) -> None:
        f = self._file
        self.path = Path(f.filename)
        f.attrs.update(
            {"NX_class": "NXroot", "default": "entry", "creator": "cdistream", "HDF5_Version":
             h5py.version.hdf5_version, "file_name": self.path.name, "file_time": _iso(time.time())}
        )
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "default": "data"})
        entry["title"] = f"cdistream reconstructions of detector series {series}"
        entry["run_uid"] = str(run.get("uid", ""))
        entry["start_time"] = _iso(run.get("time", time.time()))
        entry.create_dataset("end_time", data=b"", dtype=_FIXED)
        entry.create_dataset("exit_status", data=b"", dtype=_FIXED)

        image = {"shape": (0, n, n), "maxshape": (None, n, n), "chunks": (16, n, n)}
        column = {"shape": (0,), "maxshape": (None,), "chunks": (256,)}
        data = entry.create_group("data")
        data.attrs.update(
            {"NX_class": "NXdata", "signal": "amplitude", "axes": ["frame", ".", "."],
             "frame_indices": 0}
        )
        cols: dict[str, h5py.Dataset] = {}
        cols["amplitude"] = data.create_dataset("amplitude", dtype="f4", **image)
        cols["amplitude"].attrs["interpretation"] = "image"
        cols["phase"] = data.create_dataset("phase", dtype="f4", **image)
        cols["phase"].attrs.update({"units": "rad", "interpretation": "image"})
        cols["support"] = data.create_dataset("support", dtype="u1", **image)
        cols["frame"] = data.create_dataset("frame", dtype="i8", **column)

        cxi = entry.create_group("image_1")
        cxi.attrs.update({"NX_class": "NXdata", "signal": "data"})
        cols["object"] = cxi.create_dataset("data", dtype="c8", **image)
        cxi["frame"] = cols["frame"]  # a hard link, not a copy

        process = entry.create_group("reconstruction")
        process.attrs["NX_class"] = "NXprocess"
        process["program"] = "cdistream"
        process["version"] = str(run.get("cdistream_version", ""))
        process["date"] = _iso(time.time())
        process["model"] = str(run.get("model", ""))
        model = Path(str(run.get("model") or "model"))
        card = model.with_name("MODEL_CARD.md")
        process["model_card"] = card.read_text() if card.is_file() else ""
        params = {k: run[k] for k in ("roi", "max_batch", "max_wait_ms", "refine_above",
                                      "refine_iterations", "trust_threshold", "device") if k in run}
        process["parameters"] = json.dumps(params, default=str)
        cols["chi2"] = process.create_dataset("chi2", dtype="f4", **column)
        cols["peak_offset"] = process.create_dataset(
            "peak_offset", shape=(0, 2), maxshape=(None, 2), chunks=(256, 2), dtype="f4"
        )
        cols["peak_offset"].attrs["units"] = "pixel"
        cols["refined"] = process.create_dataset("refined", dtype="u1", **column)
        cols["trusted"] = process.create_dataset("trusted", dtype="u1", **column)
        cols["timestamp"] = process.create_dataset("timestamp", dtype="f8", **column)
        cols["timestamp"].attrs["units"] = "s"
        process["frame"] = cols["frame"]

        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        det = instrument.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        for key, value in detector.items():
            if isinstance(value, bool | int | float | str) and key.isidentifier():
                det[key] = value
        det["metadata"] = json.dumps(detector, default=str)
        cols["roi"] = det.create_dataset("data", dtype="f4", **image)
        cols["roi"].attrs.update({"units": "counts", "interpretation": "image"})
        cols["valid"] = det.create_dataset("valid", dtype="u1", **image)
        cols["peak_row"] = det.create_dataset("peak_row", dtype="i4", **column)
        cols["peak_col"] = det.create_dataset("peak_col", dtype="i4", **column)
        self._cols = cols
        self._frame_bytes = sum(
            d.dtype.itemsize * int(np.prod(d.shape[1:], dtype=np.int64)) for d in cols.values()
        )

    def append(
        self,
        frames: list[int],
        timestamps: list[float],
        rois: np.ndarray,
        valid: np.ndarray,
        peaks: np.ndarray,
        result: Reconstruction,
        refined: np.ndarray,
        trusted: np.ndarray,
    ) -> None:
        """One batch, every column extended together and flushed; on failure the batch is
        rolled back (columns keep one length) and :class:`ArchiveError` raised."""
        if self._file is None:
            raise ArchiveError(f"{self.path} was closed after an earlier failure")
        values = {
            "amplitude": result.amplitude,
            "phase": result.phase,
            "support": result.support,
            "frame": np.asarray(frames),
            "object": result.complex_object().astype(np.complex64),
            "chi2": result.chi2,
            "peak_offset": result.peak_offset,
            "refined": refined,
            "trusted": trusted,
            "timestamp": np.asarray(timestamps),
            "roi": rois,
            "valid": valid,
            "peak_row": peaks[:, 0],
            "peak_col": peaks[:, 1],
        }
        self._check_room(len(frames))
        start, stop = self.rows, self.rows + len(frames)
        try:
            for name, dset in self._cols.items():
                dset.resize(stop, axis=0)
                dset[start:stop] = values[name]
            self._file.flush()
        except Exception as exc:
            self._rollback(start)
            raise ArchiveError(f"writing {len(frames)} frames to {self.path}: {exc}") from exc
        self.rows = stop

    def _check_room(self, frames: int) -> None:
        """Close the file before a write that would not fit (a new chunk of every column, plus
        the margin); :class:`ArchiveError` then, and for every later batch."""
        needed = (frames + CHUNK) * self._frame_bytes + MARGIN
        size = self.path.stat().st_size
        room = shutil.disk_usage(self.path.parent).free
        limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if limit != resource.RLIM_INFINITY:
            room = min(room, limit - size)
        if needed > room:
            self.close("fail")
            raise ArchiveError(
                f"{self.path}: {room} bytes left, {needed} needed for {frames} frames;"
                f" closed with {self.rows} frames"
            )

    def _rollback(self, rows: int) -> None:
        try:
            for dset in self._cols.values():
                dset.resize(rows, axis=0)
            self._file.flush()
        except Exception:  # the file cannot even be shrunk: stop writing to it
            log.exception("cannot roll %s back to %d rows; closing it", self.path, rows)
            self._abandon()

    def close(self, exit_status: str = "success") -> None:
        if self._file is None:
            return
        try:
            self._file["entry/end_time"][()] = _iso(time.time()).encode()
            self._file["entry/exit_status"][()] = exit_status.encode()
        except Exception:
            log.exception("cannot write the end of %s", self.path)
        self._abandon()
        log.info("archived %d frames in %s", self.rows, self.path)

    def _abandon(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except Exception:
                log.exception("closing %s failed", self.path)
