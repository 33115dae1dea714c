"""msgpack with numpy arrays, safe for data from the network.

Arrays travel in the map layout that ``msgpack_numpy`` writes (``nd``, ``type``, ``kind``,
``shape``, ``data``), so consumers that already use it can read our documents. Decoding is
our own because ``msgpack_numpy`` unpickles object arrays: here only plain numeric and bool
dtypes are accepted, and nothing is ever unpickled.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = ["UnsafePayloadError", "packb", "unpackb"]

_ALLOWED_KINDS = frozenset("biufc")
_MAX_ARRAY_BYTES = 256 * 1024 * 1024


class UnsafePayloadError(ValueError):
    """A message asked for something we refuse to build (objects, absurd sizes)."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"cannot serialise arrays of dtype {obj.dtype}")
        data = np.ascontiguousarray(obj)
        return {
            b"nd": True,
            b"type": data.dtype.str,
            b"kind": b"",
            b"shape": list(data.shape),
            b"data": data.tobytes(),
        }
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _decode(obj: dict) -> Any:
    if obj.get(b"nd") is not True:
        return obj
    if obj.get(b"kind", b"") != b"":
        raise UnsafePayloadError("refusing an object or structured array")
    dtype = np.dtype(obj[b"type"])
    if dtype.kind not in _ALLOWED_KINDS:
        raise UnsafePayloadError(f"refusing dtype {dtype}")
    shape = tuple(int(s) for s in obj[b"shape"])
    data = obj[b"data"]
    if len(data) > _MAX_ARRAY_BYTES or len(data) != dtype.itemsize * int(np.prod(shape)):
        raise UnsafePayloadError(f"array of {len(data)} bytes does not fit {shape} {dtype}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def packb(obj: Any) -> bytes:
    """Serialise a document (dicts, lists, scalars, numpy arrays) to msgpack bytes."""
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Deserialise what :func:`packb` wrote; pass as ``RemoteDispatcher(deserializer=...)``."""
    return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)
