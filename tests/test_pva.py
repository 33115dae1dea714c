"""PVAccess: NTNDArray decoding from structures built as pvapy delivers them (plain dicts, the
compressed payloads made by the reference libraries, not by our encoder), hostile updates, and
``cdistream serve --format pva --pva-output`` against ``sim_detector --format pva`` as
processes on loopback (conftest keeps EPICS discovery on 127.0.0.1)."""

from __future__ import annotations

import subprocess
import sys
import time

import bitshuffle
import lz4.block
import numpy as np
import pytest

from cdistream.physics import compare
from cdistream.wire import DecodeError, Frame, SeriesEnd, SeriesStart
from cdistream.wire.ntndarray import Decoder
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames

from .conftest import LOOPBACK, DocumentSink, free_port, validate
from .test_serve_process import stop
from .test_service import start_service

IMAGE = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) % 5000


def ntnd(image=IMAGE, uid=1, codec="", attrs=(), **fields) -> dict:
    """An NTNDArray as pvapy hands it over: dimension [x, y], unions as ({name: value}, ...)."""
    rows, cols = image.shape
    value = {"ushortValue": image.reshape(-1)}
    params = None
    if codec == "lz4":
        value = {"ubyteValue": np.frombuffer(lz4.block.compress(image.tobytes(),
                                                                 store_size=False), np.uint8)}
        params = 6  # pvUShort
    elif codec == "bslz4":
        value = {"ubyteValue": bitshuffle.compress_lz4(image, 0).view(np.uint8)}
        params = 6
    pv = {
        "value": (value, {}),
        "codec": {"name": codec, "parameters": ({"value": params}, {})},
        "uncompressedSize": image.nbytes,
        "dimension": [{"size": cols, "offset": 0, "fullSize": cols, "binning": 1},
                      {"size": rows, "offset": 0, "fullSize": rows, "binning": 1}],
        "uniqueId": uid,
        "dataTimeStamp": {"secondsPastEpoch": 1_700_000_000, "nanoseconds": 500_000_000},
        "attribute": [{"name": k, "value": ({"value": v}, {})} for k, v in attrs],
    }
    pv.update(fields)
    return pv


@pytest.mark.parametrize("codec", ["", "lz4", "bslz4"])
def test_ntndarray_frames_decode_as_areadetector_sends_them(codec):
    messages = Decoder().decode(ntnd(codec=codec, attrs=[("series", 4), ("exposure", 0.5)]))
    start, frame = messages
    assert isinstance(start, SeriesStart) and start.series == 4
    assert start.meta["ndattr"] == {"series": 4, "exposure": 0.5}
    assert isinstance(frame, Frame) and frame.frame == 1
    np.testing.assert_array_equal(frame.image, IMAGE)  # (y, x) from dimension [x, y]
    assert frame.timestamp == pytest.approx(1_700_000_000.5)


def test_series_follow_the_unique_id_and_end_when_quiet():
    dec = Decoder(idle_s=1.0)
    kinds = [type(m).__name__ for uid in (1, 2, 3, 1, 2) for m in dec.decode(ntnd(uid=uid))]
    assert kinds == ["SeriesStart", "Frame", "Frame", "Frame",
                     "SeriesEnd", "SeriesStart", "Frame", "Frame"]
    assert dec.idle(time.monotonic()) == []
    (end,) = dec.idle(time.monotonic() + 2)
    assert isinstance(end, SeriesEnd) and end.series == 2


@pytest.mark.parametrize(
    "pv, reason",
    [
        ({"value": 1}, "malformed"),
        (ntnd(uid=-3), "wrong_type"),
        (ntnd(uid="7"), "wrong_type"),
        (ntnd(dimension=[{"size": 64}]), "bad_shape"),
        (ntnd(dimension=[{"size": 64}, {"size": 47}]), "wrong_size"),
        (ntnd(value=({"booleanValue": np.zeros(10, bool)}, {})), "bad_dtype"),
        (ntnd(codec="jpeg"), "bad_dtype"),
        (ntnd(codec="bslz4", uncompressedSize=10**12), "bad_compressed_size"),
        (ntnd(codec="lz4", value=({"ubyteValue": np.full(100, 7, np.uint8)}, {})),
         "corrupt_compressed"),
        (ntnd(codec="bslz4", value=({"ubyteValue": np.full(100, 7, np.uint8)}, {})),
         "corrupt_compressed"),
        (ntnd(codec="lz4", uncompressedSize=1), "bad_compressed_size"),
    ],
)
def test_hostile_updates_are_named_rejections(pv, reason):
    with pytest.raises(DecodeError) as err:
        Decoder().decode(pv)
    assert err.value.reason == reason


def test_unknown_codec_with_a_known_type_is_named():
    pv = ntnd(codec="blosc")
    pv["codec"] = {"name": "blosc", "parameters": ({"value": 6}, {})}
    pv["value"] = ({"ubyteValue": np.zeros(10, np.uint8)}, {})
    with pytest.raises(DecodeError) as err:
        Decoder().decode(pv)
    assert err.value.reason == "unknown_encoding"


