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

    It may be created in the middle of a run (it tells cdistream's events by their keys when
    it missed their descriptor); results are kept by run and frame, for the newest run; foreign
    or malformed documents on the channel are counted in :attr:`ignored` and skipped.
    """

    frame = Cpt(Signal, value=-1, kind=Kind.hinted)
    chi2 = Cpt(Signal, value=float("nan"), kind=Kind.hinted)
    support_area = Cpt(Signal, value=0, kind=Kind.normal)
    phase_mean = Cpt(Signal, value=0.0, kind=Kind.normal)
    phase_std = Cpt(Signal, value=0.0, kind=Kind.hinted)
    peak_row = Cpt(Signal, value=0, kind=Kind.normal)
    peak_col = Cpt(Signal, value=0, kind=Kind.normal)
    peak_offset_row = Cpt(Signal, value=0.0, kind=Kind.normal)
    peak_offset_col = Cpt(Signal, value=0.0, kind=Kind.normal)
    trusted = Cpt(Signal, value=False, kind=Kind.normal)
    refined = Cpt(Signal, value=False, kind=Kind.normal)
    model_version = Cpt(Signal, value="", kind=Kind.normal)  # the networks that made it
    amplitude = Cpt(Signal, value=np.zeros((32, 32), np.float32), kind=Kind.normal)
    phase = Cpt(Signal, value=np.zeros((32, 32), np.float32), kind=Kind.normal)
    timeout = Cpt(Signal, value=10.0, kind=Kind.config)

    _SCALARS = (
        "frame",
        "chi2",
        "support_area",
        "phase_mean",
        "phase_std",
        "peak_row",
        "peak_col",
        "peak_offset_row",
        "peak_offset_col",
        "trusted",
        "refined",
        "model_version",
    )

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
        self._results: OrderedDict[tuple[str, int], dict] = OrderedDict()
        self._rejected: dict[tuple[str, int], str] = {}
        self._run: str | None = None  # the run whose frames triggers look for: the newest seen
        self._newest = -1
        self.ignored = 0  # foreign or malformed documents seen on the channel
        self._waiting: list[tuple[int | None, int, DeviceStatus]] = []
        self.last_model_update: dict | None = None  # the newest ``model`` event's data
        self._model_waiting: list[DeviceStatus] = []
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
        streams: dict[str, tuple[str, str]] = {}  # descriptor uid -> (stream, run key)
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            message = self._sock.recv()
            try:
                self._document(message, streams)
            except Exception as exc:  # a foreign or malformed document: count it, go on
                self.ignored += 1
                if self.ignored & (self.ignored - 1) == 0:
                    log.warning("%s: ignored a document on %s (%d so far): %r",
                                self.name, self.address, self.ignored, exc)

    def _document(self, message: bytes, streams: dict[str, tuple[str, str]]) -> None:
        _prefix, name, payload = message.split(b" ", 2)
        doc = unpackb(payload)
        if name == b"descriptor":
            streams[doc["uid"]] = (doc["name"], doc["run_start"])
            while len(streams) > 64:
                del streams[next(iter(streams))]
        elif name == b"event":
            descriptor = doc["descriptor"]
            if descriptor not in streams:  # joined mid-run: tell the stream by its keys
                streams[descriptor] = (_stream_of(doc["data"]), descriptor)
            stream, run = streams[descriptor]
            if stream == "primary":
                self._arrived(run, doc["data"])
            elif stream == "rejected":
                self._refused(run, int(doc["data"]["frame"]), str(doc["data"]["reason"]))
            elif stream == "model":
                self._model_changed(doc["data"])
            else:
                raise ValueError(f"an event of a stream this device does not read: {stream}")

    def _arrived(self, run: str, data: dict) -> None:
        frame = int(data["frame"])
        missing = [k for k in (*self._SCALARS, "amplitude", "phase") if k not in data]
        if missing:
            raise KeyError(f"an event without {missing}")
        with self._lock:
            if run != self._run:  # a new run: its frame numbers start again
                self._run, self._newest = run, -1
            self._results[(run, frame)] = data
            while len(self._results) > CACHE:
                self._results.popitem(last=False)
            self._newest = max(self._newest, frame)
            ready = [w for w in self._waiting if w[0] == frame or (w[0] is None and frame > w[1])]
            self._waiting = [w for w in self._waiting if w not in ready]
        for _, _, status in ready:
            self._show(data)
            if not status.done:
                status.set_finished()

    def _refused(self, run: str, frame: int, reason: str) -> None:
        with self._lock:
            if run != self._run:  # a new run, even if its first frame is a rejected one
                self._run, self._newest = run, -1
            self._rejected[(run, frame)] = reason
            while len(self._rejected) > CACHE:
                del self._rejected[next(iter(self._rejected))]
            failed = [w for w in self._waiting if w[0] == frame]
            self._waiting = [w for w in self._waiting if w not in failed]
        for _, _, status in failed:
            _fail(status, FrameRejected(frame, reason))

    def _model_changed(self, data: dict) -> None:
        with self._lock:
            self.last_model_update = dict(data)
            waiting, self._model_waiting = self._model_waiting, []
        for status in waiting:
            if not status.done:
                status.set_finished()

    def model_update(self, timeout: float) -> DeviceStatus:
        """A status that finishes when the service next changes the networks it serves with
        (``serve --adapt``: a round's model accepted, a series back on the shipped model, a
        learnt model recognised); :attr:`last_model_update` then says which and why. Fails
        with :class:`ReconstructionTimeout` after ``timeout`` seconds."""
        status = DeviceStatus(self)
        with self._lock:
            self._model_waiting.append(status)

        def expire() -> None:
            with self._lock:
                self._model_waiting = [s for s in self._model_waiting if s is not status]
            _fail(status, ReconstructionTimeout(
                f"{self.name}: no model update from {self.address} within {timeout:g} s"))

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        status.add_callback(lambda st: timer.cancel())
        return status

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
            key = (self._run, target)
            data = self._results.get(key) if target is not None else None
            reason = self._rejected.get(key) if target is not None else None
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


def _stream_of(data: dict) -> str:
    """The cdistream stream an event belongs to, from its data keys alone."""
    if {"frame", "amplitude", "chi2"} <= data.keys():
        return "primary"
    if data.keys() == {"frame", "reason"}:
        return "rejected"
    if {"version", "previous", "reason"} <= data.keys():
        return "model"
    return "foreign"


def _fail(status: DeviceStatus, exc: Exception) -> None:
    """Fail a status unless something else finished it first (a race we lose gracefully)."""
    if not status.done:
        try:
            status.set_exception(exc)
        except Exception:  # ophyd's InvalidState: it finished meanwhile
            log.debug("status already finished", exc_info=True)
