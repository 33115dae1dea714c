"""The fault matrix, over real loopback sockets with the shipped model: each fault leaves the
service reconstructing the next series in full, with exact counts, and never loses or
overwrites data."""

from __future__ import annotations

import datetime as dt
import shutil

import cbor2
import h5py
import numpy as np
import pytest

from cdistream.wire import Frame, SeriesEnd, SeriesStart, eiger_v2
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames

from .conftest import LOOPBACK
from .test_service import accounted, start_service

pytestmark = pytest.mark.timeout(240)
DET = DetectorModel(shape=(128, 128), hot_pixels=2, gap_rows=2)


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    sim = Scenario("operando", seed, count, DET.shape, drift=0.2)
    return list(scenario_frames(sim, DET, count, seed))


def series(pub, number: int, count: int, announce: int | None = None, end: bool = True):
    meta = {**DET.metadata(), "number_of_images": announce if announce is not None else count}
    pub.send(SeriesStart(number, DET.shape, DET.dtype, DET.mask(), meta))
    for i, image in enumerate(images(count, number)):
        pub.send(Frame(number, i, 0.0, image))
    if end:
        pub.send(SeriesEnd(number, count))


def stops(sink) -> list[dict]:
    return sink.of("stop")


def archive_columns(path) -> set[int]:
    """The lengths of every frame-indexed column of an archive (one length when consistent)."""
    lengths = set()
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.maxshape and obj.maxshape[0] is None:
                lengths.add(obj.shape[0])
        f.visititems(visit)
    return lengths


def test_archive_directory_gone_mid_run_costs_the_archive_not_the_run(shipped, context, tmp_path):
    where = tmp_path / "archive"
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        service, sink = start_service(shipped, context, pub, archive=where)
        try:
            shutil.rmtree(where)
            where.write_text("a file where the archive directory was")  # cannot be created
            series(pub, 1, 12)
            sink.collect(stops=1)
            where.unlink()  # the disk is back
            series(pub, 2, 12)
            sink.collect(stops=2)
        finally:
            counts = service.stop()
    first, second = stops(sink)
    assert first["exit_status"] == "fail" and "archive" in first["reason"]
    assert first["cdistream"]["reconstructed"] == 12, "every frame was still published"
    assert first["cdistream"]["notices"].get("open_run_failed") is None
    assert second["exit_status"] == "success" and second["cdistream"]["reconstructed"] == 12
    assert counts["received"] == 24 == accounted(counts)
    assert len(sink.events()) == 24
    (kept,) = where.glob("series_000002_*.h5")
    assert archive_columns(kept) == {12}


def test_any_cbor_in_user_data_is_converted_never_fatal(shipped, context):
    encoder = eiger_v2.Encoder(compression="bslz4")
    with DetectorPublisher(LOOPBACK, "push", context, "eiger-v2") as pub:
        service, sink = start_service(shipped, context, pub, format="eiger-v2", socket="pull")
        try:
            [[start]] = encoder.encode(SeriesStart(3, DET.shape, DET.dtype, DET.mask(), {}))
            message = cbor2.loads(start[3:])
            message["user_data"] = {
                "when": dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC),
                "calibration": cbor2.CBORTag(40, [[2, 3], cbor2.CBORTag(70, bytes(24))]),
                "nested": {"deeper": [{"x": b"\x00\x01"}, cbor2.CBORTag(4242, "odd")]},
                7: "an integer key",
            }
            pub.send_raw([eiger_v2.SELF_DESCRIBED + cbor2.dumps(message)])
            for i, image in enumerate(images(8, 3)):
                for parts in encoder.encode(Frame(3, i, 0.0, image)):
                    pub.send_raw(parts)
            for parts in encoder.encode(SeriesEnd(3, 8)):
                pub.send_raw(parts)
            sink.collect(stops=1)
            series_start = sink.of("start")[0]
        finally:
            counts = service.stop()
    user = series_start["detector"]["user_data"]
    assert user["when"] == "2026-11-25T12:00:00+00:00"
    assert user["calibration"] == [[0, 0, 0], [0, 0, 0]]
    assert user["nested"]["deeper"][0]["x"] == "0001" and "4242" in user["nested"]["deeper"][1]
    assert user["7"] == "an integer key"
    assert counts["notices"]["metadata_converted"] >= 4
    assert counts["reconstructed"] == 8 and stops(sink)[0]["exit_status"] == "success"


def test_an_aborted_series_is_closed_as_abort_with_its_missing_frames(shipped, context):
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        service, sink = start_service(shipped, context, pub)
        try:
            series(pub, 5, 50, announce=100, end=False)  # aborted: 50 of 100, no end
            series(pub, 6, 20)
            sink.collect(stops=2)
        finally:
            counts = service.stop()
    aborted, following = stops(sink)
    c = aborted["cdistream"]
    assert aborted["exit_status"] == "abort"
    assert "series 6 started before series 5 ended" in aborted["reason"]
    assert c["announced"] == 100 and c["missing_after_last"] == 50
    assert c["announced"] == c["received"] + c["missing_after_last"] + c["gaps"]
    assert c["received"] == 50 == c["reconstructed"] == accounted(c)
    assert c["notices"]["series_not_ended"] == 1
    assert following["exit_status"] == "success" and following["cdistream"]["reconstructed"] == 20
    assert counts["received"] == 70 == accounted(counts)


def test_the_same_series_id_twice_keeps_both_archives(shipped, context, tmp_path):
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        service, sink = start_service(shipped, context, pub, archive=tmp_path)
        try:
            series(pub, 1, 10)
            series(pub, 1, 15)  # a restarted detector counts from 1 again
            sink.collect(stops=2)
        finally:
            service.stop()
    files = sorted(tmp_path.glob("series_000001_*.h5"))
    assert len(files) == 2, files
    assert sorted(next(iter(archive_columns(f))) for f in files) == [10, 15]
    first, second = stops(sink)
    assert first["cdistream"]["received"] == 10 and second["cdistream"]["received"] == 15
    assert first["run_start"] != second["run_start"]


def _rebind(address: str, context, patience: float = 10.0) -> DetectorPublisher:
    """A new detector on the address the old one held: zmq releases a closed socket's port in
    its own thread, so binding right after may find it still taken for a moment."""
    import time

    import zmq

    deadline = time.monotonic() + patience
    while True:
        try:
            return DetectorPublisher(address, "push", context)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_detector_restarted_mid_series(shipped, context):
    """The detector process dies mid-series and comes back on the same address with a new
    series: the first run ends as abort with what it never got, the second is whole."""
    with DetectorPublisher(LOOPBACK, "push", context) as pub:
        address = pub.address
        service, sink = start_service(shipped, context, pub, socket="pull")
        try:
            series(pub, 8, 30, announce=60, end=False)
            sink.collect_until(lambda docs: len(sink.events()) >= 30, timeout=60)
        finally:
            pass
    # the old process is gone (socket closed); a new one binds the same address
    with _rebind(address, context) as again:
        try:
            series(again, 8, 25)
            sink.collect(stops=2)
        finally:
            counts = service.stop()
    first, second = stops(sink)
    assert first["exit_status"] == "abort" and first["cdistream"]["missing_after_last"] == 30
    assert second["exit_status"] == "success" and second["cdistream"]["reconstructed"] == 25
    assert counts["received"] == 55 == accounted(counts)
