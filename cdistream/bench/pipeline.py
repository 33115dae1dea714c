"""Pipeline measurements over real loopback sockets: the simulated detector in its own process
(pre-rendered frames, as fast as asked), the service in this one, a consumer thread that
timestamps every event on receipt."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import zmq

from cdistream.inference import Reconstructor
from cdistream.roi import RoiConfig, warm
from cdistream.service import Accounting, Service, ServiceConfig
from cdistream.service.queue import FrameQueue
from cdistream.service.receiver import Receiver
from cdistream.wire import unpackb
from cdistream.wire.formats import make_decoder

__all__ = ["end_to_end", "ingest_capacity", "ingest_rate"]

LOOPBACK = "tcp://127.0.0.1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _detector(
    frames: int,
    rate: float | None,
    socket: str,
    shape: tuple[int, int],
    format: str = "native",
    compression: str = "none",
    scenario: str = "static",
    cpus: set[int] | None = None,
):
    """A sim_detector process bound on a free port (on ``cpus`` if given); yields its
    address and the process."""
    address = f"{LOOPBACK}:{_free_port()}"
    cmd = [
        sys.executable,
        "-m",
        "cdistream",
        "simulate",
        "--bind",
        address,
        "--socket",
        socket,
        "--frames",
        str(frames),
        "--cycle",
        "16",
        "--scenario",
        scenario,
        "--shape",
        f"{shape[0]}x{shape[1]}",
        "--wait",
        "30",
        "--format",
        format,
        "--compression",
        compression,
    ]
    if rate:
        cmd += ["--rate", str(rate)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    try:
        yield address, proc
        proc.wait(timeout=600)
    finally:
        proc.kill()


class _Consumer(threading.Thread):
    """Counts events and measures latency from the frame's timestamp to receipt here."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)
        self.latency: list[float] = []
        self.received: list[float] = []  # when each event's latency was taken
        self.refined = self.untrusted_unrefined = 0
        self.first = self.last = None
        self.stop_doc: dict | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if not self.sock.poll(100):
                continue
            _, name, payload = self.sock.recv().split(b" ", 2)
            now = time.time()
            if name == b"event":
                doc = unpackb(payload)
                if "frame" in doc["timestamps"] and "chi2" in doc["data"]:
                    self.latency.append(now - doc["timestamps"]["frame"])
                    self.received.append(now)
                    self.refined += bool(doc["data"].get("refined"))
                    self.untrusted_unrefined += not (
                        doc["data"].get("refined") or doc["data"].get("trusted", True)
                    )
                    self.first = self.first or now
                    self.last = now
            elif name == b"stop":
                self.stop_doc = unpackb(payload)
                self.done.set()
        self.sock.close()


def end_to_end(
    rec: Reconstructor,
    frames: int,
    rate: float | None = None,
    shape: tuple[int, int] = (512, 512),
    max_batch: int = 256,
    max_wait_ms: float = 5.0,
    refine_above: float | None = None,
    scenario: str = "static",
    workers: int = 0,
    adapt: bool = False,
    window: tuple[float, float] | None = None,
) -> dict:
    """One series through detector -> service -> consumer. Without ``rate`` the detector
    pushes as fast as the pipeline takes (PUSH/PULL back-pressure, nothing lost); with a rate
    it publishes on PUB/SUB like a live detector and the service drops under overload.
    ``refine_above``: the trust gate's threshold, as ``serve --refine-above``; ``workers``:
    reconstruct in that many worker processes over PVA, as ``serve --workers``; ``adapt``: as
    ``serve --adapt``, the result then says while which seconds (from the first event) a round
    was tuning, and the latency is that of the frames received meanwhile. ``window`` (seconds
    from the first event): the latency of the frames received within it only."""
    socket = "pub" if rate else "push"
    with _detector(frames, rate, socket, shape, scenario=scenario) as (address, _):
        config = ServiceConfig(
            input=address,
            socket={"pub": "sub", "push": "pull"}[socket],
            feedback=f"{LOOPBACK}:*",
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            status_interval=3600,
            refine_above=refine_above,
            workers=workers,
            adapt=adapt,
        )
        service = Service(config, rec)
        consumer = _Consumer(service.feedback.address)
        consumer.start()
        service.start()
        service.feedback.wait_for_subscribers(1, 10)
        tuning = _tuning_seconds(service, consumer) if adapt else None
        consumer.done.wait(timeout=600)
        service.stop()
        if tuning is not None:
            tuning.join()
    counts = consumer.stop_doc["cdistream"] if consumer.stop_doc else service.accounting.snapshot()
    lat = np.array(consumer.latency) * 1e3
    span = (consumer.last - consumer.first) if consumer.first and consumer.last else float("nan")
    if adapt:
        window = tuning.span
    if window is not None and consumer.first:
        t = np.array(consumer.received) - consumer.first
        lat = lat[(t >= window[0]) & (t <= window[1])]
    return {
        "frames": frames,
        "rate_asked": rate,
        "reconstructed": counts["reconstructed"],
        "dropped": counts["dropped"],
        "received": counts["received"],
        "refined": consumer.refined,
        "above_threshold_unrefined": consumer.untrusted_unrefined,
        "frames_per_s": (len(lat) - 1) / span if len(lat) > 1 and span > 0 else float("nan"),
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "max": float(lat.max()) if len(lat) else float("nan"),
        },
        **({"tuning_s": tuning.span, "rounds": service.adapter.rounds} if adapt else {}),
    }


