"""The feedback channel: a bound PUB socket speaking Bluesky's 0MQ document framing
(``prefix b" " name b" " payload``, as ``bluesky.callbacks.zmq.Publisher`` sends) with msgpack
payloads, so ``RemoteDispatcher(address, deserializer=cdistream.wire.unpackb)`` consumes it."""

from __future__ import annotations

import zmq

from cdistream.wire import packb

__all__ = ["FeedbackPublisher"]


class FeedbackPublisher:
    """Publishes (name, document) pairs; call it like a Bluesky callback."""

    def __init__(self, address: str, prefix: bytes = b"", context: zmq.Context | None = None):
        if b" " in prefix:
            raise ValueError("prefix may not contain a space")
        self._prefix = prefix
        self._sock = (context or zmq.Context.instance()).socket(zmq.PUB)
        self._sock.linger = 1000  # give the final stop document a moment to leave
        self._sock.sndhwm = 100_000
        self._sock.bind(address)
        self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def __call__(self, name: str, doc: dict) -> None:
        self._sock.send(b" ".join([self._prefix, name.encode(), packb(doc)]))

    def close(self) -> None:
        self._sock.close()
