"""Where every frame went. received = reconstructed + rejected + dropped, always; frames the
detector numbered but we never received are counted as gaps."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TypedDict

__all__ = ["Accounting", "Counts", "CountsDict"]


class CountsDict(TypedDict):
    """The counts as they appear in stop documents and status lines."""

    received: int
    reconstructed: int
    rejected: dict[str, int]
    dropped: int
    gaps: int
    pending: int
    notices: dict[str, int]  # things that went wrong without costing a frame, by name


@dataclass
class Counts:
    """Counts for one scope (the whole service, or one detector series)."""

    received: int = 0
    reconstructed: int = 0
    rejected: Counter = field(default_factory=Counter)
    dropped: int = 0
    gaps: int = 0
    notices: Counter = field(default_factory=Counter)

    def pending(self) -> int:
        """Received but not yet reconstructed, rejected or dropped (queued or in flight)."""
        return self.received - self.reconstructed - sum(self.rejected.values()) - self.dropped

    def as_dict(self) -> CountsDict:
        return CountsDict(
            received=self.received,
            reconstructed=self.reconstructed,
            rejected=dict(self.rejected),
            dropped=self.dropped,
            gaps=self.gaps,
            pending=self.pending(),
            notices=dict(self.notices),
        )


class Accounting:
    """Thread-safe counters, service-wide and per series."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = Counts()
        self._series: dict[int | None, Counts] = {}

    def _scopes(self, series: int | None) -> tuple[Counts, Counts]:
        return self.total, self._series.setdefault(series, Counts())

    def received(self, series: int | None) -> None:
        with self._lock:
            for c in self._scopes(series):
                c.received += 1

    def reconstructed(self, series: int | None, n: int = 1) -> None:
        with self._lock:
            for c in self._scopes(series):
                c.reconstructed += n

    def rejected(self, series: int | None, reason: str) -> None:
        with self._lock:
            for c in self._scopes(series):
                c.rejected[reason] += 1

    def dropped(self, series: int | None) -> None:
        with self._lock:
            for c in self._scopes(series):
                c.dropped += 1

    def gaps(self, series: int | None, n: int) -> None:
        with self._lock:
            for c in self._scopes(series):
                c.gaps += n

    def notice(self, series: int | None, name: str) -> None:
        with self._lock:
            for c in self._scopes(series):
                c.notices[name] += 1

    def snapshot(self, series: int | None = ...) -> CountsDict:  # type: ignore[assignment]
        """Counts service-wide, or for one series when ``series`` is given."""
        with self._lock:
            if series is ...:
                return self.total.as_dict()
            return self._series.get(series, Counts()).as_dict()
