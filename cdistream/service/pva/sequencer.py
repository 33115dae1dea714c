"""The stream's order while frames are out at workers: runs open, frames are published and runs
close in the order the detector sent them, whichever worker answers first. A frame whose result
has not come back ``timeout`` seconds after it was sent is given up (``lost_in_worker``: the
worker died, or its process was stopped), so a dead worker costs its own frames and never
holds up the run."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..queue import Control, FrameItem

__all__ = ["Lost", "Sequencer"]


@dataclass(frozen=True)
class Lost:
    """A frame no worker returned in time."""

    item: FrameItem
    unique_id: int


class Sequencer:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self._entries: deque[tuple[FrameItem | Control, int | None, float]] = deque()
        self.in_flight = 0  # frames sent and not yet published or given up

    def __len__(self) -> int:
        return len(self._entries)

    def sent(self, item: FrameItem, unique_id: int) -> None:
        self._entries.append((item, unique_id, time.monotonic()))
        self.in_flight += 1

    def control(self, item: Control) -> None:
        self._entries.append((item, None, 0.0))

    def ready(
        self, take: Callable[[int], Any], now: float | None = None
    ) -> list[Control | Lost | list[tuple[FrameItem, Any]]]:
        """What can go out now, in order: control items, :class:`Lost` frames, and runs of
        consecutive returned frames as lists of (item, result). Stops at the first frame that
        is neither back nor overdue."""
        now = time.monotonic() if now is None else now
        out: list = []
        batch: list[tuple[FrameItem, Any]] = []
        while self._entries:
            item, uid, sent = self._entries[0]
            if uid is None:
                result = None
            else:
                result = take(uid)
                if result is None and now - sent < self.timeout:
                    break
            self._entries.popleft()
            self.in_flight -= uid is not None
            if uid is not None and result is not None:
                batch.append((item, result))
                continue
            if batch:
                out.append(batch)
                batch = []
            out.append(item if uid is None else Lost(item, uid))
        if batch:
            out.append(batch)
        return out
