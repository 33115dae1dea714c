"""The commands as a user runs them: ``cdistream serve`` shutting down cleanly on SIGTERM, and
``cdistream demo``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cdistream.cli import _model_lines
from cdistream.demo import run_demo
from cdistream.wire import Frame, SeriesStart
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames

from .conftest import LOOPBACK, DocumentSink, free_port


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_drains_and_closes_the_run_on_sigterm(tiny_reconstructor, context, tmp_path):
    model = tmp_path / "tiny.keras"
    tiny_reconstructor._model.save(model)
    det = DetectorModel(shape=(96, 96))
    feedback = f"tcp://127.0.0.1:{free_port()}"
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cdistream",
                "serve",
                "--input",
                pub.address,
                "--feedback",
                feedback,
                "--models",
                str(model),
                "--archive",
                str(tmp_path / "archive"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert pub.wait_for_subscriber(60), "serve connects to the detector"
            sink = DocumentSink(context, feedback)
            time.sleep(0.5)  # let the sink's subscription reach the service's PUB socket
            pub.send(SeriesStart(1, det.shape, det.dtype, det.mask(), {}))
            images = scenario_frames(
                Scenario("static", frames=10, detector_shape=det.shape), det, 10
            )
            for i, image in enumerate(images):
                pub.send(Frame(1, i, time.time(), image))
            sink.collect_until(lambda docs: any(n == "event" for n, _ in docs), timeout=30)
            proc.send_signal(signal.SIGTERM)
            docs = sink.collect(timeout=30)
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0
    stop = [d for n, d in docs if n == "stop"][0]
    assert stop["exit_status"] == "abort" and "stopped" in stop["reason"]
    counts = json.loads(out.strip().splitlines()[-1])
    assert (
        counts["received"]
        == counts["reconstructed"] + sum(counts["rejected"].values()) + counts["dropped"]
    )
    assert counts["received"] == 10 and len(list((tmp_path / "archive").glob("series_000001_*")))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_runs_the_whole_loop(tmp_path):
    result = run_demo(tmp_path, frames=40, rate=80)  # with its LiveTable
    counts = result.stop["cdistream"]
    assert counts["received"] == 40 == counts["reconstructed"] + sum(counts["rejected"].values())
    assert len(result.events) == counts["reconstructed"]
    assert result.archive.exists() and result.figure.exists()
    assert np.median(result.iou) > 0.7
    assert all(e["data"]["model_version"].startswith("shipped-") for e in result.events)
    assert _model_lines(result)[0].startswith("model: no update")  # 40 frames: no round ends


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_both_commands_speak_a_dectris_stream(tiny_reconstructor, context, tmp_path):
    """``python -m sim_detector --format eiger-v1`` into ``cdistream serve --format auto``."""
    model = tmp_path / "tiny.keras"
    tiny_reconstructor._model.save(model)
    detector, feedback = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "cdistream", "serve", "--format", "auto", "--socket", "pull",
         "--input", detector, "--feedback", feedback, "--models", str(model)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        sink = DocumentSink(context, feedback)
        sim = subprocess.run(
            [sys.executable, "-m", "sim_detector", "--format", "eiger-v1", "--bind", detector,
             "--frames", "12", "--shape", "96x96", "--scenario", "static", "--series", "4"],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert sim.returncode == 0, sim.stderr
        docs = sink.collect(timeout=60)
        serve.send_signal(signal.SIGTERM)
        out, _ = serve.communicate(timeout=30)
    finally:
        serve.kill()
    start = [d for n, d in docs if n == "start"][0]
    assert start["detector_format"] == "eiger-v1" and start["detector_series"] == 4
    assert start["detector"]["header_detail"] == "all" and start["detector"]["count_time"] > 0
    assert [d["data"]["frame"] for n, d in docs if n == "event"] == list(range(12))
    assert json.loads(out.strip().splitlines()[-1])["reconstructed"] == 12
