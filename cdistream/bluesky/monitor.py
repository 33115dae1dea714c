"""ReconstructionMonitor: an ophyd device on the feedback channel that a plan can trigger and
read beside the detector, so reconstructions become ordinary readings in a Bluesky run."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import numpy as np
import zmq
from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, Kind, Signal

from cdistream.errors import CdistreamError
from cdistream.wire import unpackb

__all__ = ["FrameRejected", "ReconstructionMonitor", "ReconstructionTimeout"]

log = logging.getLogger(__name__)
CACHE = 1000  # reconstructions kept for triggers that come late


class ReconstructionTimeout(CdistreamError, TimeoutError):
    """No reconstruction arrived in time (the service is down, or the frame never came)."""


class FrameRejected(CdistreamError):
    """The service published that it will not reconstruct the frame, and why."""

    def __init__(self, frame: int, reason: str):
        super().__init__(f"cdistream rejected frame {frame}: {reason}")
        self.frame, self.reason = frame, reason


class ReconstructionMonitor(Device):
    """Latest reconstruction from a ``cdistream serve`` feedback channel.

    ``trigger()`` completes when the reconstruction of the detector's newest frame arrives:
    the frame number comes from ``frame_signal`` (e.g. the detector's frame counter, read when
    triggered, so list the detector before this device), or, without one, the next
    reconstruction published after the trigger. It fails with :class:`ReconstructionTimeout`
    after ``timeout`` seconds and with :class:`FrameRejected` when the service rejects the frame.
    """

    frame = Cpt(Signal, value=-1, kind=Kind.hinted)
    chi2 = Cpt(Signal, value=float("nan"), kind=Kind.hinted)
    support_area = Cpt(Signal, value=0, kind=Kind.normal)
    phase_mean = Cpt(Signal, value=0.0, kind=Kind.normal)
    phase_std = Cpt(Signal, value=0.0, kind=Kind.hinted)
    peak_row = Cpt(Signal, value=0, kind=Kind.normal)
    peak_col = Cpt(Signal, value=0, kind=Kind.normal)
    amplitude = Cpt(Signal, value=np.zeros((32, 32), np.float32), kind=Kind.normal)
    phase = Cpt(Signal, value=np.zeros((32, 32), np.float32), kind=Kind.normal)
    timeout = Cpt(Signal, value=10.0, kind=Kind.config)

    _SCALARS = ("frame", "chi2", "support_area", "phase_mean", "phase_std", "peak_row", "peak_col")

    def __init__(
        self,
        address: str,
        *,
        frame_signal: Signal | None = None,
        timeout: float = 10.0,
        name: str = "recon",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.address = address if "://" in address else f"tcp://{address}"
        self.frame_signal = frame_signal
        self.timeout.put(timeout)
        self._results: OrderedDict[int, dict] = OrderedDict()
        self._rejected: dict[int, str] = {}
        self._newest = -1
        self._waiting: list[tuple[int | None, int, DeviceStatus]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.linger = 0
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(self.address)
        self._thread = threading.Thread(target=self._listen, name=f"{name}-listener", daemon=True)
        self._thread.start()

    # -- the listener thread ---------------------------------------------------------------
    def _listen(self) -> None:
        descriptors: dict[str, str] = {}
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            try:
                _prefix, name, payload = self._sock.recv().split(b" ", 2)
                doc = unpackb(payload)
            except Exception:  # not a document: ignore it, as RemoteDispatcher does
                log.warning("%s: undecodable message on %s", self.name, self.address)
                continue
            if name == b"start":
                with self._lock:
                    self._results.clear()
                    self._rejected.clear()
                    self._newest = -1
            elif name == b"descriptor":
                descriptors[doc["uid"]] = doc["name"]
            elif name == b"event":
                stream = descriptors.get(doc["descriptor"])
                if stream == "primary":
                    self._arrived(doc["data"])
                elif stream == "rejected":
                    self._refused(int(doc["data"]["frame"]), doc["data"]["reason"])

    def _arrived(self, data: dict) -> None:
        frame = int(data["frame"])
        with self._lock:
            self._results[frame] = data
            while len(self._results) > CACHE:
                self._results.popitem(last=False)
            self._newest = max(self._newest, frame)
            ready = [w for w in self._waiting if w[0] == frame or (w[0] is None and frame > w[1])]
            self._waiting = [w for w in self._waiting if w not in ready]
        for _, _, status in ready:
            self._show(data)
            if not status.done:
                status.set_finished()

    def _refused(self, frame: int, reason: str) -> None:
        with self._lock:
            self._rejected[frame] = reason
            failed = [w for w in self._waiting if w[0] == frame]
            self._waiting = [w for w in self._waiting if w not in failed]
        for _, _, status in failed:
            _fail(status, FrameRejected(frame, reason))

    def _show(self, data: dict) -> None:
        for key in self._SCALARS:
            getattr(self, key).put(data[key])
        self.amplitude.put(np.asarray(data["amplitude"]))
        self.phase.put(np.asarray(data["phase"]))

    # -- the ophyd interface -----------------------------------------------------------------
    def trigger(self) -> DeviceStatus:
        status = DeviceStatus(self)
        target = int(self.frame_signal.get()) if self.frame_signal is not None else None
        seconds = float(self.timeout.get())
        with self._lock:
            data = self._results.get(target) if target is not None else None
            reason = self._rejected.get(target) if target is not None else None
            if data is None and reason is None:
                self._waiting.append((target, self._newest, status))
        if data is not None:
            self._show(data)
            status.set_finished()
        elif reason is not None:
            _fail(status, FrameRejected(target, reason))
        else:
            timer = threading.Timer(seconds, self._expire, (status, target, seconds))
            timer.daemon = True
            timer.start()
            status.add_callback(lambda st: timer.cancel())
        return status

    def _expire(self, status: DeviceStatus, target: int | None, seconds: float) -> None:
        with self._lock:
            self._waiting = [w for w in self._waiting if w[2] is not status]
        what = "the next reconstruction" if target is None else f"frame {target}"
        _fail(
            status,
            ReconstructionTimeout(
                f"{self.name}: no reconstruction of {what} from {self.address} within "
                f"{seconds:g} s; is `cdistream serve --feedback` running there?"
            ),
        )

    def destroy(self) -> None:
        """Stop listening and close the socket."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close(linger=0)
        super().destroy()


def _fail(status: DeviceStatus, exc: Exception) -> None:
    """Fail a status unless something else finished it first (a race we lose gracefully)."""
    if not status.done:
        try:
            status.set_exception(exc)
        except Exception:  # ophyd's InvalidState: it finished meanwhile
            log.debug("status already finished", exc_info=True)
