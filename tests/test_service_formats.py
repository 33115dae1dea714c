"""Each detector stream format end to end over loopback: sim_detector speaking it -> the service
with the shipped models -> feedback documents; and hostile messages in each format."""

from __future__ import annotations

import numpy as np
import pytest

from cdistream.physics import compare
from cdistream.wire import Frame, SeriesStart
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames

from .conftest import LOOPBACK, validate
from .test_service import accounted, start_service
from .test_wire_formats import HOSTILE

pytestmark = pytest.mark.timeout(180)
SOCKET = {"eiger-v1": "push", "eiger-v2": "push", "adzmq": "pub"}


@pytest.mark.parametrize(
    "sent, told, compression",
    [
        ("eiger-v1", "eiger-v1", "bslz4"),
        ("eiger-v2", "eiger-v2", "bslz4"),
        ("adzmq", "adzmq", None),
        ("eiger-v2", "auto", "lz4"),
    ],
)
def test_each_format_end_to_end_matches_ground_truth(shipped, context, sent, told, compression):
    detector = DetectorModel()  # 512 x 512 uint16 with hot pixels and a masked gap
    frames, series = 60, 17
    sim = Scenario("operando", 3, frames, detector.shape, drift=0.3)
    socket = SOCKET[sent]
    with DetectorPublisher(LOOPBACK, socket, context, sent, compression) as pub:
        service, sink = start_service(
            shipped, context, pub, format=told, socket={"push": "pull", "pub": "sub"}[socket]
        )
        try:
            images = scenario_frames(sim, detector, frames, seed=3)
            meta = {**detector.metadata(), "scenario": "operando"}
            pub.run_series(
                series, detector.shape, detector.dtype, images, 300, detector.mask(), meta, frames
            )
            if sent == "adzmq":  # no series end on the wire: the run closes when we stop
                sink.collect_until(lambda docs: len(sink.events()) >= frames, timeout=120)
            else:
                sink.collect(timeout=120)
        finally:
            counts = service.stop()
    validate(sink.docs)
    (start,) = sink.of("start")
    assert start["detector_series"] == series and start["detector_format"] == sent
    events = sink.events()
    assert [e["data"]["frame"] for e in events] == list(range(frames))
    assert counts["received"] == frames == counts["reconstructed"] == accounted(counts)
    if sent != "adzmq":  # ADZMQ sends no series header, so no detector metadata
        detector_meta = start["detector"]
        for key, value in detector.metadata().items():
            assert detector_meta[key] == pytest.approx(value), key
        assert start["detector_shape"] == [512, 512]
    truth = np.stack([sim.truth(e["data"]["frame"]).obj for e in events])
    recon = np.stack([e["data"]["amplitude"] * np.exp(1j * e["data"]["phase"]) for e in events])
    scores = compare(recon, truth)
    assert np.median(scores.iou) >= 0.75 and np.median(scores.phase_rmse) <= 0.3


@pytest.mark.parametrize("fmt", sorted(HOSTILE))
def test_hostile_messages_in_each_format_are_counted_and_survived(tiny_reconstructor, context, fmt):
    socket = SOCKET[fmt]
    detector = DetectorModel(shape=(128, 128), hot_pixels=2, gap_rows=2)
    with DetectorPublisher(LOOPBACK, socket, context, fmt, "bslz4") as pub:
        service, sink = start_service(
            tiny_reconstructor,
            context,
            pub,
            format=fmt,
            socket={"push": "pull", "pub": "sub"}[socket],
        )
        try:
            pub.send(SeriesStart(1, (128, 128), "uint16", None, {}))
            for _what, parts, _reason in HOSTILE[fmt]:
                pub.send_raw(parts)
            sim = Scenario("static", 0, 5, detector.shape)
            for i, image in enumerate(scenario_frames(sim, detector, 5)):
                pub.send(Frame(1, 100 + i, 1.8e9, image))
            sink.collect_until(lambda docs: len(sink.events()) >= 5, timeout=60)
        finally:
            counts = service.stop()
    expected: dict[str, int] = {}
    for _what, _parts, reason in HOSTILE[fmt]:
        expected[reason] = expected.get(reason, 0) + 1
    assert counts["rejected"] == expected
    assert counts["reconstructed"] == 5
    assert counts["received"] == accounted(counts) == len(HOSTILE[fmt]) + 5


def test_frames_without_their_series_start_are_reconstructed_and_noticed(
    tiny_reconstructor, context
):
    """cdistream started after the detector armed: the start message is gone for good."""
    detector = DetectorModel(shape=(128, 128), hot_pixels=2, gap_rows=2)
    with DetectorPublisher(LOOPBACK, "push", context, "eiger-v2", "bslz4") as pub:
        service, sink = start_service(tiny_reconstructor, context, pub, format="eiger-v2")
        try:
            sim = Scenario("static", 0, 4, detector.shape)
            for i, image in enumerate(scenario_frames(sim, detector, 4)):
                pub.send(Frame(9, i, 1.8e9, image))
            sink.collect_until(lambda docs: len(sink.events()) >= 4, timeout=60)
        finally:
            counts = service.stop()
    (start,) = sink.of("start")
    assert start["detector"] == {"series_start_missed": True} and start["detector_series"] == 9
    # the service stopped before the detector ended the series: counted too
    assert counts["notices"] == {"series_start_missed": 1, "series_not_ended": 1}
    assert counts["reconstructed"] == 4


def test_a_detector_that_will_not_pair_is_an_error_not_silence(tiny_reconstructor, context, caplog):
    """The classic mistake: SUB to a DECTRIS detector's PUSH socket. ZeroMQ refuses quietly;
    cdistream says so, and names the fix."""
    import logging
    import time

    caplog.set_level(logging.INFO, logger="cdistream.service.connection")
    with DetectorPublisher(LOOPBACK, "push", context, "eiger-v2", "bslz4") as pub:
        for socket, expect in (("sub", "will not pair"), ("pull", "connected to the detector")):
            service, _sink = start_service(
                tiny_reconstructor, context, pub, format="eiger-v2", socket=socket
            )
            deadline = time.monotonic() + 10
            try:
                while expect not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.02)
            finally:
                counts = service.stop()
            assert expect in caplog.text, caplog.text
            failed = counts["notices"].get("handshake_failed", 0)
            assert (failed >= 1) == (socket == "sub")
    assert "--socket pull" in caplog.text
