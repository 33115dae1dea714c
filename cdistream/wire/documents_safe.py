"""Make detector metadata fit a Bluesky document: the DECTRIS stream V2 allows any CBOR in
``user_data`` (dates, typed arrays, tags, byte strings, deep nesting), and nothing a detector
sends may stop a run from starting. Values are converted where they can be (dates to ISO
strings, arrays to lists, unknown tags to their repr) or dropped, and each is reported."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "document_safe"]

MAX_DEPTH = 16  # nesting kept; deeper values are dropped
MAX_ITEMS = 4096  # array elements kept as a list; larger arrays are dropped
MAX_BYTES = 256  # byte strings up to this length become hex; longer ones are dropped


def document_safe(value: Any) -> tuple[Any, list[str]]:
    """(a value made of dicts with string keys, lists, str, int, float, bool and None;
    notices naming what was converted or dropped, e.g. "converted user_data.when: datetime")."""
    notices: list[str] = []
    return _safe(value, "", 0, notices), notices


def _drop(path: str, why: str, notices: list[str]) -> None:
    notices.append(f"dropped {path or 'value'}: {why}")


def _safe(value: Any, path: str, depth: int, notices: list[str]) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, np.generic):
        return value.item() if value.dtype.kind in "biuf" else str(value)
    if depth >= MAX_DEPTH:
        _drop(path, f"nested deeper than {MAX_DEPTH}", notices)
        return None
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else str(key)
            if name is not key:
                notices.append(f"converted key {path}.{name}: {type(key).__name__}")
            out[name] = _safe(item, f"{path}.{name}" if path else name, depth + 1, notices)
        return out
    if isinstance(value, dt.datetime | dt.date | dt.time):
        notices.append(f"converted {path}: {type(value).__name__} to ISO 8601")
        return value.isoformat()
    if isinstance(value, np.ndarray):
        if value.size > MAX_ITEMS or value.dtype.kind not in "biuf":
            _drop(path, f"array {value.dtype} {list(value.shape)}", notices)
            return None
        notices.append(f"converted {path}: array {value.dtype} {list(value.shape)} to a list")
        return value.tolist()
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if len(data) > MAX_BYTES:
            _drop(path, f"{len(data)} bytes", notices)
            return None
        notices.append(f"converted {path}: bytes to hex")
        return data.hex()
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(v, f"{path}[{i}]", depth + 1, notices) for i, v in enumerate(value)]
    notices.append(f"converted {path}: {type(value).__name__} to its repr")
    text = repr(value)
    return text if len(text) <= 1024 else text[:1021] + "..."
