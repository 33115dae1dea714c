"""The simulated detector as areaDetector's NDPluginPva serves it: one NTNDArray channel whose
value is the latest frame. ``uniqueId`` counts from 1 (0 is the empty record a PVA server
starts with), the series travels as the NDAttribute ``series``, and there are no start or end
messages: PVAccess has none, so a reader infers series from the counter."""

from __future__ import annotations

import logging
import time

import numpy as np

from cdistream.service.pva import ntndarray, pvaccess
from cdistream.wire import Frame, SeriesEnd, SeriesStart

from .publisher import SeriesSender

__all__ = ["PvaPublisher"]

log = logging.getLogger(__name__)


class PvaPublisher(SeriesSender):
    """A PVA server holding the channel ``name``; ``codec`` is none, lz4 or bslz4."""

    def __init__(self, name: str, codec: str | None = None):
        pva = pvaccess()
        self.address = name
        self.codec = "" if codec in (None, "none") else codec
        self._server = pva.PvaServer()
        self._server.addRecord(name, ntndarray(np.zeros((1, 1), np.uint16), 0, time.time()))

    def wait_for_subscriber(self, timeout: float = 10.0) -> bool:
        """A PVA server cannot see who monitors it: wait ``timeout`` seconds for readers to
        connect (areaDetector would be started after its clients, or run continuously)."""
        time.sleep(timeout)
        return True

    def send(self, message: SeriesStart | Frame | SeriesEnd) -> None:
        if isinstance(message, Frame):
            attrs = {"series": message.series, **message.positions}
            nt = ntndarray(message.image, message.frame + 1, message.timestamp, attrs, self.codec)
            self._server.update(self.address, nt)

    def close(self) -> None:
        self._server.removeRecord(self.address)
        self._server.stop()

    def __enter__(self) -> PvaPublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
