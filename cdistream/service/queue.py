"""The bounded hand-off between the receiver and the inference worker.

Frames beyond ``capacity`` push the oldest queued frame out (a live experiment wants the newest
data); control items (a run's start and end, rejection notices) are never dropped and keep
their place in the stream's order. Every item carries the run it belongs to: the receiver
numbers runs, one per series start it saw, so a series id the detector reuses (a restart, a
counter from 1 again) never mixes two runs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cdistream.roi import Crop, Sampling
from cdistream.wire import SeriesEnd, SeriesStart

__all__ = ["FrameItem", "FrameQueue", "Rejection", "RunEnd", "RunStart"]


@dataclass(frozen=True)
class FrameItem:
    """A frame that passed the ROI, waiting for the networks."""

    run: int
    series: int
    frame: int
    timestamp: float
    crop: Crop
    positions: dict[str, float] = field(default_factory=dict)  # motor positions, by name

    @property
    def nbytes(self) -> int:
        return self.crop.magnitudes.nbytes + self.crop.counts.nbytes + self.crop.valid.nbytes


@dataclass(frozen=True)
class Rejection:
    """A numbered frame that will not be reconstructed, and why (published, not only counted)."""

    run: int | None
    frame: int
    reason: str


@dataclass(frozen=True)
class RunStart:
    """The receiver saw a series start (or the first frame of a series whose start it missed),
    and, from its first frame, how its crystal fits the window (None: no frame came)."""

    run: int
    start: SeriesStart
    sampling: Sampling | None = None
    motors: tuple[str, ...] = ()  # what the frames carry positions of (events' data keys)


@dataclass(frozen=True)
class RunEnd:
    """The series of ``run`` ended, or the receiver closed it (``end.complete`` False)."""

    run: int
    end: SeriesEnd


Control = RunStart | RunEnd | Rejection


class FrameQueue:
    """Bounded FIFO with drop-oldest for frames; ``on_drop`` hears about every dropped frame."""

    def __init__(self, capacity: int, on_drop: Callable[[FrameItem], None]):
        self.capacity = max(capacity, 1)
        self._items: deque[FrameItem | Control] = deque()
        self._frames = 0
        self.nbytes = 0  # bytes held by the queued frames' crops
        self._cond = threading.Condition()
        self._on_drop = on_drop

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: FrameItem | Control) -> None:
        dropped = None
        with self._cond:
            if isinstance(item, FrameItem):
                if self._frames >= self.capacity:
                    dropped = self._pop_oldest_frame()
                self._frames += 1
                self.nbytes += item.nbytes
            self._items.append(item)
            self._cond.notify()
        if dropped is not None:
            self._on_drop(dropped)

    def _pop_oldest_frame(self) -> FrameItem:
        for i, queued in enumerate(self._items):
            if isinstance(queued, FrameItem):
                del self._items[i]
                self._frames -= 1
                self.nbytes -= queued.nbytes
                return queued
        raise AssertionError("frame count out of step")  # pragma: no cover

    def _pop(self) -> FrameItem | Control:
        item = self._items.popleft()
        if isinstance(item, FrameItem):
            self._frames -= 1
            self.nbytes -= item.nbytes
        return item

    def get_batch(
        self, max_batch: int, max_wait: float, idle: float
    ) -> list[FrameItem] | Control | None:
        """Wait up to ``idle`` s for work. A control item comes back alone; frames come back
        as a list of up to ``max_batch``, waiting at most ``max_wait`` s after the first for
        more, and never past a control item. None when nothing arrived."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout=idle):
                return None
            first = self._pop()
            if not isinstance(first, FrameItem):
                return first
            batch = [first]
            deadline = time.monotonic() + max_wait
            while len(batch) < max_batch:
                if not self._items:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._cond.wait_for(lambda: self._items, timeout=left):
                        break
                if not isinstance(self._items[0], FrameItem):
                    break
                batch.append(self._pop())
            return batch

    @staticmethod
    def stack(batch: list[FrameItem]) -> tuple[np.ndarray, np.ndarray]:
        """The batch's magnitudes and validity masks, (k, N, N) each."""
        return (
            np.stack([item.crop.magnitudes for item in batch]),
            np.stack([item.crop.valid for item in batch]),
        )
