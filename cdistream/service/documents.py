"""Bluesky event-model documents for one detector series: a run whose ``primary`` stream holds
one event per reconstructed frame and whose ``rejected`` stream names every numbered frame
that was not reconstructed, and why."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import event_model
import numpy as np
from event_model.documents import Event, EventDescriptor, RunStart, RunStop

from cdistream.inference import Reconstruction
from cdistream.roi import Crop

__all__ = [
    "ARCHIVED",
    "ARCHIVE_KEYS",
    "MODEL_KEYS",
    "RECON_KEYS",
    "REJECTED_KEYS",
    "VOLUME_KEYS",
    "RunComposer",
]

Emit = Callable[[str, dict], None]
SOURCE = "cdistream"


def _array(n: int, dtype: str) -> dict:
    return {"source": SOURCE, "dtype": "array", "shape": [n, n], "dtype_numpy": dtype}


def _scalar(dtype: str, units: str | None = None) -> dict:
    key: dict[str, Any] = {"source": SOURCE, "dtype": dtype, "shape": []}
    if units:
        key["units"] = units
    return key


def RECON_KEYS(n: int) -> dict[str, dict]:  # noqa: N802 (a table, named like a constant)
    """Data keys of the ``primary`` stream for N x N reconstructions."""
    return {
        "frame": _scalar("integer"),
        "amplitude": _array(n, "<f4"),
        "phase": {**_array(n, "<f4"), "units": "rad"},
        "support": _array(n, "|b1"),
        "chi2": _scalar("number"),
        "support_area": _scalar("integer", "pixels"),
        "phase_mean": _scalar("number", "rad"),
        "phase_std": _scalar("number", "rad"),
        "peak_row": _scalar("integer", "pixels"),
        "peak_col": _scalar("integer", "pixels"),
        "peak_offset_row": _scalar("number", "pixels"),
        "peak_offset_col": _scalar("number", "pixels"),
        "masked_pixels": _scalar("integer", "pixels"),
        "saturated_pixels": _scalar("integer", "pixels"),
        "refined": _scalar("boolean"),
        "trusted": _scalar("boolean"),
        "latency": _scalar("number", "s"),
        "model_version": _scalar("string"),
    }


REJECTED_KEYS = {"frame": _scalar("integer"), "reason": _scalar("string")}

# the ``model`` stream: one event per change of the networks in service (serve --adapt)
MODEL_KEYS = {
    "version": _scalar("string"), "previous": _scalar("string"), "reason": _scalar("string"),
    "chi2_before": _scalar("number"), "chi2_after": _scalar("number"),
    "chi2_shipped": _scalar("number"), "judged_frames": _scalar("integer"),
    "tuned_frames": _scalar("integer"), "file": _scalar("string"),
}

# the arrays of the ``archive`` stream, in the run's NeXus file (external: StreamDatum)
ARCHIVED = {"amplitude": "/entry/data/amplitude", "phase": "/entry/data/phase"}


def ARCHIVE_KEYS(n: int) -> dict[str, dict]:  # noqa: N802 (a table, named like a constant)
    """Data keys of the ``archive`` stream: the archived arrays, stored in HDF5."""
    keys = {name: {**_array(n, "<f4"), "external": "STREAM:"} for name in ARCHIVED}
    keys["phase"]["units"] = "rad"
    return keys


def VOLUME_KEYS(shape: tuple[int, ...]) -> dict[str, dict]:  # noqa: N802 (a table)
    """Data keys of the ``volume`` stream: the 3D reconstruction, stored in HDF5."""
    def key(dtype: str) -> dict:
        return {"source": SOURCE, "dtype": "array", "shape": list(shape), "dtype_numpy": dtype,
                "external": "STREAM:"}

    return {"amplitude": key("<f4"), "phase": {**key("<f4"), "units": "rad"},
            "support": key("|u1")}


class RunComposer:
    """Composes and emits the documents of one run; ``emit(name, doc)`` publishes them."""

    def __init__(
        self,
        emit: Emit,
        n: int,
        metadata: dict[str, Any],
        binning: int = 1,
        uid: str | None = None,
        motors: tuple[str, ...] = (),
    ):
        self._emit = emit
        self._binning = binning  # detector pixels per ROI pixel, for the peak offset
        self._counters: dict[str, int] = {}  # events per stream, for the stop document
        self._bundle = event_model.compose_run(
            uid=uid, metadata=metadata, event_counters=self._counters
        )
        self.start: RunStart = self._bundle.start_doc
        emit("start", self.start)
        keys = RECON_KEYS(n)
        # the detector's per-frame numbers (motor positions): under their own names
        self._motors = {m: (m if m not in keys else f"motor_{m}") for m in motors}
        keys.update({key: _scalar("number") for key in self._motors.values()})
        self._primary = self._bundle.compose_descriptor(
            name="primary",
            data_keys=keys,
            hints={SOURCE: {"fields": ["chi2", "phase_std"]}},
        )
        self.descriptor: EventDescriptor = self._primary.descriptor_doc
        emit("descriptor", self.descriptor)
        self._rejected = None
        self._model = None  # the ``model`` stream, at its first change
        self._archive = None  # (descriptor bundle, {name: stream resource bundle})
        self._archived = 0
        self.events = 0

    def reconstructions(
        self,
        frames: list[tuple[int, float, Crop, dict[str, float]]],
        result: Reconstruction,
        refined: np.ndarray,
        trusted: np.ndarray,
        model_versions: list[str] | None = None,
    ) -> list[Event]:
        """One event per frame of a batch: (frame number, detector timestamp, crop, positions)
        each, per frame whether the trust gate refined it, whether it is trusted, and the
        version of the networks that made it."""
        events = []
        # per-frame statistics for the whole batch at once: the phase's mean and spread on the
        # support weighted by amplitude, so that the faint edge, whose phase the data hardly
        # fix, does not outweigh the crystal's body
        area = result.support.sum(axis=(1, 2))
        weight = np.where(result.support, result.amplitude, 0.0).astype(np.float64)
        total = np.maximum(weight.sum(axis=(1, 2)), 1e-12)
        mean = (weight * result.phase).sum(axis=(1, 2)) / total
        square = (weight * np.square(result.phase, dtype=np.float64)).sum(axis=(1, 2)) / total
        std = np.sqrt(np.maximum(square - mean**2, 0))
        binning = self._binning
        for k, (frame, stamp, crop, positions) in enumerate(frames):
            now = time.time()
            data = {
                "frame": frame,
                "amplitude": result.amplitude[k],
                "phase": result.phase[k],
                "support": result.support[k],
                "chi2": float(result.chi2[k]),
                "support_area": int(area[k]),
                "phase_mean": float(mean[k]),
                "phase_std": float(std[k]),
                "peak_row": crop.peak_row,
                "peak_col": crop.peak_col,
                "peak_offset_row": float(result.peak_offset[k, 0]) * binning,
                "peak_offset_col": float(result.peak_offset[k, 1]) * binning,
                "masked_pixels": int(crop.valid.size - np.count_nonzero(crop.valid)),
                "saturated_pixels": crop.saturated,
                "refined": bool(refined[k]),
                "trusted": bool(trusted[k]),
                "latency": now - stamp,
                "model_version": model_versions[k] if model_versions else "",
            }
            for motor, key in self._motors.items():
                data[key] = positions.get(motor, float("nan"))
            stamps = dict.fromkeys(data, stamp)
            # built from fixed keys by this code, so not re-validated per frame: jsonschema on
            # three arrays cost ~1 ms an event, more than the networks (the tests validate)
            event = self._primary.compose_event(
                data=data, timestamps=stamps, time=now, validate=False
            )
            self._emit("event", event)
            events.append(event)
        self.events += len(events)
        return events

    def archive(self, path: str, n: int) -> None:
        """Declare the run's archive: an ``archive`` stream whose arrays are external, in the
        NeXus file at ``path`` (a StreamResource per array), for TiledWriter & co."""
        stream = self._bundle.compose_descriptor(name="archive", data_keys=ARCHIVE_KEYS(n))
        self._emit("descriptor", stream.descriptor_doc)
        resources = {}
        for name, dataset in ARCHIVED.items():
            resource = self._bundle.compose_stream_resource(
                mimetype="application/x-hdf5",
                uri=f"file://localhost{path}",
                data_key=name,
                parameters={"dataset": dataset, "chunk_shape": [16, n, n], "swmr": True},
            )
            self._emit("stream_resource", resource.stream_resource_doc)
            resources[name] = resource
        self._archive = (stream, resources)

    def archived(self, rows: int) -> None:
        """``rows`` more frames are in the archive: a StreamDatum per array."""
        if self._archive is None or rows <= 0:
            return
        stream, resources = self._archive
        start, stop = self._archived, self._archived + rows
        for resource in resources.values():
            datum = resource.compose_stream_datum(
                indices={"start": start, "stop": stop},
                seq_nums={"start": start + 1, "stop": stop + 1},
                descriptor=stream.descriptor_doc,
                validate=False,
            )
            self._emit("stream_datum", datum)
        self._archived = stop
        self._counters["archive"] = stop + 1  # event-model keeps the next seq_num here

    def volume(self, path: str, shape: tuple[int, ...], datasets: dict[str, str]) -> None:
        """Announce the run's 3D reconstruction: a ``volume`` stream of one event whose arrays
        (``shape``) are external, in the file at ``path`` (``datasets``: name -> HDF5 path,
        each with a leading axis of 1), a StreamResource and a StreamDatum per array."""
        stream = self._bundle.compose_descriptor(name="volume", data_keys=VOLUME_KEYS(shape))
        self._emit("descriptor", stream.descriptor_doc)
        for name, dataset in datasets.items():
            resource = self._bundle.compose_stream_resource(
                mimetype="application/x-hdf5",
                uri=f"file://localhost{path}",
                data_key=name,
                parameters={"dataset": dataset, "chunk_shape": [1, *shape]},
            )
            self._emit("stream_resource", resource.stream_resource_doc)
            datum = resource.compose_stream_datum(
                indices={"start": 0, "stop": 1},
                seq_nums={"start": 1, "stop": 2},
                descriptor=stream.descriptor_doc,
                validate=False,
            )
            self._emit("stream_datum", datum)
        self._counters["volume"] = 2  # event-model keeps the next seq_num here

    def rejection(self, frame: int, reason: str) -> Event:
        """Publish that ``frame`` will not be reconstructed, in the ``rejected`` stream."""
        if self._rejected is None:
            self._rejected = self._bundle.compose_descriptor(
                name="rejected", data_keys=REJECTED_KEYS
            )
            self._emit("descriptor", self._rejected.descriptor_doc)
        now = time.time()
        data = {"frame": frame, "reason": reason}
        event = self._rejected.compose_event(
            data=data, timestamps=dict.fromkeys(data, now), time=now, validate=False
        )
        self._emit("event", event)
        return event

    def model_changed(self, data: dict) -> Event:
        """Publish that the networks in service changed (:data:`MODEL_KEYS`): from the next
        event on, ``model_version`` names ``data["version"]``."""
        if self._model is None:
            self._model = self._bundle.compose_descriptor(name="model", data_keys=MODEL_KEYS)
            self._emit("descriptor", self._model.descriptor_doc)
        now = time.time()
        event = self._model.compose_event(data=data, timestamps=dict.fromkeys(data, now),
                                          time=now)
        self._emit("event", event)
        return event

    def stop(self, counts: dict, exit_status: str = "success", reason: str = "") -> RunStop:
        """Close the run; ``counts`` (where every frame went) ride along in the stop document."""
        doc = dict(
            self._bundle.compose_stop(exit_status=exit_status, reason=reason, validate=False)
        )
        doc[SOURCE] = counts
        event_model.schema_validators[event_model.DocumentNames.stop].validate(doc)
        self._emit("stop", doc)
        return doc  # type: ignore[return-value]
