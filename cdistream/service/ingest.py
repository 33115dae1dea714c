"""What every detector input shares once a message is decoded: series and runs, frame
accounting (gaps, frames missing before the first and after the last), the ROI (its binning
chosen per series on the first frame, so that the crystal fits the window), and the hand-off
to the queue. Every series is closed: by the detector's end message, or here when a new series
starts first or the input stops (then counted as not ended, with the announced frames that
never came). The transports (:mod:`.receiver` for ZeroMQ, :mod:`.pva.receiver` for PVAccess) only
move messages."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from cdistream.roi import (
    BadPixels,
    PeakTracker,
    RoiConfig,
    RoiRejected,
    choose_binning,
    extract,
    warm,
)
from cdistream.wire import DecodeError, Frame, Message, SeriesEnd, SeriesStart

from .accounting import Accounting
from .queue import FrameItem, FrameQueue, Rejection, RunEnd, RunStart

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "Ingest"]

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 8 * 2**20  # a 4-Mpixel 16-bit frame (EIGER2 4M)


class Ingest:
    """Turns decoded messages into runs, crops and accounted rejections on ``queue``."""

    def __init__(
        self,
        roi: RoiConfig,
        queue: FrameQueue,
        accounting: Accounting,
        first_frame: int = 0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ):
        self._roi, self._queue, self._acct = roi, queue, accounting
        self._first_frame = first_frame
        self._max_frame_bytes = max_frame_bytes
        self._series: SeriesStart | None = None
        self._opened = True  # the current run's RunStart is queued (it waits for a frame)
        self._series_roi = roi  # the ROI of the current series: its binning may be less
        self._run = 0  # the current run's number; 0 before the first series
        self._bad: BadPixels | None = None  # the series' mask, ready for the ROI
        self._saturation: float | None = roi.saturation
        self._last_frame = -1
        self.tracker = PeakTracker()  # the peak moves little from frame to frame

    def close_series(self, reason: str) -> None:
        """End an open series that will never see its end message."""
        if self._series is not None:
            self._finish(SeriesEnd(self._series.series, None, complete=False, reason=reason))

    def internal_error(self) -> None:
        """A message whose processing failed on a bug: counted, never lost silently."""
        log.exception("could not process a message")
        self._acct.received(self._scope(None))
        self._acct.rejected(self._scope(None), "internal_error")

    def rejected(self, exc: DecodeError) -> None:
        """A message its decoder refused."""
        run = self._scope(exc.series)
        self._acct.received(run)
        self._reject(run, exc.reason, str(exc), exc.frame)
        if exc.frame is not None and run is not None:
            self._count_arrival(exc.frame)  # received, so no gap

    def messages(self, messages: list[Message]) -> None:
        """Decoded messages, in the order the detector sent them."""
        for message in messages:
            if isinstance(message, Frame):
                self._frame(message)
            elif isinstance(message, SeriesStart):
                self._begin(message)
            else:
                self._end(message)

    def _scope(self, series: int | None) -> int | None:
        """The run a message of ``series`` counts in: the open one if it is that series'."""
        if self._series is not None and series in (None, self._series.series):
            return self._run
        return None

    def _reject(
        self, run: int | None, reason: str, detail: str, frame: int | None = None
    ) -> None:
        self._acct.rejected(run, reason)
        count = self._acct.total.rejected[reason]
        if count & (count - 1) == 0:  # log the 1st, 2nd, 4th, 8th ... of each reason
            log.warning("rejected (%s, %d so far): %s", reason, count, detail)
        if frame is not None and run is not None:
            self._open(None)
            self._queue.put(Rejection(run, frame, reason))

    def _count_arrival(self, frame: int) -> None:
        if self._last_frame < 0 and frame > self._first_frame:
            self._acct.missing_before_first(self._run, frame - self._first_frame)
        elif self._last_frame >= 0 and frame > self._last_frame + 1:
            self._acct.gaps(self._run, frame - self._last_frame - 1)
        self._last_frame = max(self._last_frame, frame)

    def _frame(self, frame: Frame) -> None:
        if self._series is None or self._series.series != frame.series:
            # joined mid-series (or the start was lost): carry on without a mask, say so
            start = SeriesStart(
                frame.series,
                frame.image.shape,
                frame.image.dtype.name,
                None,
                {"series_start_missed": True},
            )
            log.warning("frames of series %d arrived without its start message", frame.series)
            self._begin(start)
            self._acct.notice(self._run, "series_start_missed")
        self._acct.received(self._run)
        self._count_arrival(frame.frame)
        expected = self._series.shape
        if expected is not None and frame.image.shape != expected:
            detail = f"frame {frame.frame} is {frame.image.shape}, the series {expected}"
            self._reject(self._run, "wrong_shape", detail, frame.frame)
            return
        positions = frame.positions or self._listed(frame.frame)
        if not self._opened:
            self._open(frame.image, tuple(positions))
        try:
            crop = extract(frame.image, self._series_roi, self._bad, self._saturation,
                           self.tracker)
        except RoiRejected as exc:
            self._reject(self._run, exc.reason, f"frame {frame.frame}: {exc}", frame.frame)
            return
        except Exception as exc:  # numpy on hostile data: reject the frame, keep serving
            self._reject(self._run, "roi_error", f"frame {frame.frame}: {exc!r}", frame.frame)
            return
        self._queue.put(
            FrameItem(self._run, frame.series, frame.frame, frame.timestamp, crop, positions)
        )

    def _listed(self, frame: int) -> dict[str, float]:
        """Positions the series' start listed for ``frame`` (``motor_positions``: name -> one
        number per frame, counted from the first frame; in the start's metadata, its V2
        ``user_data`` or its V1 header appendix)."""
        meta = (self._series.meta or {}) if self._series else {}
        listed = None
        for where in (meta, meta.get("user_data"), meta.get("appendix")):  # native, V2, V1
            if isinstance(where, dict) and isinstance(where.get("motor_positions"), dict):
                listed = where["motor_positions"]
                break
        if listed is None:
            return {}
        index = frame - self._first_frame
        out = {}
        for name, values in listed.items():
            if isinstance(name, str) and isinstance(values, list | tuple) and 0 <= index < len(
                values
            ):
                value = values[index]
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[name] = float(value)
        return out

    def _begin(self, start: SeriesStart) -> None:
        if self._series is not None:  # the previous series never ended: end it here
            why = f"series {start.series} started before series {self._series.series} ended"
            self._finish(SeriesEnd(self._series.series, None, complete=False, reason=why))
        self._run += 1
        self._series, self._last_frame = start, -1
        self.tracker.reset()
        if isinstance(start.dtype, str):
            warm(start.dtype)  # the ROI's compiled loops, before the first frame waits for them
        self._bad = None if start.mask is None else BadPixels.from_mask(start.mask)
        meta = start.meta or {}
        self._saturation = self._roi.saturation
        announced = meta.get("saturation_value")
        if self._saturation is None and isinstance(announced, int | float) and announced > 0:
            self._saturation = float(announced)
        images = meta.get("number_of_images")
        if isinstance(images, int) and not isinstance(images, bool) and images >= 0:
            self._acct.announced(self._run, images)
        if start.shape is not None and start.dtype is not None:
            try:
                frame_bytes = int(np.prod(start.shape)) * np.dtype(start.dtype).itemsize
            except (TypeError, ValueError):
                frame_bytes = 0
            if frame_bytes > self._max_frame_bytes:
                log.warning(
                    "series %d sends %d-byte frames, above --max-frame-bytes %d: the detector"
                    " socket may buffer more than the memory budget; restart with a larger"
                    " --max-frame-bytes", start.series, frame_bytes, self._max_frame_bytes,
                )
        self._series_roi, self._opened = self._roi, False  # opened by its first frame

    def _open(self, image: np.ndarray | None, motors: tuple[str, ...] = ()) -> None:
        """Queue the current run's start, once: with the binning the first frame (``image``)
        calls for, or as configured when the run opens without a usable frame; ``motors``:
        what the first frame carries positions of."""
        if self._opened or self._series is None:
            return
        self._opened = True
        sampling = None
        if image is not None:
            try:
                sampling = choose_binning(image, self._roi, self._bad, self._saturation)
            except Exception:  # hostile data: the frame itself will be rejected
                log.debug("no sampling estimate on the first frame", exc_info=True)
        if sampling is not None:
            self._series_roi = replace(self._roi, binning=sampling.binning)
            if sampling.reduced:
                log.warning("series %d: binning %d instead of %d (oversampling %.2f at %d)",
                            self._series.series, sampling.binning, sampling.asked_binning,
                            sampling.oversampling, sampling.binning)
            if not sampling.fits:
                log.warning("series %d: the crystal does not fit the window (oversampling %.2f"
                            " < 2 even unbinned): reconstructions cannot be right",
                            self._series.series, sampling.oversampling)
                self._acct.notice(self._run, "undersampled")
        self._queue.put(RunStart(self._run, self._series, sampling, motors))

    def _end(self, end: SeriesEnd) -> None:
        if self._series is None or self._series.series != end.series:
            self._acct.received(None)
            self._reject(None, "end_without_start", f"end of series {end.series}")
            return
        self._finish(end)

    def _finish(self, end: SeriesEnd) -> None:
        """Count the frames that never came, queue the run's end, forget the series."""
        announced = self._acct.snapshot(self._run)["announced"]
        expected = announced if announced is not None else end.frames
        if expected is not None:
            after = expected - (self._last_frame + 1 - self._first_frame)
            if self._last_frame < 0:  # nothing arrived: all of it is missing, from the start
                after = expected
            if after > 0:
                self._acct.missing_after_last(self._run, after)
        if not end.complete:
            self._acct.notice(self._run, "series_not_ended")
        self._open(None)
        self._queue.put(RunEnd(self._run, end))
        self._series, self._last_frame = None, -1