@pytest.mark.timeout(120)
def test_an_update_that_repeats_the_last_one_is_a_notice_not_a_frame(tiny_reconstructor, context):
    """A PVA monitor that reconnects is sent the channel's current value again: the same
    ``uniqueId`` and time stamp. It is no new frame (it once made a streamed series one event
    too long); a counter reset, the same number at a new time, still is one."""
    from sim_detector.pva_publisher import PvaPublisher

    detector = DetectorModel(shape=(128, 128), hot_pixels=2, gap_rows=2)
    sim = Scenario("static", 0, 4, detector.shape)
    images = list(scenario_frames(sim, detector, 4))
    with PvaPublisher(f"cdi:test{free_port()}:image") as pub:
        pub.wait_for_subscriber = lambda timeout: time.sleep(2) or True
        service, sink = start_service(tiny_reconstructor, context, pub, format="pva",
                                      series_timeout=1.0)
        try:
            sent = [Frame(1, i, 1.8e9 + i, image) for i, image in enumerate(images[:3])]
            sent.insert(2, sent[1])  # frame 2 (uniqueId 2) again: a repeat
            sent.append(Frame(1, 0, 1.8e9 + 9, images[3]))  # uniqueId 1 again, later: a frame
            for message in sent:
                pub.send(message)
                time.sleep(0.05)
            sink.collect(timeout=60)
        finally:
            counts = service.stop()
    assert [e["data"]["frame"] for e in sink.events()] == [1, 2, 3, 1]
    (stop_doc,) = sink.of("stop")
    assert stop_doc["cdistream"]["notices"] == {"pva_repeated_update": 1}
    assert counts["received"] == 4 == counts["reconstructed"]


def test_a_detector_that_restarts_is_a_notice_not_a_run():
    """An IOC that reboots comes back with its empty record (``uniqueId`` 0, a 1 x 1 image),
    which the monitor is sent: no frame, no run of its own, a notice; the next acquisition is
    the next run. Fed as pvapy hands the updates over: when a monitor reconnects after a
    server restart is up to PVA's search (seconds to a minute here), not to cdistream."""
    from cdistream.roi import RoiConfig
    from cdistream.service.accounting import Accounting
    from cdistream.service.pva.receiver import PvaReceiver
    from cdistream.service.queue import FrameItem, FrameQueue, RunStart

    detector = DetectorModel(shape=(128, 128), hot_pixels=2, gap_rows=2)
    images = list(scenario_frames(Scenario("static", 0, 6, detector.shape), detector, 6))
    empty = ntnd(np.zeros((1, 1), np.uint16), uid=0)
    updates = [empty]  # the value when cdistream connected
    for series in (1, 2):
        if series == 2:
            updates.append(empty)  # the server restarted
        for k in range(3):
            stamp = {"secondsPastEpoch": 1_800_000_000 + 10 * series + k, "nanoseconds": 0}
            updates.append(ntnd(images[3 * (series - 1) + k], uid=k + 1,
                                attrs=[("series", series)], dataTimeStamp=stamp))
    queue, accounting = FrameQueue(100, lambda item: None), Accounting()
    receiver = PvaReceiver(f"cdi:test{free_port()}:image", RoiConfig(), queue, accounting)
    for pv in updates:
        receiver._arrived(pv)  # noqa: SLF001 - pvapy's callback, without pvapy's timing
    receiver._drain()  # noqa: SLF001
    items = []
    while (batch := queue.get_batch(100, 0.0, 0.1)) is not None:
        items += batch if isinstance(batch, list) else [batch]
    starts = [i.start.series for i in items if isinstance(i, RunStart)]
    assert starts == [1, 2]
    assert sum(isinstance(i, FrameItem) for i in items) == 6
    counts = accounting.snapshot()
    assert counts["received"] == 6 and counts["rejected"] == {}
    assert counts["notices"] == {"pva_server_restarted": 1}


@pytest.mark.timeout(120)
def test_the_frame_a_channel_holds_when_cdistream_connects_is_not_a_new_one(
    tiny_reconstructor, context
):
    """An idle IOC's NDPluginPva holds the last frame of its last acquisition: the monitor's
    first update, which is no new frame and must not become a run of one stale frame."""
    from sim_detector.pva_publisher import PvaPublisher

    detector = DetectorModel(shape=(128, 128), hot_pixels=2, gap_rows=2)
    images = list(scenario_frames(Scenario("static", 0, 4, detector.shape), detector, 4))
    with PvaPublisher(f"cdi:test{free_port()}:image") as pub:
        pub.send(Frame(1, 49, 1.7e9, images[0]))  # frame 50 of an acquisition long over
        pub.wait_for_subscriber = lambda timeout: time.sleep(2) or True
        service, sink = start_service(tiny_reconstructor, context, pub, format="pva",
                                      series_timeout=1.0)
        try:
            for i in range(3):
                pub.send(Frame(2, i, 1.8e9 + i, images[1 + i]))
                time.sleep(0.05)
            sink.collect(timeout=60)
        finally:
            counts = service.stop()
    (start,) = sink.of("start")
    assert start["detector_series"] == 2
    assert [e["data"]["frame"] for e in sink.events()] == [1, 2, 3]
    assert counts["received"] == 3 == counts["reconstructed"] and counts["notices"] == {}


