"""DECTRIS stream V2: one CBOR map per ZeroMQ message, ``type`` start, image or end. Images are
tag-40 multi-dimensional arrays of RFC 8746 typed arrays, optionally wrapped in the DECTRIS
compression tag 56500. Spec: github.com/dectris/documentation, stream_v2/README.md."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import cbor2
import numpy as np

from .checks import image_bytes, image_shape, required
from .compression import Compressor, decompress
from .messages import DecodeError, Frame, Message, SeriesEnd, SeriesStart

__all__ = ["Decoder", "Encoder"]

NAME = "eiger-v2"
SELF_DESCRIBED = b"\xd9\xd9\xf7"  # CBOR tag 55799, which every stream V2 message starts with
TAG_ARRAY, TAG_COMPRESSED = 40, 56500
_TYPED_ARRAY_TAGS = {  # RFC 8746 section 2.1
    64: "u1",
    65: ">u2",
    66: ">u4",
    69: "<u2",
    70: "<u4",
    72: "i1",
    77: "<i2",
    78: "<i4",
    85: "<f4",
}
_TAG_OF_DTYPE = {np.dtype(v).str: k for k, v in _TYPED_ARRAY_TAGS.items()}
# start-message fields that go into the run's start document, under cdistream's names
_META = {
    "series_unique_id": "series_unique_id",
    "beam_center_x": "beam_center_x",
    "beam_center_y": "beam_center_y",
    "pixel_size_x": "pixel_size_x",
    "pixel_size_y": "pixel_size_y",
    "incident_wavelength": "wavelength",
    "incident_energy": "energy",
    "count_time": "count_time",
    "frame_time": "frame_time",
    "number_of_images": "number_of_images",
    "detector_description": "detector_description",
    "detector_serial_number": "detector_serial_number",
    "sensor_material": "sensor_material",
    "sensor_thickness": "sensor_thickness",
    "saturation_value": "saturation_value",
}


class _Compressed(NamedTuple):
    algorithm: str
    elem_size: int
    data: bytes


class _Typed(NamedTuple):
    dtype: np.dtype
    payload: bytes | _Compressed


class _Array(NamedTuple):
    dims: Any
    content: Any


def _tag_hook(tag: cbor2.CBORTag, immutable: bool) -> Any:
    """Keep arrays lazy while decoding, so that sizes are checked before anything is inflated."""
    value = tag.value
    if tag.tag == TAG_COMPRESSED:
        if not (isinstance(value, list | tuple) and len(value) == 3):
            raise DecodeError("malformed", "compression tag content is not [algorithm, elem, data]")
        algorithm, elem_size, data = value
        if not (
            isinstance(algorithm, str) and isinstance(elem_size, int) and isinstance(data, bytes)
        ):
            raise DecodeError("malformed", "compression tag content has the wrong types")
        return _Compressed(algorithm, elem_size, data)
    if tag.tag in _TYPED_ARRAY_TAGS:
        if not isinstance(value, bytes | _Compressed):
            raise DecodeError("malformed", f"typed array tag {tag.tag} holds no byte string")
        return _Typed(np.dtype(_TYPED_ARRAY_TAGS[tag.tag]), value)
    if tag.tag == TAG_ARRAY:
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise DecodeError("malformed", "tag 40 content is not [dims, array]")
        return _Array(*value)
    return tag


def _image(array: Any, what: str, series: int | None = None, frame: int | None = None):
    """The 2-D numpy array a tag-40 item holds, decompressed and checked against its dims."""
    if not isinstance(array, _Array):
        raise DecodeError("wrong_type", f"{what} is not a tag-40 array", series, frame)
    dims, typed = array
    dims = image_shape(dims, series, frame)
    if not isinstance(typed, _Typed):
        raise DecodeError("bad_dtype", f"{what} is not a supported typed array", series, frame)
    expected = image_bytes(dims, typed.dtype, series, frame)
    payload = typed.payload
    if isinstance(payload, _Compressed):
        payload = decompress(
            payload.algorithm, payload.data, expected, payload.elem_size, series, frame
        )
    if len(payload) != expected:
        raise DecodeError("wrong_size", f"{what}: {len(payload)} bytes for {dims}", series, frame)
    image = np.frombuffer(payload, dtype=typed.dtype).reshape(dims)
    return image if typed.dtype.isnative else image.astype(typed.dtype.newbyteorder("="))


def _plain(value: Any, depth: int = 0) -> Any:
    """User data with its lazy typed arrays made numpy arrays (small, uncompressed ones) or
    described in words; anything else as cbor2 decoded it."""
    if depth > 32:
        return "<nested too deep>"
    if isinstance(value, _Array):
        typed = value.content
        if isinstance(typed, _Typed) and isinstance(typed.payload, bytes):
            if len(typed.payload) % typed.dtype.itemsize:
                return f"<array of {len(typed.payload)} bytes>"
            flat = np.frombuffer(typed.payload, typed.dtype)
            dims = value.dims
            whole = isinstance(dims, list | tuple) and all(
                isinstance(d, int) and d > 0 for d in dims
            )
            return flat.reshape(dims) if whole and int(np.prod(dims)) == flat.size else flat
        return f"<array {value.dims!r}>"
    if isinstance(value, _Typed):
        if isinstance(value.payload, bytes) and len(value.payload) % value.dtype.itemsize == 0:
            return np.frombuffer(value.payload, value.dtype)
        return f"<compressed {value.dtype} array>"
    if isinstance(value, _Compressed):
        return f"<{value.algorithm} compressed, {len(value.data)} bytes>"
    if isinstance(value, Mapping):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    return value


def _seconds(rational: Any) -> float | None:
    if isinstance(rational, list | tuple) and len(rational) == 2 and rational[1]:
        return rational[0] / rational[1]
    return None


class Decoder:
    """Stateful: the start message tells which channel to use and how many images to expect."""

    name = NAME

    def __init__(self, channel: str | None = None):
        self.channel = channel  # None: the first channel the start message lists
        self._channel: str | None = channel
        self._images: int | None = None

    def decode(self, parts: Sequence[Any]) -> list[Message]:
        if len(parts) != 1:
            raise DecodeError("wrong_parts", f"{len(parts)} parts; stream V2 messages have one")
        body = memoryview(parts[0])
        if body[:3] == SELF_DESCRIBED:  # a marker only (RFC 8949 3.4.6); inside it cbor2
            body = body[3:]  # would decode every map as a frozendict
        try:
            msg = cbor2.loads(body, tag_hook=_tag_hook)
        except Exception as exc:  # cbor2 wraps what the tag hook raised in CBORDecodeError
            if isinstance(exc.__cause__, DecodeError):
                raise exc.__cause__ from None
            raise DecodeError("malformed", f"not CBOR ({exc})") from None
        if not isinstance(msg, Mapping):
            raise DecodeError("malformed", "message is not a CBOR map")
        kind = msg.get("type")
        if kind == "image":
            return [self._frame(msg)]
        if kind == "start":
            return [self._series_start(msg)]
        if kind == "end":
            return [SeriesEnd(required(msg, "series_id", int), self._images)]
        raise DecodeError("unknown_type", f"message type {kind!r}")

    def _series_start(self, msg: Mapping) -> SeriesStart:
        series = required(msg, "series_id", int)
        channels = msg.get("channels") or []
        self._channel = self.channel or (channels[0] if channels else None)
        if self.channel and channels and self.channel not in channels:
            raise DecodeError("unknown_channel", f"channel {self.channel!r} not in {channels}")
        meta: dict[str, Any] = {"format": NAME, "channel": self._channel, "channels": channels}
        for key, name in _META.items():
            if isinstance(msg.get(key), int | float | str) and not isinstance(msg[key], bool):
                meta[name] = msg[key]
        if "user_data" in msg:  # any CBOR: made document-safe when the run starts
            meta["user_data"] = _plain(msg["user_data"])
        translation = msg.get("detector_translation")
        if isinstance(translation, list | tuple) and len(translation) == 3:
            meta["detector_distance"] = float(translation[2])
        self._images = meta.get("number_of_images")
        shape = None
        if isinstance(msg.get("image_size_y"), int) and isinstance(msg.get("image_size_x"), int):
            shape = (msg["image_size_y"], msg["image_size_x"])
        mask = None
        masks = msg.get("pixel_mask")
        if isinstance(masks, Mapping) and self._channel in masks:
            mask = _image(masks[self._channel], "pixel_mask") != 0
        return SeriesStart(series, shape, None, mask, meta)

    def _frame(self, msg: Mapping) -> Frame:
        frame = required(msg, "image_id", int)
        series = required(msg, "series_id", int, None, frame)
        data = required(msg, "data", Mapping, series, frame)
        channel = self._channel if self._channel in data else next(iter(data), None)
        if channel is None or (self.channel is not None and channel != self.channel):
            raise DecodeError("unknown_channel", f"no channel {self.channel!r}", series, frame)
        image = _image(data[channel], f"channel {channel!r}", series, frame)
        date = msg.get("series_date")
        start = _seconds(msg.get("start_time"))
        if isinstance(date, datetime) and start is not None:
            timestamp = date.timestamp() + start
        else:
            timestamp = time.time()  # the detector did not say: time of receipt
        return Frame(series, frame, timestamp, image)


def _array(image: np.ndarray, compressor: Compressor | None) -> cbor2.CBORTag:
    tag = _TAG_OF_DTYPE[image.dtype.newbyteorder("<").str if image.dtype.itemsize > 1 else "|u1"]
    content: Any = np.ascontiguousarray(image).tobytes()
    if compressor is not None:
        algorithm = compressor.algorithm
        elem = image.dtype.itemsize if algorithm == "bslz4" else 0
        content = cbor2.CBORTag(TAG_COMPRESSED, [algorithm, elem, compressor(image)])
    return cbor2.CBORTag(TAG_ARRAY, [list(image.shape), cbor2.CBORTag(tag, content)])


class Encoder:
    """Speaks stream V2 as a DECTRIS detector does (sim_detector, tests)."""

    name = NAME

    def __init__(self, compression: str | None = "bslz4", channel: str = "threshold_1"):
        self.channel = channel
        self._compressor = Compressor(compression) if compression else None
        self._date = datetime.now(UTC)
        self._unique = ""

    def encode(self, message: Message) -> list[list[Any]]:
        if isinstance(message, SeriesStart):
            self._date = datetime.now(UTC)
            self._unique = f"cdistream-sim-{message.series}-{int(self._date.timestamp())}"
            msg: dict[str, Any] = {
                "type": "start",
                "series_id": message.series,
                "series_unique_id": self._unique,
                "arm_date": self._date,
                "channels": [self.channel],
            }
            if message.shape is not None:
                msg["image_size_y"], msg["image_size_x"] = message.shape
            for key, name in _META.items():
                if name in message.meta and key not in msg:
                    msg[key] = message.meta[name]
            known = {*_META.values(), "detector_distance"}
            extra = {k: v for k, v in message.meta.items() if k not in known}
            if extra:
                msg["user_data"] = extra
            if "detector_distance" in message.meta:
                msg["detector_translation"] = [0.0, 0.0, message.meta["detector_distance"]]
            if message.mask is not None:
                mask = message.mask.astype(np.uint32)
                msg["pixel_mask"] = {self.channel: _array(mask, self._compressor)}
                msg["pixel_mask_enabled"] = True
        elif isinstance(message, Frame):
            since = message.timestamp - self._date.timestamp()
            msg = {
                "type": "image",
                "series_id": message.series,
                "series_unique_id": self._unique,
                "image_id": message.frame,
                "series_date": self._date,
                "start_time": [round(since * 1e9), 1_000_000_000],
                "data": {self.channel: _array(message.image, self._compressor)},
            }
        else:
            msg = {"type": "end", "series_id": message.series, "series_unique_id": self._unique}
        return [[SELF_DESCRIBED + cbor2.dumps(msg)]]
