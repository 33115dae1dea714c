"""cdistream's native detector stream: a msgpack header part, then for frames the raw image
buffer as a second part, decoded without copying. Spec: docs/protocol.md."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from .checks import image_bytes, image_shape, required
from .counter_series import numeric
from .messages import DecodeError, Frame, Message, SeriesEnd, SeriesStart

__all__ = ["PROTOCOL", "Decoder", "Encoder", "decode", "encode"]

PROTOCOL = "cdistream-native-1"
_DTYPES = {name: np.dtype(name) for name in ("uint8", "uint16", "uint32", "int32", "float32")}


def encode(message: Message) -> list[Any]:
    """The multipart message for ``message``; frame images go out as a buffer, not a copy."""
    if isinstance(message, Frame):
        image = np.ascontiguousarray(message.image)
        header = {
            "type": "frame",
            "series": message.series,
            "frame": message.frame,
            "timestamp": message.timestamp,
            "shape": list(image.shape),
            "dtype": image.dtype.name,
        }
        if message.positions:
            header["positions"] = dict(message.positions)
        return [msgpack.packb(header), memoryview(image).cast("B")]
    if isinstance(message, SeriesStart):
        header = {
            "type": "start",
            "protocol": PROTOCOL,
            "series": message.series,
            "shape": list(message.shape),
            "dtype": message.dtype,
            "meta": message.meta,
        }
        parts = [msgpack.packb(header)]
        if message.mask is not None:
            parts.append(np.ascontiguousarray(message.mask, dtype=np.uint8).tobytes())
        return parts
    if isinstance(message, SeriesEnd):
        return [msgpack.packb({"type": "end", "series": message.series, "frames": message.frames})]
    raise TypeError(f"not a message: {message!r}")


def _geometry(header: dict) -> tuple[tuple[int, int], np.dtype]:
    shape = image_shape(required(header, "shape", list))
    name = required(header, "dtype", str)
    if name not in _DTYPES:
        raise DecodeError("bad_dtype", f"dtype {name!r} not in {sorted(_DTYPES)}")
    dtype = _DTYPES[name]
    image_bytes(shape, dtype)
    return shape, dtype


def decode(parts: Sequence[Any]) -> Message:
    """Decode one multipart message (bytes, or zmq.Frame objects for zero copy)."""
    if not parts:
        raise DecodeError("malformed", "empty message")
    try:
        header = msgpack.unpackb(memoryview(parts[0]), raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError("malformed", f"header is not msgpack ({exc})") from None
    if not isinstance(header, dict):
        raise DecodeError("malformed", "header is not a map")
    kind = header.get("type")
    if kind == "frame":
        if len(parts) != 2:
            raise DecodeError("wrong_parts", f"frame has {len(parts)} parts, expected 2")
        shape, dtype = _geometry(header)
        buffer = memoryview(parts[1])
        if buffer.nbytes != shape[0] * shape[1] * dtype.itemsize:
            raise DecodeError("wrong_size", f"{buffer.nbytes} bytes for {shape} {dtype.name}")
        image = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        positions = header.get("positions", {})
        return Frame(
            required(header, "series", int),
            required(header, "frame", int),
            float(required(header, "timestamp", (int, float))),
            image,
            numeric(positions) if isinstance(positions, dict) else {},
        )
    if kind == "start":
        shape, dtype = _geometry(header)
        mask = None
        if len(parts) == 2:
            raw = np.frombuffer(memoryview(parts[1]), dtype=np.uint8)
            if raw.size != shape[0] * shape[1]:
                raise DecodeError("wrong_size", f"mask of {raw.size} bytes for {shape}")
            mask = raw.reshape(shape).astype(bool)
        meta = header.get("meta", {})
        if not isinstance(meta, dict):
            raise DecodeError("wrong_type", "'meta' is not a map")
        return SeriesStart(required(header, "series", int), shape, dtype.name, mask, meta)
    if kind == "end":
        return SeriesEnd(required(header, "series", int), required(header, "frames", int))
    raise DecodeError("unknown_type", f"message type {kind!r}")


class Decoder:
    """The native format as a :mod:`cdistream.wire.formats` decoder (it keeps no state)."""

    name = "native"

    def decode(self, parts: Sequence[Any]) -> list[Message]:
        return [decode(parts)]


class Encoder:
    """The native format as a :mod:`cdistream.wire.formats` encoder."""

    name = "native"

    def encode(self, message: Message) -> list[list[Any]]:
        return [encode(message)]