class _Tuning(threading.Thread):
    """Samples, every 50 ms, whether the service's adapter is tuning; ``span``: the first and
    last second (from the first event) it was."""

    def __init__(self, service: Service, consumer: _Consumer):
        super().__init__(daemon=True)
        self.service, self.consumer = service, consumer
        self.span: tuple[float, float] | None = None

    def run(self) -> None:
        while not self.consumer.done.is_set():
            if self.service.adapter.tuning and self.consumer.first:
                now = time.time() - self.consumer.first
                self.span = (self.span[0] if self.span else now, now)
            time.sleep(0.05)


def _tuning_seconds(service: Service, consumer: _Consumer) -> _Tuning:
    tuning = _Tuning(service, consumer)
    tuning.start()
    return tuning


def _split_cpus() -> tuple[set[int], set[int]]:
    """CPUs for the detector and for the ingest: apart where there are two or more, as at a
    beamline, where the detector is another machine; else shared."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return {cpus[0]}, set(cpus[1:])


@contextmanager
def _affinity(cpus: set[int]):
    """Run the calling thread (and the threads it starts meanwhile) on ``cpus``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _ingest_pass(frames, shape, format, compression, context: zmq.Context) -> dict:
    accounting = Accounting()
    # bounded as in the service, where the workers drain it; nothing here drains it, so the
    # oldest crops make way (a queue of every frame would time the garbage collector)
    queue = FrameQueue(256, lambda item: None)
    detector_cpus, ingest_cpus = _split_cpus()
    detector = _detector(frames, None, "push", shape, format, compression, cpus=detector_cpus)
    with detector as (address, _):
        with _affinity(ingest_cpus):  # the receiver thread
            receiver = Receiver(
                address, "pull", make_decoder(format), RoiConfig(), queue, accounting, context
            )
            started = time.perf_counter()
            receiver.start()
        try:
            # measured from the receiver's first reading after the first frames (no start-up
            # cost), or from its start when every frame came in its first burst
            first, deadline = None, time.monotonic() + 600
            while accounting.total.received < frames:
                if first is None and receiver.cpu[1]:
                    first = (time.perf_counter(), accounting.total.received, receiver.cpu)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ingest stalled: {accounting.snapshot()}")
                time.sleep(0.01)
            first = first or (started, 0, (0.0, 0))
            elapsed = time.perf_counter() - first[0]
            got = accounting.total.received - first[1]
            deadline = time.monotonic() + 10
            while receiver.cpu[1] < frames and time.monotonic() < deadline:
                time.sleep(0.01)  # the receiver's reading after its last frame
            (cpu0, counted0), (cpu1, counted1) = first[2], receiver.cpu
        finally:
            receiver.stop()
    return {
        "frames_per_s": got / elapsed,  # wall: bounded by the sender and loopback copies too
        "frames_per_cpu_s": (counted1 - counted0) / (cpu1 - cpu0) if cpu1 > cpu0 else 0.0,
        "rejected": dict(accounting.total.rejected),
    }