DET = DetectorModel((256, 256), "uint16", 2e4, seed=7)  # as `sim_detector --seed 7` makes it
FRAMES = 200


def _zmq_iou(shipped, context, sim) -> float:
    """The same series over ZeroMQ (stream V2), scored against the truth."""
    with DetectorPublisher(LOOPBACK, "push", context, "eiger-v2", "bslz4") as pub:
        service, sink = start_service(shipped, context, pub, format="eiger-v2", socket="pull")
        try:
            pub.run_series(1, DET.shape, DET.dtype, scenario_frames(sim, DET, FRAMES, 7), 400,
                           DET.mask(), DET.metadata(), FRAMES)
            sink.collect(timeout=120)
        finally:
            service.stop()
    events = sink.events()
    recon = np.stack([e["data"]["amplitude"] * np.exp(1j * e["data"]["phase"]) for e in events])
    truth = np.stack([sim.truth(e["data"]["frame"]).obj for e in events])
    return float(np.median(compare(recon, truth).iou))


def serve_pva(context, log, channel: str, *options: str):
    """``cdistream serve --format pva`` in a process of its own, a series ending 2 s after its
    last frame: (process, feedback sink) once it serves."""
    feedback = f"tcp://127.0.0.1:{free_port()}"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdistream", "serve", "--format", "pva", "--input", channel,
             "--feedback", feedback, "--series-timeout", "2", *options],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )
    sink = DocumentSink(context, feedback)
    deadline = time.monotonic() + 120
    while "serving" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(log.read_text()[-2000:])
        time.sleep(0.2)
    return proc, sink


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_serve_reads_a_pva_detector_and_shows_on_pva(shipped, context, tmp_path):
    import pvaccess as pva

    channel, prefix = f"cdi:test{free_port()}:image", f"cdi:test{free_port()}:recon"
    proc, sink = serve_pva(context, tmp_path / "serve.log", channel, "--pva-output", prefix)
    try:
        detector = subprocess.run(
            [sys.executable, "-m", "sim_detector", "--format", "pva", "--bind", channel,
             "--frames", str(FRAMES), "--rate", "100", "--shape", "256x256", "--photons", "2e4",
             "--scenario", "operando", "--seed", "7", "--drift", "0.3", "--compression", "bslz4",
             "--wait", "5"],
            capture_output=True, text=True, timeout=120,
        )
        assert detector.returncode == 0, detector.stderr[-2000:]
        sink.collect(timeout=60)  # the series ends 2 s after its last frame
        last_event = sink.events()[-1]
        amplitude = pva.Channel(f"{prefix}:amplitude").get("field()")
        phase = pva.Channel(f"{prefix}:phase").get("field()")
        status = pva.Channel(f"{prefix}:status").get("field()")
    finally:
        counts = stop(proc)
    validate(sink.docs)
    events = sink.events()
    assert [e["data"]["frame"] for e in events] == list(range(1, FRAMES + 1)), "uniqueId 1.."
    assert counts["received"] == FRAMES == counts["reconstructed"]
    assert sink.of("stop")[0]["exit_status"] == "success"
    # the operator's images are the last frame's reconstruction, as in the Bluesky event
    for pv, key in ((amplitude, "amplitude"), (phase, "phase")):
        attrs = {a["name"]: a["value"][0]["value"] for a in pv["attribute"]}
        assert pv["uniqueId"] == attrs["frame"] == last_event["data"]["frame"] == FRAMES
        assert attrs["chi2"] == pytest.approx(last_event["data"]["chi2"])
        image = pv["value"][0]["floatValue"].reshape(32, 32)
        np.testing.assert_allclose(image, last_event["data"][key], atol=1e-6)
    assert status["reconstructed"] == FRAMES and status["last_frame"] == FRAMES
    # quality as over ZeroMQ: the same series, the same truth (uniqueId = frame + 1)
    sim = Scenario("operando", 7, FRAMES, DET.shape, drift=0.3)
    recon = np.stack([e["data"]["amplitude"] * np.exp(1j * e["data"]["phase"]) for e in events])
    truth = np.stack([sim.truth(e["data"]["frame"] - 1).obj for e in events])
    pva_iou = float(np.median(compare(recon, truth).iou))
    assert abs(pva_iou - _zmq_iou(shipped, context, sim)) <= 0.02
