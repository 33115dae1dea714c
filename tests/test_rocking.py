"""The real rocking scan (``../shared/data/aps-34idc-au-scan54``, APS 34-ID-C) as a live stream:
replayed by the simulated detector as areaDetector sends it (ADZMQ, PVA), with the scan's theta
per frame, into ``cdistream serve``: one run, every frame accounted for, theta in every event,
and at the series' end the crystal in 3D, announced in the run's ``volume`` stream."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cdistream.spec import scan_positions
from sim_detector import DetectorPublisher
from sim_detector.replay import open_frames

from .conftest import LOOPBACK, free_port, validate
from .test_pva import serve_pva
from .test_service import accounted, start_service

SCAN = Path(__file__).resolve().parents[2] / "shared/data/aps-34idc-au-scan54"
FIRST, COUNT = 84, 32  # the 32 frames around the Bragg condition (frame 99)
pytestmark = [
    pytest.mark.skipif(not SCAN.is_dir(), reason=f"the real scan is not at {SCAN}"),
    pytest.mark.slow,
    pytest.mark.timeout(300),
]


def _theta() -> np.ndarray:
    return scan_positions(SCAN / "example.spec", 54).positions


def _replay(pub, frames: int = COUNT, first: int = FIRST, series: int = 1) -> np.ndarray:
    """Frames ``first`` .. ``first + frames - 1`` of the scan, with their theta."""
    count, shape, dtype, mask, meta, images = open_frames(str(SCAN / "frames"), None, pub.name)
    theta = _theta()[first : first + frames]
    chosen = [image for k, image in enumerate(images) if first <= k < first + frames]
    pub.run_series(series, shape, dtype, chosen, 200, mask, meta, frames, {"Theta": theta})
    return theta


def test_the_real_scan_streams_in_with_theta_and_comes_out_in_3d(shipped, context, tmp_path):
    with DetectorPublisher(LOOPBACK, "pub", context, "adzmq") as pub:
        pub.name = "adzmq"
        service, sink = start_service(shipped, context, pub, format="adzmq", archive=tmp_path)
        try:
            theta = _replay(pub)
            sink.collect_until(lambda docs: sum(n == "event" for n, _ in docs) == COUNT)
        finally:
            # ADZMQ sends no series end: the series ends with the input, then its volume is
            # made (the stop document waits for it)
            counts = service.stop()
        docs = sink.collect(timeout=30)
    validate(docs)
    assert counts["received"] == COUNT == counts["reconstructed"] == accounted(counts)
    (stop,) = sink.of("stop")  # ADZMQ never says a series ended: the service stopping did
    assert len(sink.of("start")) == 1
    assert "stopped before the detector series ended" in stop["reason"]
    events = sink.events()
    np.testing.assert_allclose([e["data"]["Theta"] for e in events], theta)
    start = sink.of("start")[0]
    assert start["sampling"]["fits"] and start["sampling"]["binning"] == 1
    volume = [d for d in sink.of("descriptor") if d["name"] == "volume"]
    assert volume and volume[0]["data_keys"]["amplitude"]["shape"] == [32, 32, 32]
    uris = {r["uri"] for r in sink.of("stream_resource")}  # the archive's and the volume's
    (path,) = [Path(u.removeprefix("file://localhost")) for u in uris if "_volume" in u]
    with h5py.File(path, "r") as f:  # a NeXus file whose default plot is the amplitude
        data = f[f.attrs["default"]][f[f.attrs["default"]].attrs["default"]]
        amplitude = data[data.attrs["signal"]]
        assert amplitude.shape == (32, 32, 32) and amplitude[()].max() == pytest.approx(1.0)
        frames = f["entry/instrument/detector/frames"][()]  # -1: a slice past the series' end
        assert (frames >= 0).sum() >= 30
        np.testing.assert_allclose(data["rocking"][()][frames >= 0], theta[frames[frames >= 0]])
        assert f["entry/process_1/chi2"][()] < 0.02


def test_the_real_scan_streams_in_over_pva_with_theta(context, tmp_path):
    channel = f"cdi:test{free_port()}:image"
    proc, sink = serve_pva(context, tmp_path / "serve.log", channel)
    try:
        detector = subprocess.run(
            [sys.executable, "-m", "sim_detector", "--format", "pva", "--bind", channel,
             "--replay", str(SCAN / "frames"), "--spec", f"{SCAN / 'example.spec'}:54",
             "--first", str(FIRST), "--count", "16", "--rate", "50", "--wait", "5",
             "--compression", "none"],
            capture_output=True, text=True, timeout=120,
        )
        assert detector.returncode == 0, detector.stderr[-2000:]
        sink.collect(timeout=60)
    finally:
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=60)
    validate(sink.docs)
    events = sink.events()
    assert len(events) == 16 and len(sink.of("start")) == 1
    np.testing.assert_allclose([e["data"]["Theta"] for e in events], _theta()[FIRST:FIRST + 16])


def test_a_rocking_scan_plan_reads_each_steps_reconstruction(shipped, context, tmp_path):
    """``rocking_scan`` with a real RunEngine: a simulated motor stepping through the scan's own
    theta values, a detector that replays the frame measured nearest each position."""
    import bluesky.plans  # noqa: F401  (RunEngine plans)
    from bluesky import RunEngine
    from ophyd.sim import SynAxis

    from cdistream.bluesky import ReconstructionMonitor
    from cdistream.plans import rocking_scan
    from cdistream.service import Service, ServiceConfig
    from sim_detector import ReplayDetector

    theta = _theta()
    _, _, _, _, _, images = open_frames(str(SCAN / "frames"))
    frames = np.stack([image for k, image in enumerate(images) if FIRST <= k < FIRST + COUNT])
    motor = SynAxis(name="theta")
    det = ReplayDetector(LOOPBACK, frames, theta[FIRST:FIRST + COUNT], motor)
    service = Service(ServiceConfig(input=det.address, feedback=LOOPBACK, max_wait_ms=1),
                      shipped).start()
    recon = ReconstructionMonitor(service.feedback.address, frame_signal=det.frame, timeout=30)
    docs: list[tuple[str, dict]] = []
    try:
        assert det.publisher.wait_for_subscriber(10)
        assert service.feedback.wait_for_subscribers(1, 10)
        RE = RunEngine({})
        RE.subscribe(lambda name, doc: docs.append((name, doc)))
        RE(rocking_scan([det], recon, motor, theta[FIRST], theta[FIRST + COUNT - 1], COUNT))
    finally:
        recon.destroy()
        det.destroy()
        service.stop()
    validate(docs)
    events = [d for n, d in docs if n == "event"]
    assert len(events) == COUNT
    np.testing.assert_allclose([e["data"]["theta"] for e in events],
                               np.linspace(theta[FIRST], theta[FIRST + COUNT - 1], COUNT))
    assert [e["data"]["recon_frame"] for e in events] == list(range(COUNT))
    for e in events:
        assert e["data"]["recon_amplitude"].shape == (32, 32)
        assert np.isfinite(e["data"]["recon_chi2"]) and e["data"]["recon_support_area"] > 0
    (start,) = [d for n, d in docs if n == "start"]
    assert start["plan_name"] == "rocking_scan" and list(start["motors"]) == ["theta"]


def test_tiled_registers_the_volume_and_reads_the_cube_back(shipped, context, tiled):
    """The run's ``volume`` stream through bluesky-tiled-plugins' TiledWriter into a real Tiled
    server: the cube read back from Tiled equals the one in the volume file."""
    from bluesky_tiled_plugins import TiledWriter

    from cdistream.bluesky.consumer import RemoteConsumer
    from cdistream.service import Service, ServiceConfig

    client, archive = tiled
    seen: list[tuple[str, dict]] = []
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        pub.name = "native"
        config = ServiceConfig(input=pub.address, feedback=LOOPBACK, archive=archive)
        with (Service(config, shipped, context) as service,
              RemoteConsumer(service.feedback.address,
                             [lambda n, d: seen.append((n, d)), TiledWriter(client)]) as rc):
            assert service.feedback.wait_for_subscribers(1, 10)
            assert pub.wait_for_subscriber(10)
            _replay(pub)
            assert rc.wait_for_stops(1, timeout=120)
    start = next(d for n, d in seen if n == "start")
    stop = next(d for n, d in seen if n == "stop")
    assert stop["exit_status"] == "success"
    (uri,) = {d["uri"] for n, d in seen if n == "stream_resource" and "_volume" in d["uri"]}
    with h5py.File(uri.removeprefix("file://localhost"), "r") as f:
        amplitude, phase = f["entry/data/amplitude"][()], f["entry/data/phase"][()]
    run = client[start["uid"]]
    np.testing.assert_array_equal(run["volume"]["amplitude"][0], amplitude)
    np.testing.assert_array_equal(run["volume"]["phase"][0], phase)


def test_the_3d_work_costs_no_frame_of_the_next_series(shipped, context, tmp_path):
    """The service's capacity measured first (a series sent faster than it can take: frames
    reconstructed per second); a series at 90% of it loses nothing with no 3D work going on;
    then the scan, and at once another such series, while the scan's volume is made in its own
    low-priority process: it loses nothing either."""
    from sim_detector import DetectorModel, Scenario, scenario_frames

    det = DetectorModel(shape=(256, 256), photons=2e4)
    sim = Scenario("operando", 3, 2000, det.shape, drift=0.2)
    load = list(scenario_frames(sim, det, 200, 3))

    def series(number, rate):
        pub.run_series(number, det.shape, det.dtype, (load[k % 200] for k in range(2000)),
                       rate, None, {}, 2000)

    with DetectorPublisher(LOOPBACK, "push", context, "native") as pub:
        pub.name = "native"
        service, sink = start_service(shipped, context, pub, socket="pull", archive=tmp_path)
        sink.keep_events = False
        try:
            started = time.monotonic()
            series(1, None)
            sink.collect(1, timeout=120)
            seconds = time.monotonic() - started
            capacity = sink.of("stop")[0]["cdistream"]["reconstructed"] / seconds
            series(2, 0.9 * capacity)
            _replay(pub, series=3)
            series(4, 0.9 * capacity)
            sink.collect(4, timeout=240)
        finally:
            service.stop()
    numbers = {d["uid"]: d["detector_series"] for d in sink.of("start")}
    stops = {numbers[d["run_start"]]: d["cdistream"] for d in sink.of("stop")}
    assert stops[3]["reconstructed"] == COUNT
    assert any(d["name"] == "volume" for d in sink.of("descriptor")), "the scan's volume"
    assert stops[2]["dropped"] == 0, f"at 90% of {capacity:.0f} frames/s, alone: {stops[2]}"
    assert stops[4]["received"] == 2000 == stops[4]["reconstructed"], stops[4]
