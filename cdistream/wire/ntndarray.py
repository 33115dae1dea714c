"""EPICS NTNDArray (``epics:nt/NTNDArray:1.0``), as areaDetector's NDPluginPva publishes frames
over PVAccess. The decoder reads the structure as pvapy hands it over (``pv["field"]`` gives
plain Python values and numpy arrays), so this module needs no EPICS library: the PVA channel
itself lives in :mod:`cdistream.service.pva.receiver`.

- frame number: ``uniqueId``; timestamp: ``dataTimeStamp`` (POSIX epoch, as PVAccess counts),
  else ``timeStamp``, else the time of receipt;
- image: ``dimension`` is [x, y] (x fastest), so the array is (y, x);
- ``codec.name``: ``""`` (none), ``lz4`` (one LZ4 block) or ``bslz4`` (bitshuffle + LZ4 blocks
  without the HDF5 header), as areaDetector's NDPluginCodec writes them: the compressed bytes in
  ``value.ubyteValue``, the original pvData scalar type in ``codec.parameters``,
  ``uncompressedSize`` in bytes;
- attributes (NDAttributes) go into the series start's metadata; ``series`` when present numbers
  the series, otherwise a new series starts each time ``uniqueId`` goes back (a new acquisition).
  PVA has no end-of-series message: :meth:`Decoder.idle` ends the series after a quiet period.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .checks import image_bytes, image_shape
from .compression import decompress
from .counter_series import CounterSeries
from .messages import DecodeError, Message

__all__ = ["NAME", "SCALAR_TYPES", "Decoder", "attributes"]

NAME = "pva"
# pvData ScalarType ordinals (the codec.parameters value) and the union field of each type
SCALAR_TYPES: dict[int, tuple[str, str]] = {
    1: ("byteValue", "int8"),
    2: ("shortValue", "int16"),
    3: ("intValue", "int32"),
    5: ("ubyteValue", "uint8"),
    6: ("ushortValue", "uint16"),
    7: ("uintValue", "uint32"),
    9: ("floatValue", "float32"),
    10: ("doubleValue", "float64"),
}
_FIELD_DTYPE = {field: dtype for field, dtype in SCALAR_TYPES.values()}


def _union_value(union: Any) -> Any:
    """The value a pvapy union holds: ``({name: value}, {name: type})`` or ``{name: value}``."""
    if isinstance(union, tuple) and union:
        union = union[0]
    if isinstance(union, Mapping) and len(union) == 1:
        return next(iter(union.values()))
    return union


def attributes(pv: Any) -> dict[str, Any]:
    """The NDAttributes of an NTNDArray as {name: plain value}; unreadable ones are skipped."""
    out: dict[str, Any] = {}
    try:
        entries = pv["attribute"]
    except Exception:
        return out
    for entry in entries if isinstance(entries, list | tuple) else ():
        try:
            name, value = entry["name"], _union_value(entry["value"])
        except Exception:
            continue
        if isinstance(name, str) and name:
            if isinstance(value, np.ndarray):
                value = value.tolist()
            if value is None or isinstance(value, bool | int | float | str | list):
                out[name] = value
    return out


class Decoder:
    """Stateful: tells one acquisition from the next by ``uniqueId`` (or the ``series``
    attribute) and ends a series that has been quiet for ``idle_s`` seconds."""

    name = NAME

    def __init__(self, idle_s: float = 5.0) -> None:
        self.idle_s = idle_s
        self._counter = CounterSeries(NAME)
        self._seen = time.monotonic()

    def decode(self, pv: Any) -> list[Message]:
        try:
            frame = pv["uniqueId"]
        except Exception:
            raise DecodeError("malformed", "not an NTNDArray (no uniqueId)") from None
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            raise DecodeError("wrong_type", f"uniqueId {frame!r}")
        attrs = attributes(pv)
        series = self._counter.series_of(frame, attrs)
        image = self._image(pv, series, frame)
        self._seen = time.monotonic()
        return self._counter.frame(series, frame, self._timestamp(pv), image, attrs)

    def idle(self, now: float | None = None) -> list[Message]:
        """The end of the open series if nothing came for ``idle_s`` seconds, else nothing."""
        now = time.monotonic() if now is None else now
        return [] if now - self._seen < self.idle_s else self._counter.end()

    @staticmethod
    def _timestamp(pv: Any) -> float:
        for field in ("dataTimeStamp", "timeStamp"):
            try:
                stamp = pv[field]
                seconds = stamp["secondsPastEpoch"] + stamp["nanoseconds"] * 1e-9
            except Exception:
                continue
            if seconds > 0:
                return float(seconds)
        return time.time()

    @staticmethod
    def _image(pv: Any, series: int, frame: int) -> np.ndarray:
        try:
            dims = [d["size"] for d in pv["dimension"]]
            value = pv["value"]
            codec = pv["codec"]
        except Exception as exc:
            raise DecodeError("malformed", f"NTNDArray fields: {exc}", series, frame) from None
        dims = [d for d in dims if d != 1] if len(dims) > 2 else dims  # [x, y] or [1, x, y]
        x, y = image_shape(dims, series, frame)
        if isinstance(value, tuple) and value:
            value = value[0]
        if not (isinstance(value, Mapping) and len(value) == 1):
            raise DecodeError("malformed", "value is not a union of one array", series, frame)
        (field, data), = value.items()
        if not isinstance(data, np.ndarray):
            data = np.asarray(data)
        name = codec.get("name", "") if isinstance(codec, Mapping) else ""
        if not name:
            dtype = _FIELD_DTYPE.get(field)
            if dtype is None:
                raise DecodeError("bad_dtype", f"value.{field}", series, frame)
            if data.dtype != np.dtype(dtype) or data.size != x * y:
                raise DecodeError(
                    "wrong_size", f"{data.size} {data.dtype} for {x} x {y}", series, frame
                )
            return data.reshape(y, x).copy()  # pvapy reuses its buffers for the next update
        return _decompressed(name, codec, pv, data, (y, x), series, frame)


def _decompressed(
    name: str, codec: Mapping, pv: Any, data: np.ndarray, shape: tuple[int, int], series, frame
) -> np.ndarray:
    """An NDPluginCodec-compressed value: bytes in ``ubyteValue``, the type in the codec."""
    kind = _union_value(codec.get("parameters"))
    if not isinstance(kind, int) or kind not in SCALAR_TYPES:
        raise DecodeError("bad_dtype", f"codec parameters {kind!r}", series, frame)
    dtype = np.dtype(SCALAR_TYPES[kind][1])
    expected = image_bytes(shape, dtype, series, frame)
    try:
        declared = pv["uncompressedSize"]
    except Exception:
        declared = expected
    if declared not in (0, expected):
        raise DecodeError(
            "bad_compressed_size", f"uncompressedSize {declared}, expected {expected}",
            series, frame,
        )
    if data.dtype != np.uint8:
        raise DecodeError("malformed", f"compressed value is {data.dtype}", series, frame)
    if name == "lz4":
        raw = decompress("lz4-block", data, expected, dtype.itemsize, series, frame)
        return np.frombuffer(raw, dtype).reshape(shape)  # a new buffer: lz4 copies
    if name == "bslz4":
        return _bslz4(data, shape, dtype, series, frame)
    raise DecodeError("unknown_encoding", f"codec {name!r}", series, frame)


def _bslz4(data: np.ndarray, shape: tuple[int, int], dtype: np.dtype, series, frame) -> np.ndarray:
    """Bitshuffle + LZ4 without the HDF5 header (NDPluginCodec's form), through bitshuffle."""
    import bitshuffle

    try:
        return bitshuffle.decompress_lz4(data, shape, dtype, 0)
    except Exception as exc:  # bitshuffle raises ValueError/RuntimeError on corrupt input
        raise DecodeError("corrupt_compressed", f"bslz4: {exc}", series, frame) from None
