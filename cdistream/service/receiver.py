"""The ZeroMQ detector input: take messages off the detector socket and decode them without
copying; :class:`~.ingest.Ingest` does the rest (series, accounting, ROI, queue)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import zmq

from cdistream.roi import RoiConfig
from cdistream.wire import DecodeError
from cdistream.wire.checks import MAX_FRAME_BYTES
from cdistream.wire.formats import Decoder

from .accounting import Accounting
from .connection import ConnectionWatch
from .ingest import DEFAULT_MAX_FRAME_BYTES, Ingest
from .queue import FrameQueue

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "Receiver"]

log = logging.getLogger(__name__)


class Receiver(Ingest):
    """Connects to the detector (SUB or PULL), decodes with ``decoder`` and feeds a
    :class:`FrameQueue`. ``buffer_bytes`` bounds what ZeroMQ may hold for us: the socket's
    high-water mark is ``buffer_bytes / max_frame_bytes`` messages, set before it connects
    (libzmq deadlocks a busy pipe whose high-water mark changes, so it cannot follow each
    series' frame size; a series announcing larger frames is warned about). ``secure``
    configures the socket before it connects (CURVE keys)."""

    def __init__(
        self,
        address: str,
        socket: str,
        decoder: Decoder,
        roi: RoiConfig,
        queue: FrameQueue,
        accounting: Accounting,
        context: zmq.Context | None = None,
        buffer_bytes: int = 2**30,
        secure: Callable[[zmq.Socket], None] | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ):
        super().__init__(
            roi, queue, accounting, getattr(decoder, "first_frame", 0), max_frame_bytes
        )
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket({"sub": zmq.SUB, "pull": zmq.PULL}[socket])
        self._sock.linger = 0
        self._sock.rcvhwm = max(4, buffer_bytes // max(max_frame_bytes, 1))
        # a peer sending a larger part than any valid frame is cut off by ZeroMQ itself,
        # before the part is ever allocated here
        self._sock.maxmsgsize = MAX_FRAME_BYTES + 2**20
        if socket == "sub":
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        if secure is not None:
            secure(self._sock)
        self.connection = ConnectionWatch(self._sock, socket, accounting)
        self._sock.connect(address)
        self._decoder = decoder
        self._stop = threading.Event()
        self.cpu = (0.0, 0)  # (this thread's CPU seconds, frames received by then)
        self._thread = threading.Thread(target=self._loop, name="cdistream-receiver", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, reason: str = "the service stopped before the detector series ended") -> None:
        """Stop receiving and close an open series; what is queued stays for the worker."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()
        self.connection.close()
        self._sock.close(linger=0)
        self.close_series(reason)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self.connection.socket, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(50))
            if self.connection.socket in ready:
                self.connection.handle()
            if self._sock in ready:
                self._drain()
            # this thread's CPU time (the ingest core) and the frames it covers, read together
            self.cpu = (time.thread_time(), self._acct.total.received)

    def _drain(self, most: int = 256) -> None:
        """Every message waiting (up to ``most``): one poll per burst, not per frame."""
        recv = self._sock.recv
        for _ in range(most):
            try:  # pyzmq's recv_multipart, without its per-part socket option calls
                part = recv(zmq.NOBLOCK, copy=False)
                parts = [part]
                while part.more:  # ZeroMQ delivers a message's parts together
                    part = recv(zmq.NOBLOCK, copy=False)
                    parts.append(part)
            except zmq.Again:
                return
            try:
                self.handle(parts)
            except Exception:  # a bug must cost one message, never the service
                self.internal_error()

    def handle(self, parts: list) -> None:
        """Process one multipart message (public so the benchmark can drive it directly)."""
        try:
            messages = self._decoder.decode(parts)
        except DecodeError as exc:
            self.rejected(exc)
            return
        self.messages(messages)
