"""Shared fixtures: real models (a tiny untrained one for plumbing, the shipped one for
quality), real sockets on 127.0.0.1 with ephemeral ports, and a document sink that polls."""

from __future__ import annotations

import collections
import os
import socket
import sqlite3  # noqa: F401  before TensorFlow, whose own SQLite (no FTS5) would shadow it
import time

import event_model
import numpy as np
import pytest
import zmq

from cdistream import Reconstructor
from cdistream.service.pva import LOOPBACK_ENV
from cdistream.wire import unpackb

LOOPBACK = "tcp://127.0.0.1:*"
os.environ.update(LOOPBACK_ENV)  # PVA and CA discovery on 127.0.0.1 here and in subprocesses


@pytest.fixture(scope="session")
def tiny_reconstructor() -> Reconstructor:
    """An untrained, very small network: real TensorFlow, fast, meaningless output."""
    import keras

    from cdistream.inference.model import build_cdi_nn

    keras.utils.set_random_seed(0)
    rec = Reconstructor(build_cdi_nn(32, (4, 8, 8)))
    rec.warm_up()
    return rec


@pytest.fixture(scope="session")
def shipped() -> Reconstructor:
    rec = Reconstructor.load()
    rec.warm_up()
    return rec


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


class DocumentSink:
    """A SUB socket on the feedback channel that decodes Bluesky 0MQ messages with msgpack."""

    def __init__(self, context: zmq.Context, address: str, rcvhwm: int = 1000):
        self.sock = context.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.rcvhwm = rcvhwm  # 0: unbounded, a consumer that never falls behind
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)
        self.docs: list[tuple[str, dict]] = []
        self.keep_events = True  # False: count events without decoding them (long overloads)

    def collect_until(self, done, timeout: float = 60.0) -> list[tuple[str, dict]]:
        """Receive until ``done(docs)`` is true; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.docs):
            left = deadline - time.monotonic()
            if left <= 0:
                seen = collections.Counter(n for n, _ in self.docs)
                raise AssertionError(f"gave up after {timeout} s; got {dict(seen)}")
            if self.sock.poll(int(min(left, 0.5) * 1000)):
                _prefix, name, payload = self.sock.recv().split(b" ", 2)
                keep = self.keep_events or name != b"event"
                self.docs.append((name.decode(), unpackb(payload) if keep else {}))
        return self.docs

    def collect(self, stops: int = 1, timeout: float = 60.0) -> list[tuple[str, dict]]:
        """Receive until ``stops`` stop documents arrived."""
        seen = {"stops": 0, "checked": 0}

        def enough(docs) -> bool:  # counts only the new documents: a long run stays linear
            seen["stops"] += sum(n == "stop" for n, _ in docs[seen["checked"] :])
            seen["checked"] = len(docs)
            return seen["stops"] >= stops

        return self.collect_until(enough, timeout)

    def events(self, stream: str = "primary") -> list[dict]:
        uids = {d["uid"] for n, d in self.docs if n == "descriptor" and d["name"] == stream}
        return [d for n, d in self.docs if n == "event" and d["descriptor"] in uids]

    def of(self, name: str) -> list[dict]:
        return [d for n, d in self.docs if n == name]


def validate(docs: list[tuple[str, dict]]) -> None:
    """Every document passes event-model's schema validation."""
    for name, doc in docs:
        event_model.schema_validators[event_model.DocumentNames[name]].validate(
            {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in doc.items()}
            if name != "event"
            else {
                **doc,
                "data": {
                    k: (v.tolist() if isinstance(v, np.ndarray) else v)
                    for k, v in doc["data"].items()
                },
            }
        )


def free_port() -> int:
    """A loopback port nobody listens on right now (for programs that want a fixed address)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tiled(tmp_path):
    """A real Tiled server on localhost that may read the archive directory it is given:
    (client, archive directory)."""
    from tiled.client import from_uri
    from tiled.server import SimpleTiledServer

    archive = tmp_path / "archive"
    archive.mkdir()
    # The server lives as long as the test: it stops when the object is collected.
    with SimpleTiledServer(directory=tmp_path / "tiled", readable_storage=[archive]) as server:
        yield from_uri(server.uri), archive
