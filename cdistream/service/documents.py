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

__all__ = ["RECON_KEYS", "REJECTED_KEYS", "RunComposer"]

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
        "latency": _scalar("number", "s"),
    }


REJECTED_KEYS = {"frame": _scalar("integer"), "reason": _scalar("string")}


class RunComposer:
    """Composes and emits the documents of one run; ``emit(name, doc)`` publishes them."""

    def __init__(self, emit: Emit, n: int, metadata: dict[str, Any]):
        self._emit = emit
        self._bundle = event_model.compose_run(metadata=metadata)
        self.start: RunStart = self._bundle.start_doc
        emit("start", self.start)
        self._primary = self._bundle.compose_descriptor(
            name="primary",
            data_keys=RECON_KEYS(n),
            hints={SOURCE: {"fields": ["chi2", "phase_std"]}},
        )
        self.descriptor: EventDescriptor = self._primary.descriptor_doc
        emit("descriptor", self.descriptor)
        self._rejected = None
        self.events = 0

    def reconstructions(
        self, frames: list[tuple[int, float, Crop]], result: Reconstruction
    ) -> list[Event]:
        """One event per frame of a batch: (frame number, detector timestamp, crop) each."""
        events = []
        # per-frame statistics for the whole batch at once (phase is 0 outside the support)
        area = result.support.sum(axis=(1, 2))
        inside = np.maximum(area, 1)
        mean = result.phase.sum(axis=(1, 2), dtype=np.float64) / inside
        square = np.square(result.phase, dtype=np.float64).sum(axis=(1, 2)) / inside
        std = np.sqrt(np.maximum(square - mean**2, 0))
        for k, (frame, stamp, crop) in enumerate(frames):
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
                "latency": now - stamp,
            }
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

    def stop(self, counts: dict, exit_status: str = "success", reason: str = "") -> RunStop:
        """Close the run; ``counts`` (where every frame went) ride along in the stop document."""
        doc = dict(
            self._bundle.compose_stop(exit_status=exit_status, reason=reason, validate=False)
        )
        doc[SOURCE] = counts
        event_model.schema_validators[event_model.DocumentNames.stop].validate(doc)
        self._emit("stop", doc)
        return doc  # type: ignore[return-value]
