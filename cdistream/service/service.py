"""The service: receiver -> bounded queue -> micro-batches through the networks -> Bluesky
documents on the feedback channel (and an optional HDF5 archive). A thin composition of the
stages, with a clean drain on shutdown."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zmq

from cdistream._version import __version__
from cdistream.inference import Reconstructor
from cdistream.inference.result import finish
from cdistream.roi import RoiConfig
from cdistream.wire import SeriesEnd, SeriesStart
from cdistream.wire.formats import DEFAULT_SOCKET, make_decoder

from .accounting import Accounting, CountsDict
from .archive import SeriesArchive
from .documents import RunComposer
from .feedback import FeedbackPublisher
from .queue import FrameItem, FrameQueue, Rejection
from .receiver import Receiver

__all__ = ["Service", "ServiceConfig"]

log = logging.getLogger(__name__)


@dataclass
class ServiceConfig:
    """Everything ``cdistream serve`` takes on its command line."""

    input: str = "tcp://127.0.0.1:9999"
    format: str = "native"  # or eiger-v1, eiger-v2, adzmq, auto (see cdistream.wire.formats)
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


class Service:
    """Start with :meth:`start`, stop with :meth:`stop` (drains, closes the open run)."""

    def __init__(
        self,
        config: ServiceConfig,
        reconstructor: Reconstructor | None = None,
        context: zmq.Context | None = None,
    ):
        self.config = config
        self.reconstructor = reconstructor or Reconstructor.load(config.models)
        self.accounting = Accounting()
        self._ctx = context or zmq.Context.instance()
        self._queue = FrameQueue(config.queue_size, self._dropped)
        self._dropped_notices: list[Rejection] = []
        self._notice_lock = threading.Lock()
        self.feedback = FeedbackPublisher(config.feedback, context=self._ctx)
        self._receiver: Receiver | None = None
        self._run: RunComposer | None = None
        self._series: SeriesStart | None = None
        self._archive: SeriesArchive | None = None
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="cdistream-worker", daemon=True)
        self.stopped = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Service:
        """Warm the networks up, then connect to the detector and start working."""
        self.reconstructor.warm_up()
        self.decoder = make_decoder(self.config.format, self.config.channel)
        socket = self.config.socket or DEFAULT_SOCKET[self.config.format]
        self._receiver = Receiver(
            self.config.input,
            socket,
            self.decoder,
            self.config.roi,
            self._queue,
            self.accounting,
            self._ctx,
        )
        self._receiver.start()
        self._worker.start()
        log.info(
            "serving %s (%s, %s) -> %s on %s",
            self.config.input,
            self.config.format,
            socket,
            self.feedback.address,
            self.reconstructor.device,
        )
        return self

    def stop(self) -> CountsDict:
        """Stop receiving, reconstruct what is queued, close the open run, close sockets."""
        if self._receiver is not None:
            self._receiver.stop()
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join()
        if self._run is not None:
            self._close_run("abort", "service stopped before the detector series ended")
        self.feedback.close()
        self.stopped.set()
        counts = self.accounting.snapshot()
        log.info("stopped: %s", counts)
        return counts

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        if not self.stopped.is_set():
            self.stop()

    # -- worker ------------------------------------------------------------------------------
    def _dropped(self, item: FrameItem) -> None:
        self.accounting.dropped(item.series)
        with self._notice_lock:
            self._dropped_notices.append(Rejection(item.series, item.frame, "dropped_overload"))

    def _work(self) -> None:
        wait = self.config.max_wait_ms / 1000
        next_status = time.monotonic() + self.config.status_interval
        while True:
            work = self._queue.get_batch(self.config.max_batch, wait, idle=0.05)
            self._publish_dropped()
            if work is None:
                if self._stop.is_set() and len(self._queue) == 0:
                    return
            elif isinstance(work, list):
                try:
                    self._reconstruct(work)
                except Exception:  # one bad batch must not stop the service: count, go on
                    log.exception("inference failed on %d frames", len(work))
                    for item in work:
                        self.accounting.rejected(item.series, "inference_error")
                        self._reject(Rejection(item.series, item.frame, "inference_error"))
            elif isinstance(work, SeriesStart):
                self._open_run(work)
            elif isinstance(work, SeriesEnd):
                self._publish_dropped()
                self._close_run("success", "")
            else:
                self._reject(work)
            if time.monotonic() >= next_status:
                log.info("status: %s queued=%d", self.accounting.snapshot(), len(self._queue))
                next_status = time.monotonic() + self.config.status_interval

    def _publish_dropped(self) -> None:
        with self._notice_lock:
            notices, self._dropped_notices = self._dropped_notices, []
        for notice in notices:
            if self._run is not None and self._series and notice.series == self._series.series:
                self._run.rejection(notice.frame, notice.reason)

    def _reject(self, rejection: Rejection) -> None:
        if self._run is not None and self._series and rejection.series == self._series.series:
            self._run.rejection(rejection.frame, rejection.reason)

    def _reconstruct(self, batch: list[FrameItem]) -> None:
        magnitudes = FrameQueue.stack(batch)
        amplitude, phase = self.reconstructor.predict(magnitudes)
        result = finish(magnitudes, amplitude, phase)
        series = batch[0].series
        if self._run is not None:
            self._run.reconstructions([(i.frame, i.timestamp, i.crop) for i in batch], result)
        if self._archive is not None:
            peaks = np.array([[i.crop.peak_row, i.crop.peak_col] for i in batch])
            rois = np.stack([i.crop.counts for i in batch])
            self._archive.append([i.frame for i in batch], rois, peaks, result)
        self.accounting.reconstructed(series, len(batch))

    def _open_run(self, start: SeriesStart) -> None:
        if self._run is not None:
            self._close_run("abort", "a new detector series started")
        self._series = start
        n = self.reconstructor.n
        metadata = {
            "plan_name": "cdistream_serve",
            "plan_type": "cdistream",  # with scan_id, what LiveTable & co. print at the end
            "scan_id": start.series,
            "detector_series": start.series,
            "detector_format": self.decoder.name,
            "detector_shape": list(start.shape) if start.shape else None,
            "detector_dtype": start.dtype,
            "detector": start.meta,
            "model": self.reconstructor.source,
            "device": self.reconstructor.device,
            "roi": asdict(self.config.roi),
            "max_batch": self.config.max_batch,
            "max_wait_ms": self.config.max_wait_ms,
            "cdistream_version": __version__,
        }
        self._run = RunComposer(self.feedback, n, metadata)
        if self.config.archive is not None:
            self._archive = SeriesArchive(
                self.config.archive,
                start.series,
                n,
                {"run_uid": self._run.start["uid"], "model": self.reconstructor.source},
            )

    def _close_run(self, exit_status: str, reason: str) -> None:
        series = self._series.series if self._series else None
        self._run.stop(self.accounting.snapshot(series), exit_status, reason)
        if self._archive is not None:
            self._archive.close()
            self._archive = None
        self._run, self._series = None, None
