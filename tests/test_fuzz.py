"""Fuzz every detector-stream decoder with mutated and hostile messages: decoding either works
or raises a named DecodeError, never anything else; then the service, fed the same mutants
over a real socket, reconstructs a valid series after them in full with exact counts.

``make fuzz`` runs 10,000 messages per format (``CDISTREAM_FUZZ=10000``); ``make test`` a
CI-sized share."""

from __future__ import annotations

import json
import os

import cbor2
import msgpack
import numpy as np
import pytest

from cdistream.wire import DecodeError, Frame, SeriesEnd, SeriesStart
from cdistream.wire.formats import make_decoder, make_encoder
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames

from .conftest import LOOPBACK
from .test_service import accounted, start_service

COUNT = int(os.environ.get("CDISTREAM_FUZZ", "1000"))
FORMATS = ("native", "eiger-v1", "eiger-v2", "adzmq")
DET = DetectorModel(shape=(64, 64), hot_pixels=1, gap_rows=2)


def _valid_messages(fmt: str) -> list[list[bytes]]:
    encoder = make_encoder(fmt, "bslz4")
    image = np.random.default_rng(0).poisson(5, DET.shape).astype(np.uint16)
    return [
        [bytes(memoryview(p)) for p in parts]
        for msg in (
            SeriesStart(1, DET.shape, "uint16", DET.mask(), {"beam_center_x": 1.0}),
            Frame(1, 0, 1.8e9, image),
            SeriesEnd(1, 1),
        )
        for parts in encoder.encode(msg)
    ]


def _bombs() -> list[list[bytes]]:
    """Hand-made hostile messages: nesting bombs, lying length prefixes, empty parts."""
    deep_json = b"[" * 100_000 + b"]" * 100_000
    return [
        [b'{"htype": "dheader-1.0", "x": ' + deep_json + b"}"],
        [b'{"htype": "array-1.0", "ndattr": ' + deep_json + b"}", b"\x00" * 8],
        [deep_json],
        [b"\x91" * 100_000 + b"\x00"],  # msgpack arrays nested 100,000 deep
        [b"\xd9\xd9\xf7" + b"\x81" * 100_000 + b"\x00"],  # CBOR likewise
        [b"\xdb\xff\xff\xff\xff"],  # msgpack: a 4 GiB string header, no data
        [b"\xd9\xd9\xf7\x5b\x00\x00\x00\xff\xff\xff\xff\xff"],  # CBOR: a 1 TB byte string
        [msgpack.packb({"type": "frame", "series": 1, "frame": 0, "shape": [2**31, 2**31],
                        "dtype": "uint16", "timestamp": 0.0}), b""],
        [cbor2.dumps({"type": "image", "series_id": 1, "image_id": 0,
                      "data": {"x": cbor2.CBORTag(40, [[65536, 65536], cbor2.CBORTag(69, b"")])}})],
        [json.dumps({"htype": "array-1.0", "type": "uint16", "shape": [-1, 3]}).encode(), b""],
        [],
        [b""],
        [b"", b"", b""],
    ]


def mutants(fmt: str, count: int, seed: int = 11) -> list[list[bytes]]:
    """``count`` mutated messages of ``fmt``: flipped, cut, spliced, padded, shuffled."""
    rng = np.random.default_rng(seed)
    valid = _valid_messages(fmt)
    out = _bombs()
    while len(out) < count:
        parts = [bytearray(p) for p in valid[rng.integers(len(valid))]]
        for _ in range(int(rng.integers(1, 4))):
            if not parts:
                break
            k = int(rng.integers(len(parts)))
            target = parts[k]
            action = int(rng.integers(6))
            if action == 0 and target:  # flip bytes
                for i in rng.integers(0, len(target), rng.integers(1, 6)):
                    target[i] ^= int(rng.integers(1, 256))
            elif action == 1:  # cut
                del target[int(rng.integers(0, len(target) + 1)) :]
            elif action == 2:  # insert random bytes
                at = int(rng.integers(0, len(target) + 1))
                target[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), np.uint8).tobytes()
            elif action == 3:  # drop or duplicate a part
                parts = parts[:k] + parts[k + 1 :] if rng.random() < 0.5 else parts + [target]
            elif action == 4:  # splice in a part of another message
                other = valid[rng.integers(len(valid))]
                parts[k] = bytearray(other[rng.integers(len(other))])
            else:  # swap two parts
                j = int(rng.integers(len(parts)))
                parts[k], parts[j] = parts[j], parts[k]
        out.append([bytes(p) for p in parts])
    return out[:count]


@pytest.mark.parametrize("fmt", FORMATS)
def test_decoders_raise_only_named_errors(fmt):
    reasons: dict[str, int] = {}
    for decoder in (make_decoder(fmt), make_decoder("auto")):
        for parts in mutants(fmt, COUNT):
            try:
                decoder.decode(parts)
            except DecodeError as exc:
                reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"{fmt}: {type(exc).__name__}: {exc} on {[p[:40] for p in parts]}")
    assert len(reasons) >= 3, reasons


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_service_survives_the_mutants_and_reconstructs_what_follows(shipped, context, fmt):
    # PUSH/PULL: a burst of mutants before any series start (whose geometry sizes the
    # receive buffer) must queue at the sender, not be dropped by a PUB socket
    with DetectorPublisher(LOOPBACK, "push", context, fmt, "bslz4") as pub:
        service, sink = start_service(shipped, context, pub, format=fmt, socket="pull")
        try:
            for parts in mutants(fmt, COUNT):
                if parts:
                    pub.send_raw(parts)
            sim = Scenario("static", 0, 20, DET.shape)
            pub.run_series(42, DET.shape, DET.dtype, scenario_frames(sim, DET, 20), None,
                           DET.mask(), DET.metadata(), 20)
            def whole(docs) -> bool:  # series 42's stop, or (ADZMQ: no end) its 20 events
                ours = {d["uid"] for n, d in docs if n == "start" and d["detector_series"] == 42}
                if fmt != "adzmq":
                    return any(n == "stop" and d["run_start"] in ours for n, d in docs)
                streams = {
                    d["uid"] for n, d in docs if n == "descriptor" and d["run_start"] in ours
                }
                events = [d for n, d in docs if n == "event" and d["descriptor"] in streams]
                return sum("amplitude" in e["data"] for e in events) >= 20

            sink.collect_until(whole, timeout=300)
        finally:
            counts = service.stop()
    (ours,) = [d for d in sink.of("start") if d["detector_series"] == 42]
    descriptors = {d["uid"] for d in sink.of("descriptor") if d["run_start"] == ours["uid"]}
    frames = [e["data"]["frame"] for e in sink.events() if e["descriptor"] in descriptors]
    assert frames == list(range(20)), "the valid series after the mutants, in full"
    assert counts["received"] == accounted(counts), counts
    assert counts["pending"] == 0
    assert counts["rejected"].get("internal_error", 0) == 0
