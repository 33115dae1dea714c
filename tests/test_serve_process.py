"""``cdistream serve`` as a process, as a beamline runs it under systemd: a disk that fills in
the middle of a series, a service restarted mid-series, options and files it cannot use
(exit status 2, one line, before anything starts), Prometheus metrics equal to the stop
document."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
import urllib.request

import h5py
import numpy as np
import pytest

from cdistream.wire import Frame, SeriesEnd, SeriesStart
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames
from sim_detector.crystals import CrystalRecipe

from .conftest import LOOPBACK, DocumentSink, free_port
from .test_faults import archive_columns

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
DET = DetectorModel(shape=(128, 128), hot_pixels=2, gap_rows=2)


def serve(*args: str, limit_bytes: int | None = None) -> subprocess.Popen:
    def limits():  # a file-size limit: writes past it fail with EFBIG instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen(
        [sys.executable, "-m", "cdistream", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limits,
    )


def send_series(pub, number: int, count: int, start_at: int = 0, start=True, end=True,
                recipe: CrystalRecipe | None = None):
    if start:
        pub.send(SeriesStart(number, DET.shape, DET.dtype, DET.mask(), DET.metadata()))
    shape = {"recipe": recipe} if recipe else {}
    sim = Scenario("operando", number, start_at + count, DET.shape, drift=0.2, **shape)
    frames = list(scenario_frames(sim, DET, start_at + count, number))
    for i in range(start_at, start_at + count):
        pub.send(Frame(number, i, time.time(), frames[i]))
    if end:
        pub.send(SeriesEnd(number, start_at + count))


def stop(proc: subprocess.Popen, timeout: float = 60) -> dict:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def connect(context, pub, feedback: str, proc) -> DocumentSink:
    """A sink on the feedback channel, subscribed before the service connects to the detector
    (the service binds its feedback socket first, then loads the model, then connects)."""
    sink = DocumentSink(context, feedback)
    if pub.kind == "pub":  # a PUSH detector needs no wait: sends queue until the service pulls
        assert pub.wait_for_subscriber(90), proc.stderr.read() if proc.poll() is not None else ""
    return sink


def test_a_disk_that_fills_mid_series(context, tmp_path):
    feedback = f"tcp://127.0.0.1:{free_port()}"
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        proc = serve("--input", pub.address, "--feedback", feedback, "--archive", str(tmp_path),
                     limit_bytes=3_000_000)
        try:
            sink = connect(context, pub, feedback, proc)
            send_series(pub, 1, 96)
            sink.collect(stops=1, timeout=60)
            send_series(pub, 2, 10)
            sink.collect(stops=2, timeout=60)
        finally:
            counts = stop(proc)
    full, after = sink.of("stop")
    c = full["cdistream"]
    assert full["exit_status"] == "fail" and "archive" in full["reason"]
    assert c["reconstructed"] == 96 and c["received"] == 96, "every frame still published"
    failed = c["notices"]["archive_failed"]
    assert 0 < failed < 96
    (path,) = tmp_path.glob("series_000001_*.h5")
    (rows,) = archive_columns(path)  # closed consistent: every column the same length
    assert rows + failed == 96
    with h5py.File(path, "r") as f:
        assert list(f["entry/data/frame"][:]) == list(range(rows))
    assert after["exit_status"] == "success" and after["cdistream"]["reconstructed"] == 10
    assert counts["received"] == 106 == counts["reconstructed"]
    assert len(sink.events()) == 106


def test_a_service_restarted_mid_series_overwrites_nothing(context, tmp_path):
    with DetectorPublisher(LOOPBACK, "push", context=context) as pub:
        archives = []
        for part, (start_at, count) in enumerate(((0, 20), (20, 20))):
            feedback = f"tcp://127.0.0.1:{free_port()}"
            proc = serve("--input", pub.address, "--socket", "pull", "--feedback", feedback,
                         "--archive", str(tmp_path))
            sink = connect(context, pub, feedback, proc)
            send_series(pub, 4, count, start_at, start=part == 0, end=part == 1)
            sink.collect_until(lambda docs, n=count, s=sink: len(s.events()) >= n, timeout=60)
            counts = stop(proc)
            archives.append(sink.of("start")[0]["archive"])
            assert counts["reconstructed"] == count
    assert archives[0] != archives[1]
    kept = sorted(tmp_path.glob("series_000004_*.h5"))
    assert len(kept) == 2 and [next(iter(archive_columns(k))) for k in kept] == [20, 20]
    with h5py.File(archives[1], "r") as f:
        assert f["entry/data/frame"][0] == 20


@pytest.mark.parametrize(
    "args, says",
    [
        (["--models", "/nonexistent/cdi_nn.keras"], "no model"),
        (["--roi-size", "50"], "--roi-size 50: the model takes 32 x 32"),
        (["--max-batch", "1000"], "--max-batch 1000: allowed 1 to 256"),
        (["--memory-budget", "1MiB"], "--memory-budget"),
        (["--archive", "/proc/version"], "--archive /proc/version: not a writable directory"),
    ],
)
def test_options_it_cannot_honour_are_refused_before_anything_starts(args, says):
    proc = serve("--input", f"tcp://127.0.0.1:{free_port()}", *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert says in err and "Traceback" not in err


def test_a_corrupt_model_and_a_busy_feedback_port_are_refused(tmp_path, context):
    bad = tmp_path / "cdi_nn.keras"
    bad.write_bytes(b"PK\x03\x04 not a keras file")
    proc = serve("--input", f"tcp://127.0.0.1:{free_port()}", "--models", str(bad))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "cannot load" in err and "Traceback" not in err
    holder = context.socket(1)  # PUB
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    try:
        proc = serve("--input", f"tcp://127.0.0.1:{free_port()}", "--feedback",
                     f"tcp://127.0.0.1:{port}")
        _, err = proc.communicate(timeout=120)
    finally:
        holder.close(linger=0)
    assert proc.returncode == 2 and "cannot bind" in err


def test_a_larger_roi_is_binned_only_where_the_crystal_stays_inside(context):
    """--roi-size 64 asks for binning 2: a small crystal (4-6 px, oversampled about 6x in a
    crop of 32) is binned; the usual one (8-14 px, about 3.4x) would be squeezed under 2, so
    its series is cropped instead, and its start document says so."""
    feedback = f"tcp://127.0.0.1:{free_port()}"
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        proc = serve("--input", pub.address, "--feedback", feedback, "--roi-size", "64")
        try:
            sink = connect(context, pub, feedback, proc)
            send_series(pub, 1, 12, recipe=CrystalRecipe(min_extent=4, max_extent=6))
            send_series(pub, 2, 12)
            sink.collect(stops=2, timeout=60)
        finally:
            counts = stop(proc)
    assert counts["reconstructed"] == 24
    small, usual = sink.of("start")
    assert small["roi"]["size"] == usual["roi"]["size"] == 32
    assert small["roi"]["binning"] == 2 and small["sampling"]["oversampling"] > 2
    assert not small["sampling"]["binning_reduced"]
    assert usual["roi"]["binning"] == 1 and usual["sampling"]["binning_reduced"]
    assert usual["sampling"]["asked_binning"] == 2 and usual["sampling"]["fits"]


def test_metrics_equal_the_stop_document(context):
    feedback, metrics = f"tcp://127.0.0.1:{free_port()}", free_port()
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        proc = serve("--input", pub.address, "--feedback", feedback, "--metrics", str(metrics))
        try:
            sink = connect(context, pub, feedback, proc)
            send_series(pub, 1, 30)
            pub.send_raw([b"\xc1 not msgpack"])
            # a stray frame after its series ended: a run of its own (start missed), no peak
            pub.send(Frame(1, 99, 0.0, np.ones(DET.shape, np.uint16)))
            send_series(pub, 2, 5, start_at=0)
            sink.collect(stops=3, timeout=60)
            time.sleep(0.3)
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read()
        finally:
            counts = stop(proc)
    scraped = {}
    for line in text.decode().splitlines():
        if line.startswith("cdistream_") and " " in line:
            name, value = line.rsplit(" ", 1)
            scraped[name] = float(value)
    assert scraped["cdistream_frames_received_total"] == counts["received"]
    assert scraped["cdistream_frames_reconstructed_total"] == counts["reconstructed"] == 35
    for reason, n in counts["rejected"].items():
        assert scraped[f'cdistream_frames_rejected_total{{reason="{reason}"}}'] == n
    assert scraped["cdistream_worker_alive"] == 1.0
    assert scraped["cdistream_batch_size_count"] > 0
    runs = [d["cdistream"] for d in sink.of("stop")]
    assert sum(r["reconstructed"] for r in runs) == scraped["cdistream_frames_reconstructed_total"]


def _memory(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, bytes."""
    from pathlib import Path

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def simulate(address: str, series: int, frames: int, rate: float | None) -> dict:
    """``cdistream simulate`` as its own process, as a detector is: its report of the series."""
    args = ["--bind", address, "--socket", "push", "--series", str(series), "--frames",
            str(frames), "--cycle", "200", "--shape", "128x128", "--scenario", "operando",
            "--wait", "60"]
    if rate:
        args += ["--rate", f"{rate:.0f}"]
    done = subprocess.run([sys.executable, "-m", "cdistream", "simulate", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stderr.splitlines()[::-1] if f"series {series}: {{" in x)
    return json.loads(line.split(f"series {series}: ", 1)[1])


@pytest.mark.timeout(400)
def test_a_stalled_subscriber_under_overload_stays_within_the_budget(context):
    """At least 2x overload for 60 s; the one subscriber stops reading for 10 s of it. The
    service's memory stays under its budget (above what it used before the load), the
    documents the subscriber could not take are counted, the detector (its own process, as at a
    beamline) is never held up, every frame is accounted for.

    The overload is measured, not asked for: 2,400 frames/s is what this 2-core machine's
    detector process holds while the service takes both cores, and under it the service (at
    --max-batch 32) reconstructs under half (its saturated rate, with nothing else running,
    is higher: the receiver, the detector and the networks share the cores). No subscriber
    here decodes the events: at these rates a Python one would be the bottleneck; the counts
    come from the service's own totals less those of the warm-up series."""
    import threading

    import zmq

    budget = 256 * 2**20
    feedback = f"tcp://127.0.0.1:{free_port()}"
    detector = f"tcp://127.0.0.1:{free_port()}"
    proc = serve("--input", detector, "--socket", "pull", "--feedback", feedback,
                 "--memory-budget", str(budget), "--max-frame-bytes", "64KiB", "--max-batch", "32")
    try:
        sink = DocumentSink(context, feedback)
        simulate(detector, 1, 1000, None)  # warm: the baseline is a working service's
        warm = [d for n, d in sink.collect(stops=1, timeout=120) if n == "stop"][0]["cdistream"]
        sink.sock.close()
        baseline = _memory(proc.pid, "VmRSS")
        stalled = context.socket(zmq.SUB)
        stalled.linger = 0
        stalled.rcvhwm = 100
        stalled.setsockopt(zmq.SUBSCRIBE, b"")
        stalled.connect(feedback)
        reading, stopped = threading.Event(), threading.Event()
        reading.set()

        def read_then_stall():
            while reading.is_set():
                if 20 < time.monotonic() - started < 30:  # 10 s without reading
                    time.sleep(0.05)
                elif stalled.poll(50) and stalled.recv().split(b" ", 2)[1] == b"stop":
                    stopped.set()

        rate = 2400.0
        count = int(rate * 60)
        started = time.monotonic()
        reader = threading.Thread(target=read_then_stall, daemon=True)
        reader.start()
        sent = simulate(detector, 2, count, rate)  # the detector process, to its end
        assert stopped.wait(120), "the overload run's stop document reached the subscriber"
        peak = _memory(proc.pid, "VmHWM")
        reading.clear()
        reader.join(timeout=10)
        stalled.close()
    finally:
        counts = stop(proc)
    overload = {k: counts[k] - warm[k] for k in ("received", "reconstructed", "dropped",
                                                 "documents_not_delivered")}
    overload["rejected"] = sum(counts["rejected"].values()) - sum(warm["rejected"].values())
    seen = f"{overload}, detector {sent['rate']:.0f} of {rate:.0f}/s"
    assert sent["held_rate"], f"the detector was held up: {seen}"
    assert overload["received"] == count, seen
    assert count == overload["reconstructed"] + overload["rejected"] + overload["dropped"]
    assert overload["received"] >= 2 * overload["reconstructed"], f"2x overload: {seen}"
    assert overload["dropped"] > 0, "the oldest frames go"
    assert overload["documents_not_delivered"] > 0, "the stalled subscriber's losses, counted"
    assert peak - baseline < budget, f"{(peak - baseline) / 2**20:.0f} MiB above the baseline"
    assert counts["received"] == accounted_counts(counts)


def accounted_counts(c: dict) -> int:
    return c["reconstructed"] + sum(c["rejected"].values()) + c["dropped"]
