"""Series for areaDetector streams, which send frames and no series messages (ADZMQ, NTNDArray
over PVA): the NDAttribute ``series`` when the IOC adds one, otherwise a new series each time
the array counter goes back (a new acquisition)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .messages import Frame, Message, SeriesEnd, SeriesStart

__all__ = ["CounterSeries", "numeric"]


def numeric(attrs: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among a frame's attributes (motor positions, say), ``series`` and
    bools aside."""
    out = {}
    for name, value in attrs.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and name != "series" and np.isfinite(value) and isinstance(name, str):
            out[name] = float(value)
    return out


class CounterSeries:
    """Turns (frame number, NDAttributes, image) into frames with the series start and end
    messages a series-aware stream would have sent. ``format`` names the stream in the start
    document's metadata."""

    def __init__(self, format: str) -> None:
        self.format = format
        self.series: int | None = None
        self.last = -1
        self._started = 0

    def series_of(self, frame: int, attrs: dict[str, Any]) -> int:
        """The series ``frame`` belongs to (before the frame is accepted)."""
        series = attrs.get("series")
        if isinstance(series, int) and not isinstance(series, bool):
            return series
        same = self.series is not None and frame > self.last
        return self.series if same else self._started + 1

    def frame(
        self, series: int, frame: int, timestamp: float, image: np.ndarray, attrs: dict
    ) -> list[Message]:
        """The frame, after the end of the previous series and the start of a new one."""
        out: list[Message] = []
        if series != self.series:
            out += self.end()
            meta = {"format": self.format, "series_inferred": "series" not in attrs,
                    "ndattr": attrs}
            out.append(SeriesStart(series, None, image.dtype.name, None, meta))
            self.series, self._started = series, self._started + 1
        self.last = frame
        out.append(Frame(series, frame, timestamp, image, numeric(attrs)))
        return out

    def end(self) -> list[Message]:
        """The end of the open series, if any (its frame count unknown)."""
        if self.series is None:
            return []
        end = SeriesEnd(self.series, None)
        self.series, self.last = None, -1
        return [end]
