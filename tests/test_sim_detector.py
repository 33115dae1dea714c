"""The simulated detector: scenarios with ground truth, frames, rate, replay, command line."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import zmq

from cdistream.wire import Frame, SeriesEnd, SeriesStart, native
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames

from .conftest import LOOPBACK


def receive_all(sock, timeout_ms=20000):
    messages = []
    while not messages or not isinstance(messages[-1], SeriesEnd):
        assert sock.poll(timeout_ms), "the detector went quiet"
        messages.append(native.decode(sock.recv_multipart()))
    return messages


def test_scenarios_change_as_promised():
    drift = Scenario("drift", seed=1, frames=50, drift=1.0)
    assert np.hypot(*np.subtract(drift.peak(49), drift.peak(0))) == pytest.approx(49, abs=1)
    assert np.array_equal(drift.truth(0).obj, drift.truth(49).obj)
    strain = Scenario("strain", seed=1, frames=50)
    assert strain.peak(0) == strain.peak(49)
    spread = [
        np.angle(strain.truth(i).obj)[np.abs(strain.truth(i).obj) > 0.5].std() for i in (0, 49)
    ]
    assert spread[1] > 3 * spread[0]
    again = Scenario("operando", seed=1, frames=50)
    assert np.array_equal(again.truth(7).obj, Scenario("operando", seed=1, frames=50).truth(7).obj)
    with pytest.raises(ValueError, match="unknown scenario"):
        Scenario("melting")


def test_peak_stays_on_the_detector_while_drifting():
    sim = Scenario("drift", seed=3, frames=5000, detector_shape=(256, 256), drift=2.0)
    peaks = np.array([sim.peak(i) for i in range(0, 5000, 7)])
    assert peaks.min() >= 32 and peaks.max() <= 256 - 32


def test_frames_look_like_a_detector():
    det = DetectorModel(shape=(514, 1030), dtype="uint32", photons=1e4)
    frame = next(scenario_frames(Scenario("static", frames=1, detector_shape=det.shape), det, 1))
    assert frame.shape == (514, 1030) and frame.dtype == np.uint32
    assert (frame[det.mask()] == 2**32 - 1).all()
    assert 0.5e4 < np.sort(frame[~det.mask()].ravel())[-det.hot_pixels - 1] < 2e4


def test_publisher_sends_a_whole_series_at_the_asked_rate(context):
    det = DetectorModel(shape=(64, 64))
    with DetectorPublisher(LOOPBACK, "push", context) as pub:
        pull = context.socket(zmq.PULL)
        pull.linger = 0
        pull.connect(pub.address)
        images = scenario_frames(Scenario("static", frames=20, detector_shape=det.shape), det, 20)
        report = pub.run_series(
            3, det.shape, det.dtype, images, rate=200, mask=det.mask(), meta={"a": 1}
        )
        messages = receive_all(pull)
    assert isinstance(messages[0], SeriesStart) and messages[0].meta == {"a": 1}
    assert messages[0].mask is not None and messages[0].mask.sum() == det.mask().sum()
    frames = [m for m in messages if isinstance(m, Frame)]
    assert [f.frame for f in frames] == list(range(20)) and {f.series for f in frames} == {3}
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:], strict=False))
    assert messages[-1] == SeriesEnd(3, 20)
    assert report.sent == 20 and report.held_rate and report.rate < 260


def test_replay_and_command_line(tmp_path, context):
    stack = np.random.default_rng(0).poisson(3, (4, 48, 40)).astype(np.uint16)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["entry/data/data"] = stack
    sub = context.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    sub.close()  # a free port for the simulator to bind
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim_detector",
            "--bind",
            f"tcp://127.0.0.1:{port}",
            "--replay",
            str(tmp_path / "scan.h5"),
            "--series",
            "9",
            "--wait",
            "20",
        ]
    )
    try:
        sub = context.socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        messages = receive_all(sub)
    finally:
        assert proc.wait(timeout=30) == 0
    frames = [m for m in messages if isinstance(m, Frame)]
    assert messages[0].series == 9 and messages[0].shape == (48, 40)
    assert np.array_equal(np.stack([f.image for f in frames]), stack)
