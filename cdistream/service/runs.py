"""The run being written: one Bluesky run per detector series, its documents on the feedback
channel and, optionally, its NeXus archive. At most one is open; it closes with the status
what happened in it gives it (``success``, ``abort`` when frames are missing or the series did
not end, ``fail`` when a step failed), and its archive is never left open. A rocking scan
archived is also reconstructed in 3D when it ends (:mod:`.volumes`, another process): its run
waits for that, its volume announced in a ``volume`` stream before its stop document, while the
next series' run opens and runs as usual."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cdistream.inference.result import Reconstruction
from cdistream.volume import CubeCollector
from cdistream.volume_file import STREAM_DATASETS, volume_path
from cdistream.wire import SeriesEnd

from .accounting import Accounting
from .archive import ArchiveError, RunArchive
from .documents import RunComposer
from .feedback import FeedbackPublisher
from .queue import FrameItem, Rejection, RunEnd, RunStart
from .volumes import VolumeWorker

__all__ = ["RunWriter"]

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """The run being written: its documents, archive and what went wrong in it."""

    run: int
    series: int
    composer: RunComposer
    archive: RunArchive | None
    failures: list[str] = field(default_factory=list)
    archive_failed: int = 0
    collector: CubeCollector | None = None  # the frames a 3D reconstruction would need
    closing: tuple[str, str] | None = None  # (status, reason) once ended, its volume awaited


class RunWriter:
    """Opens, feeds and closes the runs, one at a time, for the service's worker thread."""

    def __init__(
        self,
        feedback: FeedbackPublisher,
        accounting: Accounting,
        archive_dir: Path | None,
        n: int,
        binning: int,
        volumes: VolumeWorker | None = None,
    ):
        self._feedback, self._acct = feedback, accounting
        self._archive_dir, self._n, self._binning = archive_dir, n, binning
        self._volumes = volumes  # None: no 3D reconstructions
        self.current: _Run | None = None
        self.waiting: dict[int, _Run] = {}  # ended runs whose volume is being reconstructed

    @property
    def run(self) -> int | None:
        """The open run's number, None when none is open."""
        return self.current.run if self.current is not None else None

    def open(self, opened: RunStart, metadata: dict, detector: dict, uid: str) -> None:
        """Start the run of ``opened`` with ``metadata`` (its start document's), archived
        when the service archives (an archive that cannot be made is a failure of the run,
        whose events still go out)."""
        if self.current is not None:  # cannot happen: the receiver ends every run it starts
            self.close("abort", ["a new series started"])
        start = opened.start
        archive, failure = None, None
        if self._archive_dir is not None:
            unique = detector.get("series_unique_id") if isinstance(detector, dict) else None
            try:
                archive = RunArchive(
                    self._archive_dir,
                    start.series,
                    str(unique or uid[:8]),
                    self._n,
                    {**metadata, "uid": uid, "time": time.time()},
                    detector,
                )
                metadata["archive"] = str(archive.path)
            except ArchiveError as exc:
                failure = exc
        binning = opened.sampling.binning if opened.sampling is not None else self._binning
        composer = RunComposer(self._emitter(opened.run), self._n, metadata, binning, uid,
                               opened.motors)
        self.current = _Run(opened.run, start.series, composer, archive)
        if archive is not None:
            composer.archive(str(archive.path), self._n)
            if self._volumes is not None:
                self.current.collector = CubeCollector()
        if failure is not None:
            self._archive_failed(self.current, 0, failure)

    def reject(self, rejection: Rejection) -> None:
        """A frame of the open run that will not be reconstructed, in its rejected stream."""
        if self.current is not None and rejection.run == self.current.run:
            self.current.composer.rejection(rejection.frame, rejection.reason)

    def reconstructions(
        self, batch: list[FrameItem], result: Reconstruction, refined, trusted,
        model_versions: list[str] | None = None,
    ) -> None:
        """The batch's events, when its run is the open one."""
        current = self._current(batch[0].run)
        if current is not None:
            frames = [(i.frame, i.timestamp, i.crop, i.positions) for i in batch]
            current.composer.reconstructions(frames, result, refined, trusted, model_versions)
            if current.collector is not None:
                for item in batch:
                    crop = item.crop
                    motor = next(iter(item.positions.values()), float("nan"))
                    current.collector.add(item.frame, crop.counts, crop.valid,
                                          (crop.peak_row, crop.peak_col), motor)

    def model_changed(self, data: dict) -> None:
        """The networks in service changed: said in the open run's ``model`` stream."""
        if self.current is not None:
            self.current.composer.model_changed(data)

    def archive(self, batch: list[FrameItem], result: Reconstruction, refined, trusted) -> None:
        """Archive a published batch; a failure is counted per frame as ``archive_failed``
        (the events are out already: nothing is counted twice)."""
        current = self._current(batch[0].run)
        if current is None or current.archive is None:
            return
        try:
            current.archive.append(
                [i.frame for i in batch],
                [i.timestamp for i in batch],
                np.stack([i.crop.counts for i in batch]),
                np.stack([i.crop.valid for i in batch]),
                np.array([[i.crop.peak_row, i.crop.peak_col] for i in batch]),
                result,
                refined,
                trusted,
            )
        except ArchiveError as exc:
            self._archive_failed(current, len(batch), exc)
        else:
            current.composer.archived(len(batch))

    def end(self, ended: RunEnd) -> None:
        """The detector's series ended (or the receiver closed it)."""
        if self.current is None or self.current.run != ended.run:
            return  # its start failed: nothing open to close
        problems = [] if ended.end.complete else [ended.end.reason or "the series did not end"]
        current = self.current
        if current.collector is not None and current.collector.rocking():
            self._volume(current)
        self.close("success", problems, ended.end)

    def fail(self, why: str) -> None:
        """A step of the open run failed: the run closes with ``fail`` and ``why``."""
        if self.current is None:
            return
        self.current.failures.append(why)
        try:
            self.close("fail", [])
        except Exception:
            log.exception("closing the failed run failed too")
            self.current = None

    def _volume(self, current: _Run) -> None:
        """Hand the run's cube to the 3D worker, or count it skipped when the worker is busy."""
        cube = current.collector.cube()
        current.collector = None  # its frames are in the cube now
        path = volume_path(current.archive.path)
        meta = {"run_uid": current.composer.start["uid"], "series": current.series}
        if self._volumes.submit(current.run, cube, path, meta):
            current.closing = ("", "")  # filled in by close(); the stop waits for the volume
            log.info("series %d: reconstructing it in 3D (%d frames)", current.series,
                     int((cube.frames >= 0).sum()))
        else:
            log.warning("series %d: the 3D worker is busy with an earlier series; skipped",
                        current.series)
            self._acct.notice(current.run, "volume_skipped")

    def poll_volumes(self) -> None:
        """Close the runs whose volume is done (or failed, or took too long)."""
        if self._volumes is None:
            return
        done = self._volumes.finished()
        if done is None:
            return
        run, outcome = done
        current = self.waiting.pop(run, None)
        if current is None:
            return
        if isinstance(outcome, BaseException):
            log.error("series %d: no 3D reconstruction: %s", current.series, outcome)
            self._acct.notice(run, "volume_failed")
        else:
            current.composer.volume(outcome["path"], outcome["shape"], STREAM_DATASETS)
            log.info("series %d: 3D reconstruction %s (chi2 %.4f, %.1f s)", current.series,
                     outcome["path"], outcome["chi2"], outcome["seconds"])
        self._stop(current, *current.closing)

    def drain_volumes(self, timeout_s: float) -> None:
        """The service stops: wait up to ``timeout_s`` for a volume, then close every run."""
        if self._volumes is None:
            return
        if self.waiting:
            self._volumes.wait(timeout_s)
            self.poll_volumes()
        for run, current in list(self.waiting.items()):
            del self.waiting[run]
            self._acct.notice(run, "volume_failed")
            self._stop(current, *current.closing)
        self._volumes.close()

    def close(self, status: str, problems: list[str], end: SeriesEnd | None = None) -> None:
        """Close the open run: ``fail`` if anything failed in it, ``abort`` if frames are
        missing or the series did not end, else ``status``. A run whose volume is being
        reconstructed keeps its stop document until the volume is done."""
        current, self.current = self.current, None
        counts = self._acct.snapshot(current.run)
        missing = counts["gaps"] + counts["missing_before_first"] + counts["missing_after_last"]
        problems = list(problems)
        if missing:
            of = f" of {counts['announced']} announced" if counts["announced"] is not None else ""
            problems.append(
                f"{missing}{of} frames never arrived ({counts['missing_before_first']} before the"
                f" first received, {counts['gaps']} in gaps, {counts['missing_after_last']} after"
                " the last)"
            )
        if current.archive_failed:
            problems.append(f"{current.archive_failed} frames were not archived")
        if current.failures:
            status = "fail"
        elif problems and status == "success":
            status = "abort"
        reason = "; ".join([*current.failures, *problems])
        if current.archive is not None:
            current.archive.close(status)
        if current.closing is not None:  # a volume to wait for: the stop document waits too
            current.closing = (status, reason)
            self.waiting[current.run] = current
            return
        self._stop(current, status, reason)

    def _stop(self, current: _Run, status: str, reason: str) -> None:
        current.composer.stop(self._acct.snapshot(current.run), status, reason)
        if status != "success":
            log.warning("run of series %d: %s (%s)", current.series, status, reason)

    def _current(self, run: int) -> _Run | None:
        return self.current if self.current is not None and self.current.run == run else None

    def _archive_failed(self, current: _Run, frames: int, exc: Exception) -> None:
        if current.archive_failed == 0:
            log.error("archive: %s", exc)
            current.failures.append(f"archive: {exc}")
        current.archive_failed += frames
        self._acct.notice(current.run, "archive_failed", frames)

    def _emitter(self, run: int) -> Callable[[str, dict], None]:
        def emit(name: str, doc: dict) -> None:
            if not self._feedback(name, doc):
                self._acct.not_delivered(run)
                count = self._feedback.not_delivered
                if count & (count - 1) == 0:
                    log.warning("a subscriber is not keeping up: %d documents not delivered",
                                count)

        return emit
