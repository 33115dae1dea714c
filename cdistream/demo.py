"""``cdistream demo``: the whole loop on one machine. The simulated detector streams an operando
series over ZeroMQ, the service reconstructs it with the shipped models, learning the series
as it goes (``serve --adapt``), and a real Bluesky RemoteDispatcher prints a live table; ends
with an HDF5 archive, a PNG against ground truth and a summary of counts, latency and the
model updates."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bluesky.callbacks import LiveTable

from cdistream.bluesky import RemoteConsumer
from cdistream.physics import compare
from cdistream.service import Service, ServiceConfig

__all__ = ["DemoResult", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What the demo measured, for its summary and for tests."""

    events: list[dict] = field(default_factory=list)
    start: dict | None = None
    stop: dict | None = None
    archive: Path | None = None
    figure: Path | None = None
    iou: np.ndarray | None = None
    phase_rmse: np.ndarray | None = None
    models: list[dict] = field(default_factory=list)  # the ``model`` stream: each change

    def collect(self, name: str, doc: dict) -> None:
        if name == "start":
            self.start = doc
        elif name == "event" and "amplitude" in doc["data"]:
            self.events.append(doc)
        elif name == "event" and "previous" in doc["data"]:
            self.models.append(doc["data"])
        elif name == "stop":
            self.stop = doc


def run_demo(
    out: Path,
    frames: int = 120,
    rate: float = 40.0,
    scenario: str = "operando",
    seed: int = 0,
    table: bool = True,
    adapt: bool = True,
) -> DemoResult:
    """Run detector -> service -> Bluesky consumer for one series; write results to ``out``.
    With ``adapt`` the networks learn the series while it streams (``serve --adapt``)."""
    from cdistream.simulator import DetectorModel, DetectorPublisher, Scenario, scenario_frames

    out.mkdir(parents=True, exist_ok=True)
    detector = DetectorModel(seed=seed)
    sim = Scenario(scenario, seed, frames, detector.shape)
    result = DemoResult()
    callbacks = [result.collect]
    if table:
        callbacks.append(
            LiveTable(
                ["frame", "chi2", "peak_row", "peak_col", "phase_std", "latency", "model_version"],
                default_prec=3,
            )
        )
    with DetectorPublisher("tcp://127.0.0.1:*") as pub:
        config = ServiceConfig(input=pub.address, feedback="tcp://127.0.0.1:*", archive=out,
                               adapt=adapt)
        with (
            Service(config) as service,
            RemoteConsumer(service.feedback.address, callbacks) as consumer,
        ):
            pub.wait_for_subscriber(10)
            images = scenario_frames(sim, detector, frames, seed)
            sender = threading.Thread(
                target=pub.run_series,
                args=(
                    1,
                    detector.shape,
                    detector.dtype,
                    images,
                    rate,
                    detector.mask(),
                    {"scenario": scenario, "seed": seed},
                ),
            )
            sender.start()
            sender.join()
            consumer.wait_for_stops(1, timeout=60)
    result.archive = Path(result.start["archive"])
    truth = np.stack([sim.truth(e["data"]["frame"]).obj for e in result.events])
    recon = np.stack(
        [e["data"]["amplitude"] * np.exp(1j * e["data"]["phase"]) for e in result.events]
    )
    scores = compare(recon, truth)
    result.iou, result.phase_rmse = scores.iou, scores.phase_rmse
    result.figure = _figure(out / "reconstructions.png", result.events, truth, recon)
    return result


def _figure(path: Path, events: list[dict], truth: np.ndarray, recon: np.ndarray) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cdistream.physics import align
    from cdistream.plotting import display_phase, show_amplitude, show_phase

    picks = np.linspace(0, len(events) - 1, 5).astype(int)
    aligned, _ = align(recon[picks], truth[picks])
    fig, axes = plt.subplots(4, len(picks), figsize=(2.6 * len(picks), 8.4))
    for j, k in enumerate(picks):
        data = events[k]["data"]
        show_amplitude(fig, axes[0, j], np.abs(truth[k]), f"frame {data['frame']}: true")
        show_amplitude(fig, axes[1, j], np.abs(aligned[j]), "reconstructed")
        show_phase(fig, axes[2, j], display_phase(truth[k]), "true phase")
        title = f"reconstructed, chi2 {data['chi2']:.3f}"
        show_phase(fig, axes[3, j], display_phase(aligned[j]), title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
