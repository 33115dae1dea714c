"""The feedback channel: a bound PUB socket speaking Bluesky's 0MQ document framing
(``prefix b" " name b" " payload``, as ``bluesky.callbacks.zmq.Publisher`` sends) with msgpack
payloads, so ``RemoteDispatcher(address, deserializer=cdistream.wire.unpackb)`` consumes it."""

from __future__ import annotations

import threading
import time

import zmq

from cdistream.wire import packb

__all__ = ["FeedbackPublisher"]


class FeedbackPublisher:
    """Publishes (name, document) pairs; call it like a Bluesky callback."""

    def __init__(self, address: str, prefix: bytes = b"", context: zmq.Context | None = None):
        if b" " in prefix:
            raise ValueError("prefix may not contain a space")
        self._prefix = prefix
        # XPUB is a PUB that also hears subscriptions, so callers can wait for consumers
        self._sock = (context or zmq.Context.instance()).socket(zmq.XPUB)
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every subscriber, not only the first
        self._sock.linger = 1000  # give the final stop document a moment to leave
        self._sock.sndhwm = 100_000
        self._sock.bind(address)
        self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.subscribers = 0
        self._lock = threading.Lock()

    def __call__(self, name: str, doc: dict) -> None:
        with self._lock:
            self._sock.send(b" ".join([self._prefix, name.encode(), packb(doc)]))

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
