"""Where every frame went. received = reconstructed + rejected + dropped, always; and when the
detector announced how many frames a series has, announced = received + missing, where the
missing ones are counted by where they went missing: before the first frame received, in gaps
of the frame counter, after the last one."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TypedDict

__all__ = ["Accounting", "Counts", "CountsDict"]


class CountsDict(TypedDict):
    """The counts as they appear in stop documents, status lines and metrics."""

    received: int
    reconstructed: int
    rejected: dict[str, int]
    dropped: int
    gaps: int  # frames the counter skipped between two received frames
    missing_before_first: int  # frames before the first one received
    missing_after_last: int  # announced frames after the last one received
    announced: int | None  # frames the detector said the series has; None if it did not say
    pending: int
    documents_not_delivered: int  # feedback documents a slow subscriber could not take
    notices: dict[str, int]  # things that went wrong without costing a frame, by name


@dataclass
class Counts:
    """Counts for one scope (the whole service, or one detector series)."""

    received: int = 0
    reconstructed: int = 0
    rejected: Counter = field(default_factory=Counter)
    dropped: int = 0
    gaps: int = 0
    missing_before_first: int = 0
    missing_after_last: int = 0
    announced: int | None = None
    documents_not_delivered: int = 0
    notices: Counter = field(default_factory=Counter)

    def pending(self) -> int:
        """Received but not yet reconstructed, rejected or dropped (queued or in flight)."""
        return self.received - self.reconstructed - sum(self.rejected.values()) - self.dropped

    def missing(self) -> int:
        """Frames the detector numbered (or announced) that never arrived."""
        return self.gaps + self.missing_before_first + self.missing_after_last

    def as_dict(self) -> CountsDict:
        return CountsDict(
            received=self.received,
            reconstructed=self.reconstructed,
            rejected=dict(self.rejected),
            dropped=self.dropped,
            gaps=self.gaps,
            missing_before_first=self.missing_before_first,
            missing_after_last=self.missing_after_last,
            announced=self.announced,
            pending=self.pending(),
            documents_not_delivered=self.documents_not_delivered,
            notices=dict(self.notices),
        )


class Accounting:
    """Thread-safe counters, service-wide and per series."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = Counts()
        self._series: dict[int | None, Counts] = {}

    def _scopes(self, series: int | None) -> tuple[Counts, Counts]:
        scope = self._series.get(series)
        if scope is None:
            if len(self._series) > 1024:  # a long run's old series
                del self._series[next(iter(self._series))]
            scope = self._series[series] = Counts()
        return self.total, scope

    def _add(self, series: int | None, name: str, n: int = 1) -> None:
        with self._lock:
            for c in self._scopes(series):
                setattr(c, name, getattr(c, name) + n)

    def received(self, series: int | None) -> None:
        with self._lock:  # once per frame: written out, not through _add
            total, scope = self._scopes(series)
            total.received += 1
            scope.received += 1

    def reconstructed(self, series: int | None, n: int = 1) -> None:
        self._add(series, "reconstructed", n)

    def dropped(self, series: int | None) -> None:
        self._add(series, "dropped")

    def gaps(self, series: int | None, n: int) -> None:
        self._add(series, "gaps", n)

    def missing_before_first(self, series: int | None, n: int) -> None:
        self._add(series, "missing_before_first", n)

    def missing_after_last(self, series: int | None, n: int) -> None:
        self._add(series, "missing_after_last", n)

    def not_delivered(self, series: int | None, n: int = 1) -> None:
        self._add(series, "documents_not_delivered", n)

    def announced(self, series: int | None, n: int) -> None:
        with self._lock:
            self._scopes(series)[1].announced = n

    def rejected(self, series: int | None, reason: str) -> None:
        with self._lock:
            for c in self._scopes(series):
                c.rejected[reason] += 1

    def notice(self, series: int | None, name: str, n: int = 1) -> None:
        with self._lock:
            for c in self._scopes(series):
                c.notices[name] += n

    def snapshot(self, series: int | None = ...) -> CountsDict:  # type: ignore[assignment]
        """Counts service-wide, or for one series when ``series`` is given."""
        with self._lock:
            if series is ...:
                return self.total.as_dict()
            return self._series.get(series, Counts()).as_dict()
