"""``cdistream view``: a live window on the feedback channel: the latest amplitude and phase
(colour bars, radians on a cyclic map), chi2 and support area over the run, frame number and
latency. Joins a run in progress; ``--save PNG`` draws off-screen after N reconstructions."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import zmq
import zmq.auth

from cdistream.bluesky.callbacks import ReconstructionCallback
from cdistream.wire import unpackb

__all__ = ["LiveView", "run_view"]

log = logging.getLogger(__name__)


class LiveView(ReconstructionCallback):
    """The figure, updated by every reconstruction it accepts (any chi2 by default)."""

    def __init__(self, figure, max_chi2: float = np.inf, history: int = 2000):
        super().__init__(max_chi2)
        from cdistream.plotting import show_amplitude, show_phase

        self.figure = figure
        # room between the images' colour bars and the history plots' labels
        grid = figure.add_gridspec(2, 3, width_ratios=(1, 1, 1.4), wspace=0.45, hspace=0.35,
                                   left=0.04, right=0.98)
        self._amp = show_amplitude(figure, figure.add_subplot(grid[:, 0]), np.zeros((32, 32)))
        self._phase = show_phase(figure, figure.add_subplot(grid[:, 1]), np.zeros((32, 32)))
        self._chi2_ax = figure.add_subplot(grid[0, 2])
        self._area_ax = figure.add_subplot(grid[1, 2])
        (self._chi2_line,) = self._chi2_ax.plot([], [], ".-", ms=2, lw=0.8)
        (self._area_line,) = self._area_ax.plot([], [], ".-", ms=2, lw=0.8, color="tab:green")
        self._chi2_ax.set_ylabel("chi2")
        self._chi2_ax.set_yscale("log")
        self._area_ax.set_ylabel("support area (pixels)")
        self._area_ax.set_xlabel("frame")
        self.history = history
        self.frames: list[int] = []
        self.chi2s: list[float] = []
        self.areas: list[int] = []
        self.last: dict | None = None
        self._title = figure.suptitle("waiting for reconstructions", fontsize=9)

    def start(self, doc):  # a new run: its own history
        self.frames, self.chi2s, self.areas = [], [], []
        return super().start(doc)

    def reconstruction(self, data: dict) -> None:
        self.last = data
        self.frames.append(int(data["frame"]))
        self.chi2s.append(max(float(data["chi2"]), 1e-8))
        self.areas.append(int(data.get("support_area", 0)))
        del self.frames[: -self.history], self.chi2s[: -self.history], self.areas[: -self.history]

    def draw(self) -> None:
        """Bring the panels up to date with the newest reconstruction."""
        data = self.last
        if data is None:
            return
        phase = np.asarray(data["phase"], float)
        amplitude = np.asarray(data["amplitude"])
        support = np.asarray(data["support"]) if "support" in data else amplitude > 0.1
        self._amp.set_data(amplitude)
        self._phase.set_data(np.where(support, phase, np.nan))  # blank outside the support
        self._chi2_line.set_data(self.frames, self.chi2s)
        self._area_line.set_data(self.frames, self.areas)
        for ax in (self._chi2_ax, self._area_ax):
            ax.relim()
            ax.autoscale_view()
        latency = 1e3 * float(data.get("latency", np.nan))
        trusted = "" if data.get("trusted", True) else "  (not trusted)"
        self._title.set_text(
            f"frame {data['frame']}   chi2 {float(data['chi2']):.4f}{trusted}   latency"
            f" {latency:.1f} ms   {self.accepted} reconstructions"
        )


def _socket(address: str, curve=None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(curve.secret_path)
        sock.curve_serverkey = zmq.auth.load_certificate(curve.server_public_key)[0]
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(address if "://" in address else f"tcp://{address}")
    return sock


def _drain(sock: zmq.Socket, view: LiveView, wait_ms: int) -> None:
    """Feed every document that is waiting (the first wait up to ``wait_ms``) to the view."""
    timeout = wait_ms
    while sock.poll(timeout):
        timeout = 0
        try:
            _prefix, name, payload = sock.recv().split(b" ", 2)
            view(name.decode(), unpackb(payload))
        except Exception as exc:  # a foreign or malformed document: skip it
            log.debug("skipped a message: %r", exc)


def run_view(
    address: str,
    save: Path | None = None,
    frames: int = 20,
    timeout: float = 60.0,
    curve=None,
) -> LiveView:
    """A window following ``address``; with ``save``, off-screen: draw after ``frames``
    reconstructions (or ``timeout`` seconds) and write the PNG."""
    import matplotlib

    if save is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(12, 4.2))
    view = LiveView(figure)
    sock = _socket(address, curve)
    try:
        if save is not None:
            deadline = time.monotonic() + timeout
            while view.accepted < frames and time.monotonic() < deadline:
                _drain(sock, view, 100)
            view.draw()
            figure.savefig(save, dpi=110)
            plt.close(figure)
            return view

        def tick():
            _drain(sock, view, 0)
            view.draw()
            figure.canvas.draw_idle()

        timer = figure.canvas.new_timer(interval=200)
        timer.add_callback(tick)
        timer.start()
        plt.show()
        return view
    finally:
        sock.close()
