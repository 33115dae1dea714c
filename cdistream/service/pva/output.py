"""Live images for operators over PVAccess: ``PREFIX:amplitude`` and ``PREFIX:phase`` (NTNDArray,
float32, the latest reconstruction, its frame number as ``uniqueId`` and as the attribute
``frame``, with ``chi2``, ``series``, ``trusted`` and ``refined``), and ``PREFIX:status``
(counts, rate, latency), so that Phoebus, ImageJ's EPICS plugin or an areaDetector viewer
shows them beside the detector's own image. The Bluesky feedback channel stays the primary
output: this one keeps only the latest frame."""

from __future__ import annotations

import logging
import time
from collections import deque

import numpy as np

from .common import ntndarray, pvaccess

__all__ = ["PvaOutput"]

log = logging.getLogger(__name__)

_STATUS_FIELDS = {
    "received": "LONG",
    "reconstructed": "LONG",
    "rejected": "LONG",
    "dropped": "LONG",
    "last_frame": "LONG",
    "frames_per_second": "DOUBLE",
    "latency_s": "DOUBLE",
}


class PvaOutput:
    """A PVA server holding the three records; :meth:`publish` and :meth:`status` update them."""

    def __init__(self, prefix: str):
        pva = pvaccess()
        self.prefix = prefix
        self.names = {k: f"{prefix}:{k}" for k in ("amplitude", "phase", "status")}
        self._pva = pva
        self._server = pva.PvaServer()
        empty = np.zeros((1, 1), np.float32)
        for kind in ("amplitude", "phase"):
            self._server.addRecord(self.names[kind], ntndarray(empty, 0, time.time()))
        types = {k: getattr(pva, v) for k, v in _STATUS_FIELDS.items()}
        self._status_type = types
        self._server.addRecord(self.names["status"], pva.PvObject(types, "cdistream:status:1.0"))
        self._recent: deque[tuple[float, int]] = deque(maxlen=64)  # (time, reconstructed)
        log.info("PVA output: %s", ", ".join(self.names.values()))

    def publish(
        self,
        frame: int,
        series: int,
        amplitude: np.ndarray,
        phase: np.ndarray,
        chi2: float,
        trusted: bool,
        refined: bool,
        timestamp: float,
    ) -> None:
        """The latest reconstruction, as two images."""
        attrs = {
            "frame": int(frame),
            "series": int(series),
            "chi2": float(chi2),
            "trusted": bool(trusted),
            "refined": bool(refined),
        }
        for kind, image in (("amplitude", amplitude), ("phase", phase)):
            nt = ntndarray(np.asarray(image, np.float32), frame, timestamp, attrs)
            self._server.update(self.names[kind], nt)

    def status(self, counts: dict, latency_s: float, last_frame: int) -> None:
        """Counts (as in the stop document), the reconstruction rate over the last updates, and
        the latest frame's latency."""
        now = time.monotonic()
        self._recent.append((now, counts["reconstructed"]))
        (t0, n0), (t1, n1) = self._recent[0], self._recent[-1]
        rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        values = {
            "received": counts["received"],
            "reconstructed": counts["reconstructed"],
            "rejected": sum(counts["rejected"].values()),
            "dropped": counts["dropped"],
            "last_frame": int(last_frame),
            "frames_per_second": float(rate),
            "latency_s": float(latency_s),
        }
        pv = self._pva.PvObject(self._status_type, values, "cdistream:status:1.0")
        self._server.update(self.names["status"], pv)

    def close(self) -> None:
        for name in self.names.values():
            try:
                self._server.removeRecord(name)
            except Exception:  # already gone
                log.debug("could not remove %s", name)
