"""The service: receiver -> bounded queue -> micro-batches through the networks -> Bluesky
documents on the feedback channel (and an optional NeXus archive). A thin composition of the
stages, supervised: an error outside a batch ends the affected run with ``exit_status: "fail"``
and the service goes on with the next series; an error the worker cannot survive sets
:attr:`Service.failed`, which ``cdistream serve`` turns into a non-zero exit."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zmq

from cdistream._version import __version__
from cdistream.errors import ConfigError
from cdistream.inference import Reconstructor
from cdistream.inference.gate import REFINE_ABOVE, REFINE_ITERATIONS, TrustGate
from cdistream.inference.registration import SeriesRegistration
from cdistream.inference.result import SUPPORT_THRESHOLD, Reconstruction, finish
from cdistream.roi import RoiConfig, warm
from cdistream.wire.documents_safe import document_safe
from cdistream.wire.formats import DEFAULT_SOCKET, make_decoder
from cdistream.wire.ntndarray import NAME as PVA_FORMAT

from .accounting import Accounting, CountsDict
from .feedback import FeedbackPublisher
from .metrics import ServiceMetrics
from .options import checked, roi_for_model
from .pva.output import PvaOutput
from .pva.receiver import PvaReceiver
from .pva.sequencer import Lost, Sequencer
from .queue import FrameItem, FrameQueue, Rejection, RunEnd, RunStart
from .receiver import DEFAULT_MAX_FRAME_BYTES, Receiver
from .runs import RunWriter
from .security import Curve, is_loopback
from .volumes import VolumeWorker

if TYPE_CHECKING:
    from .adaptation import Adapter

__all__ = ["Service", "ServiceConfig", "returned_results"]

WORKERS_READY_S = 180.0  # each worker loads TensorFlow and the model, then traces it
VOLUME_DRAIN_S = 60.0  # stopping, a 3D reconstruction under way gets this long to finish

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 2 * 2**30
# how the memory budget is shared: the detector socket's buffer (whole frames), the queue of
# crops, the feedback channel's buffer per subscriber
_SHARES = {"receive": 0.7, "queue": 0.1, "feedback": 0.2}


@dataclass
class ServiceConfig:
    """Everything ``cdistream serve`` takes on its command line."""

    input: str = "tcp://127.0.0.1:9999"
    format: str = "native"  # or eiger-v1, eiger-v2, adzmq, auto, pva (cdistream.wire.formats)
    socket: str | None = None  # sub or pull; None: what the format's senders use
    channel: str | None = None  # stream V2 channel; None: the first the detector lists
    feedback: str = "tcp://127.0.0.1:5577"
    models: Path | None = None  # None: the shipped models
    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 1024  # frames waiting for the networks before the oldest is dropped
    archive: Path | None = None
    roi: RoiConfig = field(default_factory=RoiConfig)
    status_interval: float = 10.0  # seconds between status log lines
    refine_above: float | None = None  # chi2 above which frames are refined; None: never
    refine_iterations: int = REFINE_ITERATIONS
    memory_budget: int = DEFAULT_MEMORY_BUDGET  # bytes the service may buffer in all
    metrics: str | None = None  # host:port for Prometheus; None: no endpoint
    curve_keys: Path | None = None  # CURVE key directory (docs/security.md)
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES  # sizes the detector socket's buffer
    pva_output: str | None = None  # PVA channel prefix for live images and status; None: off
    series_timeout: float = 5.0  # pva input: seconds without a frame that end a series
    workers: int = 0  # reconstruction workers over PVA (pvapy-hpc-consumer); 0: in this process
    spawn_workers: bool = True  # start the workers here; False: they run elsewhere
    worker_prefix: str | None = None  # PVA channel prefix of the workers; None: cdistream:PID
    worker_timeout: float = 10.0  # seconds before a frame out at a worker counts as lost
    adapt: bool = False  # the networks learn the sample in front of the beam (service.adaptation)


def returned_results(returned: list[dict]) -> tuple[Reconstruction, np.ndarray]:
    """What workers returned (:func:`~.pva.worker.result_fields`), as one Reconstruction and
    the per-frame refined flags."""
    amplitude = np.stack([r["amplitude"] for r in returned])
    result = Reconstruction(
        amplitude,
        np.stack([r["phase"] for r in returned]),
        amplitude > SUPPORT_THRESHOLD,
        np.array([r["chi2"] for r in returned], np.float32),
        np.stack([r["peak_offset"] for r in returned]),
    )
    return result, np.array([r["refined"] for r in returned], bool)


class Service:
    """Start with :meth:`start`, stop with :meth:`stop` (drains, closes the open run).
    Raises :class:`ConfigError` for options it cannot honour, before anything starts."""

    def __init__(
        self,
        config: ServiceConfig,
        reconstructor: Reconstructor | None = None,
        context: zmq.Context | None = None,
    ):
        config = checked(config)  # in a moment, not after the model loads
        self.reconstructor = reconstructor or Reconstructor.load(config.models)
        self.config = replace(config, roi=roi_for_model(config.roi, self.reconstructor.n))
        self.accounting = Accounting()
        self._ctx = context or zmq.Context.instance()
        budget = self.config.memory_budget
        item = 9 * self.reconstructor.n**2 * 4  # a crop's arrays, generously
        capacity = min(self.config.queue_size, int(_SHARES["queue"] * budget) // item)
        self._queue = FrameQueue(capacity, self._dropped)
        self._dropped_notices: list[Rejection] = []
        self._notice_lock = threading.Lock()
        self.pva_output = PvaOutput(config.pva_output) if config.pva_output else None
        self.curve = Curve(self.config.curve_keys, self._ctx) if self.config.curve_keys else None
        try:
            self.feedback = FeedbackPublisher(
                self.config.feedback,
                context=self._ctx,
                buffer_bytes=int(_SHARES["feedback"] * budget),
                secure=self.curve.server if self.curve else None,
            )
        except zmq.ZMQError as exc:
            self._close_curve()
            raise ConfigError(f"--feedback {self.config.feedback}: cannot bind ({exc})") from None
        if not is_loopback(self.feedback.address) and self.curve is None:
            log.warning(
                "the feedback channel %s is reachable beyond this host without encryption or"
                " authentication: add --curve-keys (docs/security.md)", self.feedback.address
            )
        threshold = REFINE_ABOVE if config.refine_above is None else config.refine_above
        self.gate = TrustGate(threshold, config.refine_iterations)
        self._full_batch_s = 0.0  # measured at start when the gate refines here
        self.registration = SeriesRegistration()
        self.pool = None  # a pva.pool.WorkerPool with --workers, made at start
        self.sequencer = Sequencer(self.config.worker_timeout)
        self._next_uid = 0
        self.metrics = ServiceMetrics(self.accounting, self._gauges)
        self._receiver: Receiver | None = None
        self.runs = RunWriter(
            self.feedback,
            self.accounting,
            self.config.archive,
            self.reconstructor.n,
            self.config.roi.binning,
            VolumeWorker() if self.config.archive is not None else None,
        )
        self.adapter: Adapter | None = None
        if self.config.adapt:
            from .adaptation import Adapter

            self.adapter = Adapter(self.reconstructor, self._models_dir())
        self._stop = threading.Event()
        self.failed = threading.Event()  # the worker could not go on: exit non-zero
        self._worker = threading.Thread(target=self._work, name="cdistream-worker", daemon=True)
        self.stopped = threading.Event()

    def _models_dir(self) -> Path:
        """Where adapted models are written: beside the archive, else in the temp folder."""
        if self.config.archive is not None:
            return Path(self.config.archive) / "models"
        import tempfile

        return Path(tempfile.gettempdir()) / f"cdistream-models-{os.getpid()}"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Service:
        """Warm the networks up, then connect to the detector and start working."""
        self.reconstructor.warm_up()
        if self.adapter is not None:
            self.adapter.shipped_networks.warm_up()
        for dtype in ("uint16", "uint32"):  # what detectors send: compiled before the first
            warm(dtype)  # series, whose first frames would otherwise wait for it
        if self.config.refine_above is not None and not self.config.workers:
            self._full_batch_s = self._time_full_batch()  # the gate's budget under load
        if self.config.workers:
            self.pool = self._workers()
        self._receiver = self._input()
        self._receiver.start()
        self._worker.start()
        metrics = self.metrics.serve(self.config.metrics) if self.config.metrics else "off"
        log.info(
            "serving %s (%s) -> %s on %s with %s; metrics %s",
            self.config.input,
            self.config.format,
            self.feedback.address,
            self.reconstructor.device,
            self.reconstructor.source,
            metrics,
        )
        return self

    def _workers(self):
        """Start (or await) the workers and wait until each has its model loaded."""
        from .pva.pool import WorkerPool, consumer_command  # pvapy: only with --workers

        prefix = self.config.worker_prefix or f"cdistream:{os.getpid()}"
        args = {
            "models": str(self.reconstructor.source),
            "max_batch": self.config.max_batch,
            "max_wait_ms": self.config.max_wait_ms,
            "refine_above": self.config.refine_above,
            "refine_iterations": self.config.refine_iterations,
        }
        pool = WorkerPool(prefix, self.config.workers, args, self.config.spawn_workers)
        if not self.config.spawn_workers:
            log.info("waiting for %d workers: %s", self.config.workers,
                     " ".join(consumer_command(prefix, 1, args)) + " (1 .. N)")
        try:
            pool.wait_ready(WORKERS_READY_S if self.config.spawn_workers else 3600)
        except ConfigError:
            pool.close()
            raise
        return pool

    def _input(self) -> Receiver | PvaReceiver:
        """The detector input: a PVA channel monitor, or a ZeroMQ socket with its decoder."""
        buffer_bytes = int(_SHARES["receive"] * self.config.memory_budget)
        if self.config.format == PVA_FORMAT:
            pva = PvaReceiver(
                self.config.input,
                self.config.roi,
                self._queue,
                self.accounting,
                buffer_bytes=buffer_bytes,
                max_frame_bytes=self.config.max_frame_bytes,
                idle_s=self.config.series_timeout,
            )
            self.decoder = pva.decoder
            return pva
        self.decoder = make_decoder(self.config.format, self.config.channel)
        return Receiver(
            self.config.input,
            self.config.socket or DEFAULT_SOCKET[self.config.format],
            self.decoder,
            self.config.roi,
            self._queue,
            self.accounting,
            self._ctx,
            buffer_bytes=buffer_bytes,
            secure=self.curve.client if self.curve else None,
            max_frame_bytes=self.config.max_frame_bytes,
        )

    def stop(self) -> CountsDict:
        """Stop receiving, close the open series, reconstruct what is queued, close sockets."""
        if self._receiver is not None:
            self._receiver.stop()
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join()
        if self.runs.current is not None:  # the worker died: close what it left open
            self.runs.close("abort", ["the service stopped"])
        self.runs.drain_volumes(VOLUME_DRAIN_S)
        if self.adapter is not None:  # the reconstructor is left with the weights it came with
            self.adapter.close()
            shipped = self.adapter.shipped
            self.reconstructor.use_weights(shipped.weights, shipped.version)
        if self.pool is not None:
            self.pool.close()
        self.metrics.close()
        if self.pva_output is not None:
            self.pva_output.close()
        self.feedback.close()
        self._close_curve()
        self.stopped.set()
        counts = self.accounting.snapshot()
        log.info("stopped: %s", counts)
        return counts

    def _close_curve(self) -> None:
        if self.curve is not None:
            self.curve.close()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        if not self.stopped.is_set():
            self.stop()

    @property
    def alive(self) -> dict[str, bool]:
        """Which of the service's threads are running."""
        receiver = self._receiver is not None and self._receiver.alive
        return {"receiver": receiver, "worker": self._worker.is_alive()}

    def _gauges(self) -> dict[str, float]:
        alive = self.alive
        return {
            "queue_depth": len(self._queue),
            "queue_bytes": self._queue.nbytes,
            "receiver_alive": float(alive["receiver"]),
            "worker_alive": float(alive["worker"]),
        }

    # -- worker ------------------------------------------------------------------------------
    def _dropped(self, item: FrameItem) -> None:
        self.accounting.dropped(item.run)
        with self._notice_lock:
            self._dropped_notices.append(Rejection(item.run, item.frame, "dropped_overload"))

    def _work(self) -> None:
        try:
            self._loop()
        except BaseException:  # noqa: BLE001  (anything here leaves no worker: say so, exit)
            log.critical("cdistream's worker cannot go on; exiting", exc_info=True)
            self.failed.set()

    def _loop(self) -> None:
        wait = self.config.max_wait_ms / 1000
        next_status = time.monotonic() + self.config.status_interval
        while True:
            room = self.config.max_batch
            if self.pool is not None:  # at most a window of frames out at the workers: past it
                # the queue fills and drops its oldest, as it does in-process
                room = min(room, self.pool.window - self.sequencer.in_flight)
                if room <= 0:
                    self._collect()
                    time.sleep(0.001)
                    continue
            work = self._queue.get_batch(room, wait, idle=0.05)
            self._guarded("publish_notices", self._publish_dropped)
            if work is None:
                if self._stop.is_set() and len(self._queue) == 0 and not self.sequencer:
                    return
            elif isinstance(work, list):
                if self.pool is not None:
                    self._dispatch(work)
                else:
                    self._batch(work)
            elif self.pool is not None:  # after the frames already out at the workers
                self.sequencer.control(work)
            else:
                self._control(work)
            if self.pool is not None:
                self._collect()
                self._guarded("restart_workers", self._revive_workers)
            self._guarded("volumes", self.runs.poll_volumes)
            if self.adapter is not None:
                self._adapt()
            if time.monotonic() >= next_status:
                log.info("status: %s queued=%d", self.accounting.snapshot(), len(self._queue))
                next_status = time.monotonic() + self.config.status_interval

    def _adapt(self) -> None:
        """The adaptation's next step. Its failure never costs a run: the frames are served
        by the model in service, the failure is logged and counted (``adapt_failed``)."""
        try:
            self._use(self.adapter.poll())
        except Exception:
            log.exception("adaptation failed; serving on with %s", self.reconstructor.version)
            self.accounting.notice(self.runs.run, "adapt_failed")

    def _use(self, change) -> None:
        """Serve with the networks of ``change`` (a :class:`.adaptation.ModelChange`) from the
        next micro-batch on, and say so in the open run."""
        if change is None:
            return
        self.reconstructor.use_weights(change.weights, change.version)
        self.accounting.notice(self.runs.run, "model_updated")
        self.runs.model_changed(change.document())
        log.info("now serving %s (was %s): %s, median chi2 %.4f -> %.4f", change.version,
                 change.previous, change.reason, change.figures.get("chi2_serving", np.nan),
                 change.figures.get("chi2_candidate", np.nan))

    def _control(self, work: RunStart | RunEnd | Rejection) -> None:
        if isinstance(work, RunStart):
            self._guarded("open_run", self._open_run, work)
        elif isinstance(work, RunEnd):
            self._guarded("close_run", self._end_run, work)
        else:
            self._guarded("publish_rejection", self._reject, work)

    # -- workers over PVA ---------------------------------------------------------------------
    def _dispatch(self, batch: list[FrameItem]) -> None:
        """Send each frame's pattern to the workers; the sequencer remembers the order."""
        for item in batch:
            self._next_uid = self._next_uid % (2**31 - 1) + 1
            self.pool.submit(self._next_uid, item.crop.magnitudes, item.crop.valid)
            self.sequencer.sent(item, self._next_uid)

    def _collect(self) -> None:
        """Publish, in the detector's order, what the workers returned or lost."""
        for out in self.sequencer.ready(self.pool.take):
            if isinstance(out, list):
                self._batch([item for item, _ in out], [result for _, result in out])
            elif isinstance(out, Lost):
                self.pool.forget(out.unique_id)
                self.accounting.rejected(out.item.run, "lost_in_worker")
                self._guarded("publish_rejection", self._reject,
                              Rejection(out.item.run, out.item.frame, "lost_in_worker"))
            else:
                self._control(out)

    def _revive_workers(self) -> None:
        """Workers this service started that died are started again (their outstanding frames
        are already counted as lost by the sequencer)."""
        for worker in self.pool.revive():
            self.accounting.notice(self.runs.run, "worker_restarted")
            log.info("worker %d started again", worker)

    def _guarded(self, stage: str, fn: Callable, *args) -> None:
        """Run a step outside a batch; an error is logged, counted by name, and ends the run
        it happened in with ``fail`` (the service goes on with the next series)."""
        try:
            fn(*args)
        except Exception as exc:
            log.exception("%s failed", stage)
            self.accounting.notice(self.runs.run, f"{stage}_failed")
            self.runs.fail(f"{stage} failed: {exc}")

    def _publish_dropped(self) -> None:
        with self._notice_lock:
            notices, self._dropped_notices = self._dropped_notices, []
        for notice in notices:
            self._reject(notice)

    def _reject(self, rejection: Rejection) -> None:
        self.runs.reject(rejection)

    def _time_full_batch(self) -> float:
        """Seconds the networks and the finish take for one full batch (the best of two), the
        unit of the gate's time budget under load."""
        n = self.reconstructor.n
        ones = np.ones((self.config.max_batch, n, n), np.float32)
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            finish(ones, *self.reconstructor.predict(ones))
            best = min(best, time.perf_counter() - t0)
        return best

    def _batch(self, batch: list[FrameItem], returned: list[dict] | None = None) -> None:
        """Reconstruct ``batch`` here, or take what the workers ``returned`` for it, then
        publish; a failure costs the batch, counted by the stage it happened in."""
        reason = "inference_error"
        try:
            started = time.perf_counter()
            versions = [self.reconstructor.version] * len(batch)
            if returned is None:
                result, refined, versions = self._reconstruct(batch, started)
            else:
                result, refined = returned_results(returned)
            reason = "publish_error"
            self._publish(batch, result, refined, started, versions)
        except Exception:  # one bad batch must not stop the service: count, go on
            log.exception("%s on %d frames", reason, len(batch))
            for item in batch:
                self.accounting.rejected(item.run, reason)
                self._guarded("publish_rejection", self._reject,
                              Rejection(item.run, item.frame, reason))

    def _reconstruct(self, batch: list[FrameItem], started: float):
        """The batch through the networks here, refined where the gate says so; and which
        networks made each frame."""
        magnitudes, valid = FrameQueue.stack(batch)
        refine = self.config.refine_above is not None
        networks = self.reconstructor
        versions = [networks.version] * len(batch)
        weak = self.adapter.weak(batch) if self.adapter is not None else None
        if weak is not None:  # a learnt model serves: the frames with signal
            from .adaptation import RoutedNetworks

            networks = RoutedNetworks(self.reconstructor, self.adapter.shipped_networks, weak)
        outcome = self.gate.reconstruct(
            networks, magnitudes, valid, refine, lambda: self._refine_budget(started)
        )
        if weak is not None:
            versions = networks.versions()
        if outcome.skipped:
            self.accounting.notice(batch[0].run, "refine_skipped", outcome.skipped)
        return outcome.result, outcome.refined, versions

    def _refine_budget(self, started: float) -> float:
        """Seconds the gate may refine for. Nothing waiting: every flagged frame (latency is
        this batch's alone); frames waiting: the worst first, for at most max wait + one full
        batch's compute, so a waiting frame's latency stays within 2 x (max wait + one batch's
        compute)."""
        if len(self._queue) == 0:
            return float("inf")
        return self.config.max_wait_ms / 1e3 + max(
            self._full_batch_s, time.perf_counter() - started
        )

    def _publish(self, batch: list[FrameItem], result, refined, started: float,
                 versions: list[str]) -> None:
        """Register on the run's previous frame, compose the events, archive, show."""
        run = batch[0].run
        trusted = result.chi2 <= self.gate.threshold
        result = self.registration.register(result)
        self.runs.reconstructions(batch, result, refined, trusted, versions)
        if self.adapter is not None:
            self.adapter.observe(batch)
        self.accounting.reconstructed(run, len(batch))  # published: counted once, here
        now = time.time()
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        for item in batch:
            self.metrics.latency.observe(now - item.timestamp)
        self.metrics.last_frame.set(max(i.timestamp for i in batch))
        self.runs.archive(batch, result, refined, trusted)
        if self.pva_output is not None:
            self._show(batch, result, refined, trusted, now)

    def _show(self, batch: list[FrameItem], result, refined, trusted, now: float) -> None:
        """The batch's last reconstruction and the counts on the PVA channels; a failure here
        costs the display, never the run (logged, counted as ``pva_output_failed``)."""
        last = batch[-1]
        try:
            self.pva_output.publish(
                last.frame, last.series, result.amplitude[-1], result.phase[-1],
                float(result.chi2[-1]), bool(trusted[-1]), bool(refined[-1]), last.timestamp,
            )
            self.pva_output.status(self.accounting.snapshot(), now - last.timestamp, last.frame)
        except Exception:
            log.exception("the PVA output failed")
            self.accounting.notice(last.run, "pva_output_failed")

    def _open_run(self, opened: RunStart) -> None:
        start, sampling = opened.start, opened.sampling
        self.registration.reset()
        change = self.adapter.series_started() if self.adapter is not None else None
        if change is not None:
            self.reconstructor.use_weights(change.weights, change.version)
        detector, notices = document_safe(start.meta or {})
        for notice in notices:
            log.warning("series %d metadata: %s", start.series, notice)
        if notices:
            self.accounting.notice(opened.run, "metadata_converted", len(notices))
        metadata = {
            "plan_name": "cdistream_serve",
            "plan_type": "cdistream",  # with scan_id, what LiveTable & co. print at the end
            "scan_id": start.series,
            "detector_series": start.series,
            "detector_format": self.decoder.name,
            "detector_shape": list(start.shape) if start.shape else None,
            "detector_dtype": start.dtype,
            "detector": detector,
            "model": self.reconstructor.source,
            "model_version": self.reconstructor.version,
            "adapt": self.adapter is not None,
            "device": self.reconstructor.device,
            "roi": asdict(replace(self.config.roi, binning=sampling.binning) if sampling
                          else self.config.roi),
            "sampling": sampling.document() if sampling else {"estimated": False},
            "max_batch": self.config.max_batch,
            "max_wait_ms": self.config.max_wait_ms,
            "refine_above": self.config.refine_above,
            "refine_iterations": self.config.refine_iterations,
            "trust_threshold": self.gate.threshold,
            "cdistream_version": __version__,
        }
        self.runs.open(opened, metadata, detector, str(uuid.uuid4()))
        if change is not None:  # back to the shipped model: said in the new run
            self.accounting.notice(opened.run, "model_updated")
            self.runs.model_changed(change.document())

    def _end_run(self, ended: RunEnd) -> None:
        self._publish_dropped()
        if self.adapter is not None:
            self.adapter.series_ended()
        self.runs.end(ended)

