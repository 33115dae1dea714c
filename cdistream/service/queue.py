"""The bounded hand-off between the receiver and the inference worker.

Frames beyond ``capacity`` push the oldest queued frame out (a live experiment wants the newest
data); control items (series start/end, rejection notices) are never dropped and keep their
place in the stream's order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cdistream.roi import Crop
from cdistream.wire import SeriesEnd, SeriesStart

__all__ = ["FrameItem", "FrameQueue", "Rejection"]


@dataclass(frozen=True)
class FrameItem:
    """A frame that passed the ROI, waiting for the networks."""

    series: int
    frame: int
    timestamp: float
    crop: Crop


@dataclass(frozen=True)
class Rejection:
    """A numbered frame that will not be reconstructed, and why (published, not only counted)."""

    series: int
    frame: int
    reason: str


Control = SeriesStart | SeriesEnd | Rejection


class FrameQueue:
    """Bounded FIFO with drop-oldest for frames; ``on_drop`` hears about every dropped frame."""

    def __init__(self, capacity: int, on_drop: Callable[[FrameItem], None]):
        self.capacity = max(capacity, 1)
        self._items: deque[FrameItem | Control] = deque()
        self._frames = 0
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
            self._items.append(item)
            self._cond.notify()
        if dropped is not None:
            self._on_drop(dropped)

    def _pop_oldest_frame(self) -> FrameItem:
        for i, queued in enumerate(self._items):
            if isinstance(queued, FrameItem):
                del self._items[i]
                self._frames -= 1
                return queued
        raise AssertionError("frame count out of step")  # pragma: no cover

    def _pop(self) -> FrameItem | Control:
        item = self._items.popleft()
        if isinstance(item, FrameItem):
            self._frames -= 1
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
    def stack(batch: list[FrameItem]) -> np.ndarray:
        return np.stack([item.crop.magnitudes for item in batch])
