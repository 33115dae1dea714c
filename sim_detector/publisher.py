"""Publish detector series over ZeroMQ as a real detector does: a start message, frames at a
target rate with a counter and timestamps, an end message."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from cdistream.wire import Frame, SeriesEnd, SeriesStart
from cdistream.wire.formats import make_encoder

from .frames import DetectorModel
from .scenario import Scenario

__all__ = ["DetectorPublisher", "SeriesReport", "SeriesSender", "scenario_frames"]

log = logging.getLogger(__name__)


@dataclass
class SeriesReport:
    """What a series achieved: frames sent, seconds, rate reached against the target."""

    series: int
    sent: int = 0
    seconds: float = 0.0
    target_rate: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else float("inf")

    @property
    def held_rate(self) -> bool:
        """True when no target was set or at least 95% of it was reached."""
        return self.target_rate is None or self.rate >= 0.95 * self.target_rate


class SeriesSender:
    """Sends whole series through :meth:`send`, which each transport provides."""

    def send(self, message: SeriesStart | Frame | SeriesEnd) -> None:
        raise NotImplementedError

    def run_series(
        self,
        series: int,
        shape: tuple[int, int],
        dtype: str,
        images: Iterable[np.ndarray],
        rate: float | None = None,
        mask: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
        count: int | None = None,
        positions: dict[str, Sequence[float]] | None = None,
    ) -> SeriesReport:
        """Start, every image as a frame at ``rate`` frames/s (as fast as possible if None),
        end. Reports when the rate could not be held. ``count``, when known, is announced;
        ``positions`` (name -> one number per frame: motor positions) go with each frame, and
        as lists in the start's metadata (``motor_positions``) for formats whose frames carry
        no attributes."""
        report = SeriesReport(series, target_rate=rate, meta=dict(meta or {}))
        if count is not None:
            report.meta["number_of_images"] = count
        positions = {k: [float(v) for v in values] for k, values in (positions or {}).items()}
        if positions:
            report.meta["motor_positions"] = positions
        self.send(SeriesStart(series, shape, dtype, mask, report.meta))
        interval = 1.0 / rate if rate else 0.0
        start = time.perf_counter()
        for i, image in enumerate(images):
            if interval:
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            at = {k: v[i] for k, v in positions.items() if i < len(v)}
            self.send(Frame(series, i, time.time(), image, at))
            report.sent += 1
        report.seconds = time.perf_counter() - start
        self.send(SeriesEnd(series, report.sent))
        if not report.held_rate:
            log.warning(
                "series %d: reached %.0f frames/s of the %.0f asked", series, report.rate, rate
            )
        return report


class DetectorPublisher(SeriesSender):
    """A bound PUB (default) or PUSH socket speaking one of the stream formats (native,
    eiger-v1, eiger-v2, adzmq); ``compression`` (none, lz4, bslz4) applies to the DECTRIS ones."""

    def __init__(
        self,
        address: str,
        socket: str = "pub",
        context: zmq.Context | None = None,
        format: str = "native",
        compression: str | None = None,
    ):
        self._ctx = context or zmq.Context.instance()
        self.encoder = make_encoder(format, compression)
        kind = {"pub": zmq.XPUB, "push": zmq.PUSH}[socket]
        self.kind = socket
        self._sock = self._ctx.socket(kind)
        # on close, still deliver what is queued, the series end included: a PUSH detector
        # never drops frames (its peer is slow, not gone), a PUB one only waits briefly
        self._sock.linger = 120_000 if socket == "push" else 2000
        self._sock.sndhwm = 100_000  # a detector buffers, it does not block
        try:
            self._sock.bind(address)
        except zmq.ZMQError:
            self._sock.close(linger=0)
            raise
        self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def wait_for_subscriber(self, timeout: float = 10.0) -> bool:
        """PUB drops everything sent before a subscriber joins: wait for one (XPUB tells).
        PUSH queues until a peer connects, so it returns at once."""
        if self.kind != "pub":
            return True
        if self._sock.poll(int(timeout * 1000)):
            self._sock.recv()  # the subscription message
            return True
        log.warning("no subscriber on %s after %.1f s; sending anyway", self.address, timeout)
        return False

    def send(self, message: SeriesStart | Frame | SeriesEnd) -> None:
        for parts in self.encoder.encode(message):
            self._sock.send_multipart(parts, copy=False)

    def send_raw(self, parts: list[bytes]) -> None:
        """Send arbitrary parts (tests use it to inject malformed messages)."""
        self._sock.send_multipart(parts)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> DetectorPublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scenario_frames(
    scenario: Scenario, detector: DetectorModel, count: int, seed: int = 0
) -> Iterator[np.ndarray]:
    """The frames of ``scenario`` as ``detector`` records them, reproducibly."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        truth = scenario.truth(i)
        yield detector.render(truth.obj, truth.peak_row, truth.peak_col, rng)
