"""The ingest stage: take messages off the detector socket, decode them without copying, cut the
ROI, and hand frames to the queue. Every message is accounted for here or downstream."""

from __future__ import annotations

import logging
import threading

import zmq

from cdistream.roi import BadPixels, RoiConfig, RoiRejected, extract
from cdistream.wire import DecodeError, Frame, SeriesEnd, SeriesStart
from cdistream.wire.checks import MAX_FRAME_BYTES
from cdistream.wire.formats import Decoder

from .accounting import Accounting
from .connection import ConnectionWatch
from .queue import FrameItem, FrameQueue, Rejection

__all__ = ["Receiver"]

log = logging.getLogger(__name__)


class Receiver:
    """Connects to the detector (SUB or PULL), decodes with ``decoder`` and feeds a
    :class:`FrameQueue`."""

    def __init__(
        self,
        address: str,
        socket: str,
        decoder: Decoder,
        roi: RoiConfig,
        queue: FrameQueue,
        accounting: Accounting,
        context: zmq.Context | None = None,
    ):
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket({"sub": zmq.SUB, "pull": zmq.PULL}[socket])
        self._sock.linger = 0
        self._sock.rcvhwm = 100_000
        # a peer sending a larger part than any valid frame is cut off by ZeroMQ itself,
        # before the part is ever allocated here
        self._sock.maxmsgsize = MAX_FRAME_BYTES + 2**20
        if socket == "sub":
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.connection = ConnectionWatch(self._sock, socket, accounting)
        self._sock.connect(address)
        self._decoder, self._roi, self._queue, self._acct = decoder, roi, queue, accounting
        self._series: SeriesStart | None = None
        self._bad: BadPixels | None = None  # the series' mask, ready for the ROI
        self._last_frame = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cdistream-receiver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving; whatever is already queued stays for the worker to drain."""
        self._stop.set()
        self._thread.join()
        self.connection.close()
        self._sock.close(linger=0)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self.connection.socket, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(50))
            if self.connection.socket in ready:
                self.connection.handle()
            if self._sock in ready:
                parts = self._sock.recv_multipart(copy=False)
                try:
                    self.handle(parts)
                except Exception:  # a bug must cost one message, never the service
                    log.exception("could not process a message")
                    self._acct.received(None)
                    self._acct.rejected(None, "internal_error")

    def _reject(
        self, series: int | None, reason: str, detail: str, frame: int | None = None
    ) -> None:
        self._acct.rejected(series, reason)
        count = self._acct.total.rejected[reason]
        if count & (count - 1) == 0:  # log the 1st, 2nd, 4th, 8th ... of each reason
            log.warning("rejected (%s, %d so far): %s", reason, count, detail)
        if frame is not None and series is not None:
            self._queue.put(Rejection(series, frame, reason))

    def handle(self, parts: list) -> None:
        """Process one multipart message (public so the benchmark can drive it directly)."""
        try:
            messages = self._decoder.decode(parts)
        except DecodeError as exc:
            series = exc.series
            if series is None and self._series is not None:
                series = self._series.series
            self._acct.received(series)
            self._reject(series, exc.reason, str(exc), exc.frame)
            if exc.frame is not None and self._series and self._series.series == series:
                self._last_frame = max(self._last_frame, exc.frame)  # received, so no gap
            return
        for message in messages:
            if isinstance(message, Frame):
                self._frame(message)
            elif isinstance(message, SeriesStart):
                self._begin(message)
            else:
                self._end(message)

    def _frame(self, frame: Frame) -> None:
        if self._series is None or self._series.series != frame.series:
            # joined mid-series (or the start was lost): carry on without a mask, say so
            start = SeriesStart(
                frame.series,
                frame.image.shape,
                frame.image.dtype.name,
                None,
                {"series_start_missed": True},
            )
            self._start_missed(start)
        self._acct.received(frame.series)
        if frame.frame > self._last_frame + 1 and self._last_frame >= 0:
            self._acct.gaps(frame.series, frame.frame - self._last_frame - 1)
        self._last_frame = max(self._last_frame, frame.frame)
        expected = self._series.shape
        if expected is not None and frame.image.shape != expected:
            detail = f"frame {frame.frame} is {frame.image.shape}, the series {expected}"
            self._reject(frame.series, "wrong_shape", detail, frame.frame)
            return
        try:
            crop = extract(frame.image, self._roi, self._bad)
        except RoiRejected as exc:
            self._reject(frame.series, exc.reason, f"frame {frame.frame}: {exc}", frame.frame)
            return
        except Exception as exc:  # numpy on hostile data: reject the frame, keep serving
            self._reject(frame.series, "roi_error", f"frame {frame.frame}: {exc!r}", frame.frame)
            return
        self._queue.put(FrameItem(frame.series, frame.frame, frame.timestamp, crop))

    def _start_missed(self, start: SeriesStart) -> None:
        log.warning("frames of series %d arrived without its start message", start.series)
        self._acct.notice(start.series, "series_start_missed")
        self._begin(start)

    def _begin(self, start: SeriesStart) -> None:
        if self._series is not None:  # the previous series never ended: end it here
            self._queue.put(SeriesEnd(self._series.series, self._last_frame + 1))
        self._series, self._last_frame = start, -1
        self._bad = None if start.mask is None else BadPixels.from_mask(start.mask)
        self._queue.put(start)

    def _end(self, end: SeriesEnd) -> None:
        if self._series is None or self._series.series != end.series:
            self._acct.received(end.series)
            self._reject(end.series, "end_without_start", f"end of series {end.series}")
            return
        missing = 0 if end.frames is None else end.frames - (self._last_frame + 1)
        if missing > 0:
            self._acct.gaps(end.series, missing)
        self._queue.put(end)
        self._series, self._last_frame = None, -1
