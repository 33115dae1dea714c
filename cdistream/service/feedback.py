"""The feedback channel: a bound XPUB socket speaking Bluesky's 0MQ document framing
(``prefix b" " name b" " payload``, as ``bluesky.callbacks.zmq.Publisher`` sends) with msgpack
payloads, so ``RemoteDispatcher(address, deserializer=cdistream.wire.unpackb)`` consumes it.

Bounded and never blocking: the socket buffers at most ``buffer_bytes`` of documents per
subscriber (its high-water mark, from the size of an event). Normally ``ZMQ_XPUB_NODROP`` is
on, so a send that would exceed a subscriber's buffer fails at once instead of being dropped
silently. Then the channel turns lossy for that subscriber only (healthy subscribers go on
receiving everything) and every document sent while a subscriber stays full is counted as not
delivered (:meth:`__call__` returns False); every ``probe`` seconds a lossless send tests
whether it reads again. The worker, and so the detector, is never held up by a consumer that
stopped reading, and one stalled consumer never starves the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import zmq

from cdistream.wire import packb

__all__ = ["FeedbackPublisher"]

log = logging.getLogger(__name__)

EVENT_BYTES = 12_000  # one event of 32 x 32 reconstructions, msgpack'd: what the HWM counts


class FeedbackPublisher:
    """Publishes (name, document) pairs; call it like a Bluesky callback. Stop documents, the
    last word of a run, are retried for up to ``stop_patience`` seconds before giving up."""

    def __init__(
        self,
        address: str,
        prefix: bytes = b"",
        context: zmq.Context | None = None,
        buffer_bytes: int = 256 * 2**20,
        secure: Callable[[zmq.Socket], None] | None = None,
        stop_patience: float = 2.0,
        probe: float = 0.1,
    ):
        if b" " in prefix:
            raise ValueError("prefix may not contain a space")
        self._prefix = prefix
        self.stop_patience = stop_patience
        # XPUB is a PUB that also hears subscriptions, so callers can wait for consumers
        self._sock = (context or zmq.Context.instance()).socket(zmq.XPUB)
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every subscriber, not only the first
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full subscriber: EAGAIN, not silence
        self._sock.linger = 1000  # give the final stop document a moment to leave
        self._sock.sndhwm = max(16, buffer_bytes // EVENT_BYTES)
        if secure is not None:
            secure(self._sock)
        try:
            self._sock.bind(address)
        except zmq.ZMQError:
            self._sock.close(linger=0)
            raise
        self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.subscribers = 0
        self.not_delivered = 0
        self.probe = probe
        self._next_probe: float | None = None  # lossy since a subscriber filled up, if set
        self._lock = threading.Lock()

    def __call__(self, name: str, doc: dict) -> bool:
        """Publish; False when a subscriber's buffer is full and it does not get the document
        (the others do)."""
        message = b" ".join([self._prefix, name.encode(), packb(doc)])
        now = time.monotonic()
        lossless = self._next_probe is None or now >= self._next_probe or name == "stop"
        deadline = now + (self.stop_patience if name == "stop" else 0.0)
        with self._lock:
            while lossless:
                self._sock.setsockopt(zmq.XPUB_NODROP, 1)
                try:
                    self._sock.send(message, zmq.NOBLOCK)
                    self._next_probe = None  # every subscriber takes documents again
                    return True
                except zmq.Again:
                    if time.monotonic() >= deadline:
                        break
                time.sleep(0.01)
            # a subscriber is full: it loses this document, the others receive it
            self._sock.setsockopt(zmq.XPUB_NODROP, 0)
            self._sock.send(message, zmq.NOBLOCK)
            if lossless:
                self._next_probe = time.monotonic() + self.probe
            self.not_delivered += 1
            return False

    def wait_for_subscribers(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``count`` subscriptions have arrived in all (PUB/SUB drops what is sent
        before a consumer has subscribed). True if they did within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.subscribers < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._lock:
                polled = self._sock.poll(int(min(left, 0.05) * 1000))
                if polled and self._sock.recv()[:1] == b"\x01":
                    self.subscribers += 1
        return True

    def close(self) -> None:
        self._sock.close()
