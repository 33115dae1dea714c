"""The checks every detector-stream decoder makes, in one place: a JSON part that must be an
object, a required field of a given type, a 2-D shape, and a frame size below the ceiling.
Each failure is a :class:`DecodeError` that names the frame when the caller knows it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .messages import DecodeError

__all__ = ["MAX_FRAME_BYTES", "image_bytes", "image_shape", "json_object", "required"]

MAX_FRAME_BYTES = 256 * 1024 * 1024


def json_object(part: Any, what: str, series: int | None = None, frame: int | None = None) -> dict:
    """A message part that must hold a JSON object."""
    try:
        value = json.loads(bytes(memoryview(part)))
    except RecursionError:  # a nesting bomb: json recurses once per level
        raise DecodeError("malformed", f"{what} is nested too deep", series, frame) from None
    except Exception as exc:  # UnicodeDecodeError, JSONDecodeError, TypeError
        raise DecodeError("malformed", f"{what} is not JSON ({exc})", series, frame) from None
    if not isinstance(value, dict):
        raise DecodeError("malformed", f"{what} is not a JSON object", series, frame)
    return value


def required(
    header: Mapping,
    name: str,
    kind: type | tuple[type, ...],
    series: int | None = None,
    frame: int | None = None,
) -> Any:
    """``header[name]``, which must be present (not null) and of ``kind`` (never a bool)."""
    value = header.get(name)
    if value is None:
        raise DecodeError("missing_field", f"no {name!r}", series, frame)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DecodeError("wrong_type", f"{name!r} is {type(value).__name__}", series, frame)
    return value


def image_shape(dims: Any, series: int | None = None, frame: int | None = None) -> tuple[int, int]:
    """Two positive integers of at most 65536, as (first, second) in the order given."""
    if not (  # written out, not a generator: this runs for every frame
        isinstance(dims, (list, tuple))  # noqa: UP038
        and len(dims) == 2
        and isinstance(dims[0], int) and not isinstance(dims[0], bool) and 0 < dims[0] <= 65536
        and isinstance(dims[1], int) and not isinstance(dims[1], bool) and 0 < dims[1] <= 65536
    ):
        raise DecodeError("bad_shape", f"shape {dims!r} is not 2-D", series, frame)
    return dims[0], dims[1]


def image_bytes(
    shape: tuple[int, ...], dtype: np.dtype, series: int | None = None, frame: int | None = None
) -> int:
    """Bytes of an image of ``shape`` and ``dtype``, refused above :data:`MAX_FRAME_BYTES`
    before anything of that size is allocated."""
    size = math.prod(shape) * dtype.itemsize  # Python ints: no overflow, no numpy call
    if size > MAX_FRAME_BYTES:
        raise DecodeError(
            "oversized", f"{list(shape)} {dtype.name} exceeds {MAX_FRAME_BYTES}", series, frame
        )
    return size
