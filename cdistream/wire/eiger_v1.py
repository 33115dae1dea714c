"""DECTRIS stream V1 ("legacy"): multipart messages of JSON parts and binary blobs, told apart
by the ``htype`` of the first part: ``dheader-1.0`` (series start; with header_detail ``basic``
the detector configuration follows, with ``all`` also flatfield, pixel mask and count-rate table,
each a JSON part and a blob), ``dimage-1.0`` (4 parts: image, encoding, blob, timing) and
``dseries_end-1.0``. Image shapes are [x, y]. A trailing appendix part is allowed anywhere."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .checks import image_bytes, image_shape, json_object, required
from .compression import Compressor, decompress
from .messages import DecodeError, Frame, Message, SeriesEnd, SeriesStart

__all__ = ["Decoder", "Encoder"]

NAME = "eiger-v1"
_TYPES = {"uint8", "uint16", "uint32", "float32"}
_HEADER_BLOBS = ("dflatfield-1.0", "dpixelmask-1.0", "dcountrate_table-1.0")  # detail "all"
# detector configuration keys (SIMPLON's names, also the file writer's detector group's) that go
# into the run's start document, under cdistream's names
DETECTOR_CONFIG_NAMES = {
    "beam_center_x": "beam_center_x",
    "beam_center_y": "beam_center_y",
    "x_pixel_size": "pixel_size_x",
    "y_pixel_size": "pixel_size_y",
    "wavelength": "wavelength",
    "photon_energy": "energy",
    "detector_distance": "detector_distance",
    "count_time": "count_time",
    "frame_time": "frame_time",
    "description": "detector_description",
    "detector_number": "detector_serial_number",
    "sensor_material": "sensor_material",
    "sensor_thickness": "sensor_thickness",
    "countrate_correction_count_cutoff": "saturation_value",
    "data_collection_date": "data_collection_date",
}


def _expect(header: dict, htype: str, series: int | None = None, frame: int | None = None) -> None:
    if header.get("htype") != htype:
        raise DecodeError(
            "wrong_htype_order", f"expected {htype}, got {header.get('htype')!r}", series, frame
        )


def _array(info: dict, blob: Any, series: int | None = None, frame: int | None = None):
    """The 2-D array a ``d*-1.0`` JSON part describes and the blob after it holds."""
    shape, name = info.get("shape"), info.get("type")
    cols, rows = image_shape(shape, series, frame)  # [x, y]
    if name not in _TYPES:
        raise DecodeError("bad_dtype", f"type {name!r} not in {sorted(_TYPES)}", series, frame)
    dtype = np.dtype(name)
    expected = image_bytes((rows, cols), dtype, series, frame)
    view = memoryview(blob)
    size = info.get("size", view.nbytes)
    if size != view.nbytes:
        raise DecodeError(
            "wrong_size", f"blob is {view.nbytes} bytes, header says {size}", series, frame
        )
    encoding = info.get("encoding", "<")
    algorithm = {"<": None, "lz4<": "lz4-block", f"bs{8 * dtype.itemsize}-lz4<": "bslz4"}
    if encoding not in algorithm:
        raise DecodeError("unknown_encoding", f"encoding {encoding!r} for {name}", series, frame)
    payload: Any = view
    if algorithm[encoding] is not None:
        payload = decompress(algorithm[encoding], view, expected, dtype.itemsize, series, frame)
    if len(payload) != expected:
        raise DecodeError("wrong_size", f"{len(payload)} bytes for {shape} {name}", series, frame)
    return np.frombuffer(payload, dtype=dtype).reshape(rows, cols)


class Decoder:
    """Stateful: the series header carries the collection date (frame times are relative to it),
    the number of images and, with header_detail ``all``, the pixel mask."""

    name = NAME

    def __init__(self) -> None:
        self._date: float | None = None
        self._images: int | None = None

    def decode(self, parts: Sequence[Any]) -> list[Message]:
        if not parts:
            raise DecodeError("malformed", "empty message")
        head = json_object(parts[0], "first part")
        kind = head.get("htype")
        if kind == "dimage-1.0":
            return [self._frame(head, parts)]
        if kind == "dheader-1.0":
            return [self._series_start(head, parts)]
        if kind == "dseries_end-1.0":
            return [SeriesEnd(required(head, "series", int), self._images)]
        if kind in ("dimage_d-1.0", "dconfig-1.0", *_HEADER_BLOBS):
            raise DecodeError("wrong_htype_order", f"message starts with {kind}")
        raise DecodeError("unknown_type", f"htype {kind!r}")

    def _series_start(self, head: dict, parts: Sequence[Any]) -> SeriesStart:
        series = required(head, "series", int)
        detail = head.get("header_detail", "none")
        wanted = {"none": 1, "basic": 2, "all": 2 + 2 * len(_HEADER_BLOBS)}.get(detail)
        if wanted is None:
            raise DecodeError("wrong_type", f"header_detail {detail!r}")
        if len(parts) not in (wanted, wanted + 1):  # + 1: the optional header appendix
            raise DecodeError("wrong_parts", f"header_detail {detail}: {len(parts)} parts")
        config = json_object(parts[1], "detector configuration") if wanted > 1 else {}
        mask = None
        for i, htype in enumerate(_HEADER_BLOBS if detail == "all" else ()):
            info = json_object(parts[2 + 2 * i], htype)
            _expect(info, htype)
            array = _array(info, parts[3 + 2 * i])
            if htype == "dpixelmask-1.0":
                mask = array != 0
        meta: dict[str, Any] = {"format": NAME, "header_detail": detail}
        if len(parts) == wanted + 1:  # the user's header appendix: kept when it is a JSON object
            try:
                appendix = json_object(parts[-1], "header appendix")
            except DecodeError:  # not JSON, or nested too deep: an appendix is optional
                appendix = None
            if isinstance(appendix, dict):
                meta["appendix"] = appendix
        for key, name in DETECTOR_CONFIG_NAMES.items():
            value = config.get(key)
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                meta[name] = value
        nimages, ntrigger = config.get("nimages"), config.get("ntrigger", 1)
        self._images = (
            nimages * ntrigger if isinstance(nimages, int) and isinstance(ntrigger, int) else None
        )
        if self._images is not None:
            meta["number_of_images"] = self._images
        try:
            self._date = datetime.fromisoformat(meta["data_collection_date"]).timestamp()
        except (KeyError, TypeError, ValueError):
            self._date = None  # frame times will be times of receipt
        shape = None
        if isinstance(config.get("y_pixels_in_detector"), int) and isinstance(
            config.get("x_pixels_in_detector"), int
        ):
            shape = (config["y_pixels_in_detector"], config["x_pixels_in_detector"])
        bits = config.get("bit_depth_image")
        dtype = f"uint{bits}" if bits in (8, 16, 32) else None
        return SeriesStart(series, shape, dtype, mask, meta)

    def _frame(self, head: dict, parts: Sequence[Any]) -> Frame:
        frame = head.get("frame") if isinstance(head.get("frame"), int) else None
        series = required(head, "series", int, None, frame)
        frame = required(head, "frame", int, series)
        if len(parts) not in (4, 5):  # + 1: the optional image appendix
            raise DecodeError("wrong_parts", f"image has {len(parts)} parts, not 4", series, frame)
        info = json_object(parts[1], "image encoding part", series, frame)
        _expect(info, "dimage_d-1.0", series, frame)
        timing = json_object(parts[3], "image timing part", series, frame)
        _expect(timing, "dconfig-1.0", series, frame)
        image = _array(info, parts[2], series, frame)
        start = timing.get("start_time")
        if self._date is not None and isinstance(start, int | float):
            timestamp = self._date + start * 1e-9
        else:
            timestamp = time.time()  # the detector did not say: time of receipt
        return Frame(series, frame, timestamp, image)


def _dumps(value: dict) -> bytes:
    return json.dumps(value).encode()


class Encoder:
    """Speaks stream V1 as an EIGER does (sim_detector, tests). ``encoding`` is ``<``,
    ``lz4<`` or ``bs-lz4<`` (bitshuffle, with the element size filled in per type)."""

    name = NAME

    def __init__(self, encoding: str = "bs-lz4<"):
        self.encoding = encoding
        self._date = time.time()
        self._compressors = {"lz4<": Compressor("lz4-block"), "bs": Compressor("bslz4")}

    def encode(self, message: Message) -> list[list[Any]]:
        if isinstance(message, SeriesStart):
            return [self._header(message)]
        if isinstance(message, Frame):
            return [self._image(message)]
        return [[_dumps({"htype": "dseries_end-1.0", "series": message.series})]]

    def _blob(self, htype: str, array: np.ndarray, **extra: Any) -> list[Any]:
        encoding = self.encoding.replace("bs-", f"bs{8 * array.dtype.itemsize}-")
        if encoding == "<":
            blob: Any = memoryview(np.ascontiguousarray(array)).cast("B")
        else:
            blob = self._compressors["lz4<" if encoding == "lz4<" else "bs"](array)
        info = {
            "htype": htype,
            "shape": [array.shape[1], array.shape[0]],
            "type": array.dtype.name,
            "encoding": encoding,
            "size": memoryview(blob).nbytes,
            **extra,
        }
        return [_dumps(info), blob]

    def _header(self, start: SeriesStart) -> list[Any]:
        self._date = time.time()
        detail = "all" if start.mask is not None else "basic"
        config: dict[str, Any] = {
            key: start.meta[name]
            for key, name in DETECTOR_CONFIG_NAMES.items()
            if name in start.meta
        }
        config["data_collection_date"] = datetime.fromtimestamp(self._date, UTC).isoformat()
        if "number_of_images" in start.meta:
            config["nimages"], config["ntrigger"] = start.meta["number_of_images"], 1
        if start.shape is not None:
            config["y_pixels_in_detector"], config["x_pixels_in_detector"] = start.shape
        if start.dtype is not None:
            config["bit_depth_image"] = 8 * np.dtype(start.dtype).itemsize
        parts = [
            _dumps({"htype": "dheader-1.0", "series": start.series, "header_detail": detail}),
            _dumps(config),
        ]
        if start.mask is not None:
            shape = start.mask.shape
            parts += self._blob("dflatfield-1.0", np.ones(shape, np.float32))
            parts += self._blob("dpixelmask-1.0", start.mask.astype(np.uint32))
            parts += self._blob("dcountrate_table-1.0", np.zeros((2, 1000), np.float32))
        known = {*DETECTOR_CONFIG_NAMES.values(), "number_of_images"}
        extra = {k: v for k, v in start.meta.items() if k not in known}
        if extra:  # what the detector does not know travels as the header appendix
            parts.append(_dumps(extra))
        return parts

    def _image(self, frame: Frame) -> list[Any]:
        info, blob = self._blob("dimage_d-1.0", frame.image)
        start = round((frame.timestamp - self._date) * 1e9)
        head = {
            "htype": "dimage-1.0",
            "series": frame.series,
            "frame": frame.frame,
            "hash": hashlib.md5(blob).hexdigest(),
        }
        timing = {"htype": "dconfig-1.0", "start_time": start, "stop_time": start, "real_time": 0}
        return [_dumps(head), info, blob, _dumps(timing)]