def _summary(one_pass, frames, shape, format, compression, passes) -> dict:
    """``passes`` runs of ``one_pass`` over one ZeroMQ context (the service has one for its
    lifetime), their medians and each pass (shared machines are noisy)."""
    with _affinity(_split_cpus()[1]):  # ZeroMQ's I/O thread starts with the first socket
        context = zmq.Context()
        context.socket(zmq.PULL).close()
    try:
        runs = [one_pass(frames, shape, format, compression, context) for _ in range(passes)]
    finally:
        context.term()
    per_cpu = float(np.median([r["frames_per_cpu_s"] for r in runs]))
    return {
        "format": format,
        "compression": compression,
        "frames": frames,
        "frames_per_s": float(np.median([r["frames_per_s"] for r in runs])),
        "frames_per_cpu_s": per_cpu,  # one core of ingest: frames per CPU-second of its thread
        "receiver_us_per_frame": 1e6 / per_cpu if per_cpu else float("nan"),
        "passes": [{k: round(r[k]) for k in ("frames_per_s", "frames_per_cpu_s")} for r in runs],
        "rejected": {k: v for r in runs for k, v in r["rejected"].items()},
    }


def ingest_rate(
    frames: int,
    shape: tuple[int, int] = (512, 512),
    format: str = "native",
    compression: str = "none",
    passes: int = 1,
) -> dict:
    """Frames/s of receive + decode + ROI alone (the service's receiver thread, one core),
    fed by a detector process pushing pre-rendered (and pre-compressed) frames from a CPU of
    its own: wall, and per CPU-second of the receiver thread; medians of ``passes``."""
    return _summary(_ingest_pass, frames, shape, format, compression, passes)


def ingest_capacity(
    frames: int,
    shape: tuple[int, int] = (512, 512),
    format: str = "native",
    compression: str = "none",
    passes: int = 1,
) -> dict:
    """Frames/s one core of ingest sustains when it is the bottleneck: the detector process
    sends ``frames`` frames into the receiver's socket first (ZeroMQ's I/O thread takes them
    off the wire), then the receiver thread alone takes them from ZeroMQ, decodes and crops
    them, with no input to wait for; wall and CPU time of that thread, medians of ``passes``."""
    return _summary(_capacity_pass, frames, shape, format, compression, passes)


def _capacity_pass(frames, shape, format, compression, context: zmq.Context) -> dict:
    accounting = Accounting()
    queue = FrameQueue(256, lambda item: None)
    frame_bytes = shape[0] * shape[1] * 2
    detector_cpus, ingest_cpus = _split_cpus()
    warm("uint16")  # compiled at the series' start in the service; not what is measured here
    with _detector(
        frames, None, "push", shape, format, compression, cpus=detector_cpus
    ) as (address, detector):
        with _affinity(ingest_cpus):  # the socket connects, ZeroMQ's I/O thread fills it
            receiver = Receiver(
                address, "pull", make_decoder(format), RoiConfig(), queue, accounting, context,
                buffer_bytes=(frames + 16) * frame_bytes, max_frame_bytes=frame_bytes,
            )
        try:
            detector.wait(timeout=600)  # it exits once every frame is in our socket's buffers
            time.sleep(0.5)  # the I/O thread's last reads from the kernel
            with _affinity(ingest_cpus):
                start = time.perf_counter()
                receiver.start()
            deadline = time.monotonic() + 600
            while accounting.total.received < frames and time.monotonic() < deadline:
                time.sleep(0.001)
            elapsed = time.perf_counter() - start
            while receiver.cpu[1] < frames and time.monotonic() < deadline:
                time.sleep(0.001)  # the receiver's reading after its last frame
            cpu, counted = receiver.cpu
        finally:
            receiver.stop()
    return {
        "frames_per_s": counted / elapsed,
        "frames_per_cpu_s": counted / cpu if cpu > 0 else 0.0,
        "rejected": dict(accounting.total.rejected),
    }
