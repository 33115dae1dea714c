"""The feedback channel's consumers and guards: CURVE admits only known keys, a
ReconstructionMonitor joins a run in progress and shrugs off foreign documents, a worker that
cannot go on is reported as failed instead of leaving a zombie."""

from __future__ import annotations

import time

import pytest
import zmq
import zmq.auth
from bluesky.callbacks.zmq import ClientCurve

from cdistream.bluesky import ReconstructionMonitor, RemoteConsumer
from cdistream.service import Service, ServiceConfig
from cdistream.service.security import create_keys
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames

from .conftest import LOOPBACK

pytestmark = pytest.mark.timeout(120)
DET = DetectorModel(shape=(128, 128), hot_pixels=2, gap_rows=2)


def _series(pub, number: int, frames: int, rate: float | None = None) -> None:
    sim = Scenario("operando", number, frames, DET.shape, drift=0.2)
    pub.run_series(number, DET.shape, DET.dtype, scenario_frames(sim, DET, frames, number), rate,
                   DET.mask(), DET.metadata(), frames)


def test_curve_admits_the_known_key_and_nobody_else(shipped, context, tmp_path):
    keys = create_keys(tmp_path / "keys", ("beamline",))
    (tmp_path / "stranger").mkdir()
    _, stranger = zmq.auth.create_certificates(tmp_path / "stranger", "stranger")
    good, bad = [], []
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        config = ServiceConfig(input=pub.address, feedback=LOOPBACK, curve_keys=keys)
        with Service(config, shipped, context) as service:
            address = service.feedback.address
            admitted = ClientCurve(keys / "client_secrets" / "beamline.key_secret",
                                   keys / "server.key")
            refused = ClientCurve(stranger, keys / "server.key")
            plain = context.socket(zmq.SUB)
            plain.linger = 0
            plain.setsockopt(zmq.SUBSCRIBE, b"")
            plain.connect(address)
            with (
                RemoteConsumer(address, [lambda n, d: good.append(n)], curve_config=admitted) as a,
                RemoteConsumer(address, [lambda n, d: bad.append(n)], curve_config=refused),
            ):
                assert service.feedback.wait_for_subscribers(1, 20), "the known key subscribes"
                assert pub.wait_for_subscriber(10)
                _series(pub, 1, 10)
                assert a.wait_for_stops(1, timeout=60)
                time.sleep(0.5)
            stray = plain.poll(100)
            plain.close()
    assert good.count("event") == 10 and good[-1] == "stop"
    assert bad == [] and not stray, "an unknown key and a plain socket receive nothing"


def test_a_monitor_joins_a_run_in_progress_and_ignores_foreign_documents(shipped, context):
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        config = ServiceConfig(input=pub.address, feedback=LOOPBACK, max_wait_ms=1)
        with Service(config, shipped, context) as service:
            assert pub.wait_for_subscriber(10)
            import threading

            sender = threading.Thread(target=_series, args=(pub, 3, 200, 40.0))
            sender.start()
            time.sleep(1.5)  # the run's start and descriptor are long gone
            monitor = ReconstructionMonitor(service.feedback.address, timeout=10)
            try:
                service.feedback.wait_for_subscribers(1, 10)
                time.sleep(0.3)
                # a foreign run and a foreign event on the same channel
                service.feedback("start", {"uid": "x", "time": 0.0, "plan_name": "other"})
                service.feedback("event", {"descriptor": "nope", "data": {"temperature": 3}})
                service.feedback("event", {"descriptor": "no data"})
                frames = []
                for _ in range(3):
                    status = monitor.trigger()
                    status.wait(10)
                    frames.append(monitor.frame.get())
            finally:
                sender.join()
                monitor.destroy()
    assert frames == sorted(frames) and frames[0] > 10, frames
    assert monitor.ignored >= 2
    assert monitor.chi2.get() < 1 and monitor.amplitude.get().shape == (32, 32)


def test_a_worker_that_cannot_go_on_says_so(tiny_reconstructor, context):
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        service = Service(ServiceConfig(input=pub.address, feedback=LOOPBACK),
                          tiny_reconstructor, context)

        def broken(*args, **kwargs):  # the queue itself fails: nothing the worker can survive
            raise MemoryError("simulated")

        service._queue.get_batch = broken
        service.start()
        try:
            assert service.failed.wait(10)
            assert not service.alive["worker"]
        finally:
            service.stop()


def test_a_failing_batch_costs_its_frames_named_by_stage(tiny_reconstructor, context):
    """A failure in the networks (``inference_error``) or while a batch's events are composed
    (``publish_error``) costs that batch, each frame named in the rejected stream; the run goes
    on and every frame is accounted for. The faults are injected once each, into this
    service's own gate and run writer."""
    from .test_service import start_service

    with DetectorPublisher(LOOPBACK, context=context) as pub:
        service, sink = start_service(tiny_reconstructor, context, pub, max_batch=4)
        left = {"networks": 1, "events": 1}
        reconstruct, compose = service.gate.reconstruct, service.runs.reconstructions

        def once(stage, real):
            def step(*args, **kwargs):
                if left[stage]:
                    left[stage] -= 1
                    raise RuntimeError(f"simulated failure in the {stage}")
                return real(*args, **kwargs)

            return step

        service.gate.reconstruct = once("networks", reconstruct)
        service.runs.reconstructions = once("events", compose)
        try:
            _series(pub, 1, 40, rate=200)
            docs = sink.collect()
        finally:
            counts = service.stop()
    (stop,) = [d for n, d in docs if n == "stop"]
    rejected = stop["cdistream"]["rejected"]
    assert 1 <= rejected["inference_error"] <= 4 and 1 <= rejected["publish_error"] <= 4
    named = [d["data"]["reason"] for n, d in docs if n == "event" and "reason" in d["data"]]
    assert sorted(set(named)) == ["inference_error", "publish_error"]
    assert len(named) == rejected["inference_error"] + rejected["publish_error"]
    assert stop["cdistream"]["reconstructed"] == 40 - len(named) > 30
    assert counts["received"] == 40 == counts["reconstructed"] + sum(counts["rejected"].values())
