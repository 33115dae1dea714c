"""areaDetector NDPluginZMQ (ADZMQ) ``array-1.0``: a JSON header part, then the raw array. ADZMQ
has no series messages, so series are inferred: the NDAttribute ``series`` when the IOC adds
one, otherwise a new series each time the array counter goes back (a new acquisition).
Before ADZMQ 1.4 ``htype`` was a list and ``shape`` was [x, y]; both forms are read."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .checks import image_bytes, json_object, required
from .counter_series import CounterSeries
from .messages import DecodeError, Frame, Message

__all__ = ["Decoder", "Encoder"]

NAME = "adzmq"
HTYPE = "array-1.0"
EPICS_EPOCH = 631_152_000.0  # 1990-01-01 in POSIX seconds: NDArray.timeStamp counts from there
_TYPES = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"}


class Decoder:
    """Stateful: tracks the array counter to tell one acquisition from the next."""

    name = NAME

    def __init__(self) -> None:
        self._counter = CounterSeries(NAME)

    def decode(self, parts: Sequence[Any]) -> list[Message]:
        if not parts:
            raise DecodeError("malformed", "empty message")
        head = json_object(parts[0], "header")
        htype = head.get("htype")
        legacy = htype == [HTYPE]
        if htype != HTYPE and not legacy:
            raise DecodeError("unknown_type", f"htype {htype!r}")
        frame = required(head, "frame", int)
        attrs = head.get("ndattr") if isinstance(head.get("ndattr"), dict) else {}
        series = self._counter.series_of(frame, attrs)
        if len(parts) != 2:
            raise DecodeError("wrong_parts", f"{len(parts)} parts, expected 2", series, frame)
        image = self._image(head, parts[1], legacy, series, frame)
        return self._counter.frame(series, frame, self._timestamp(head), image, attrs)

    @staticmethod
    def _timestamp(head: dict) -> float:
        stamp = head.get("timeStamp")
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            return float(stamp) + EPICS_EPOCH
        return time.time()  # the IOC did not say: time of receipt

    @staticmethod
    def _image(head: dict, blob: Any, legacy: bool, series: int, frame: int) -> np.ndarray:
        encoding = head.get("encoding", "")
        if encoding:  # NDPluginCodec output: not decoded here
            raise DecodeError("unknown_encoding", f"encoding {encoding!r}", series, frame)
        name, shape = head.get("type"), head.get("shape")
        if name not in _TYPES:
            raise DecodeError("bad_dtype", f"type {name!r}", series, frame)
        if not (isinstance(shape, list) and all(isinstance(s, int) and s > 0 for s in shape)):
            raise DecodeError("bad_shape", f"shape {shape!r}", series, frame)
        dims = [s for s in (shape[::-1] if legacy else shape) if s != 1]  # [z,] y, x
        if len(dims) != 2:
            raise DecodeError("bad_shape", f"shape {shape!r} is not one 2-D image", series, frame)
        dtype = np.dtype(name)
        expected = image_bytes(dims, dtype, series, frame)
        view = memoryview(blob)
        if view.nbytes != expected:
            raise DecodeError(
                "wrong_size", f"{view.nbytes} bytes for {shape} {name}", series, frame
            )
        return np.frombuffer(view, dtype=dtype).reshape(dims)


class Encoder:
    """Speaks ADZMQ (1.4 and later) as an areaDetector IOC does: frames only, no series messages;
    the series number travels as the NDAttribute ``series``."""

    name = NAME

    def encode(self, message: Message) -> list[list[Any]]:
        if not isinstance(message, Frame):
            return []
        image = np.ascontiguousarray(message.image)
        head = {
            "htype": HTYPE,
            "type": image.dtype.name,
            "shape": list(image.shape),
            "frame": message.frame,
            "timeStamp": message.timestamp - EPICS_EPOCH,
            "encoding": "",
            "ndattr": {"series": message.series, **message.positions},
        }
        return [[json.dumps(head).encode(), memoryview(image).cast("B")]]
