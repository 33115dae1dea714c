"""The internal messages every detector decoder produces and the service consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdistream.errors import Rejected

__all__ = ["DecodeError", "Frame", "Message", "SeriesEnd", "SeriesStart"]


class DecodeError(Rejected):
    """A message that cannot be decoded. ``series`` and ``frame`` are set when the message
    still said which frame it carried, so that the rejection can name it."""

    def __init__(
        self, reason: str, detail: str, series: int | None = None, frame: int | None = None
    ):
        super().__init__(reason, detail)
        self.series, self.frame = series, frame


@dataclass(frozen=True)
class SeriesStart:
    """A detector series begins: geometry, optional pixel mask, free-form metadata
    (beam centre, pixel size, wavelength, distance, count time ...)."""

    series: int
    shape: tuple[int, int] | None  # rows, cols; None when the format announces no geometry
    dtype: str | None  # None when the format announces no pixel type
    mask: np.ndarray | None = None  # bool (rows, cols), True = do not use
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Frame:
    """One detector image. ``image`` may be a read-only view on the received buffer;
    ``positions``: numbers the detector sent with this frame (motor positions as
    areaDetector's NDAttributes, say), by name."""

    series: int
    frame: int
    timestamp: float  # seconds since the epoch, when the detector produced it
    image: np.ndarray
    positions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesEnd:
    """A detector series ends after ``frames`` images were sent (None: the format does not say).
    ``complete`` is False when the series never ended and the service closes it (a new series
    started first, the service stopped): ``reason`` says which."""

    series: int
    frames: int | None
    complete: bool = True
    reason: str = ""


Message = SeriesStart | Frame | SeriesEnd
