"""Detector payload compression: bitshuffle+LZ4 and LZ4 in the HDF5 filter framing that DECTRIS
streams use, and plain LZ4 blocks (stream V1's ``lz4<``). Decompression goes through the
reference libraries (dectris-compression, lz4); only the framing headers are read here, so that a
hostile size field is refused before anything is allocated."""

from __future__ import annotations

import struct

import lz4.block
import numpy as np
from dectris.compression import decompress as _dectris_decompress

from .messages import DecodeError

__all__ = ["HDF5_HEADER", "Compressor", "compress", "decompress"]

HDF5_HEADER = struct.Struct(">QI")  # uncompressed size in bytes, block size in bytes
_BSLZ4_BLOCK_BYTES = 8192  # bitshuffle's default target block, as the HDF5 filter uses


def decompress(
    algorithm: str,
    blob: bytes | memoryview,
    expected: int,
    elem_size: int,
    series: int | None = None,
    frame: int | None = None,
) -> bytes:
    """The ``expected`` bytes that ``blob`` holds; ``algorithm`` is ``bslz4``, ``lz4`` (both in
    HDF5 framing) or ``lz4-block`` (a bare LZ4 block). Raises :class:`DecodeError` (naming
    ``series`` and ``frame``) with reason ``bad_compressed_size``, ``corrupt_compressed`` or
    ``unknown_encoding`` rather than returning anything else."""
    try:
        return _decompress(algorithm, memoryview(blob), expected, elem_size)
    except DecodeError as exc:
        raise DecodeError(exc.reason, exc.detail, series, frame) from None


def _decompress(algorithm: str, view: memoryview, expected: int, elem_size: int) -> bytes:
    if algorithm == "lz4-block":
        try:
            out = lz4.block.decompress(view, uncompressed_size=expected)
        except Exception as exc:  # lz4 raises LZ4BlockError and ValueError
            raise DecodeError("corrupt_compressed", f"lz4 block: {exc}") from None
    elif algorithm in ("bslz4", "lz4"):
        if view.nbytes < HDF5_HEADER.size:
            raise DecodeError("corrupt_compressed", f"{algorithm}: {view.nbytes} bytes, no header")
        total, _block = HDF5_HEADER.unpack_from(view)
        if total != expected:
            raise DecodeError(
                "bad_compressed_size", f"{algorithm} header says {total} bytes, expected {expected}"
            )
        try:
            out = _dectris_decompress(bytes(view), algorithm, elem_size=elem_size)
        except Exception as exc:  # the C extension raises RuntimeError/ValueError
            raise DecodeError("corrupt_compressed", f"{algorithm}: {exc}") from None
    else:
        raise DecodeError("unknown_encoding", f"compression {algorithm!r}")
    if len(out) != expected:
        raise DecodeError("corrupt_compressed", f"{algorithm}: {len(out)} bytes, not {expected}")
    return out


def compress(algorithm: str, array: np.ndarray) -> bytes:
    """``array`` compressed as a detector would send it (the inverse of :func:`decompress`)."""
    array = np.ascontiguousarray(array)
    if algorithm == "lz4-block":
        return lz4.block.compress(array, store_size=False)
    if algorithm == "bslz4":
        import bitshuffle  # encoder side only (sim_detector, tests)

        block = _BSLZ4_BLOCK_BYTES // array.itemsize
        body = bitshuffle.compress_lz4(array.reshape(-1), block)
        return HDF5_HEADER.pack(array.nbytes, block * array.itemsize) + body.tobytes()
    if algorithm == "lz4":
        # HDF5 LZ4 filter framing with one block: header, then big-endian compressed size + data
        # (a block that does not shrink is stored as it is, as the filter does).
        raw = array.tobytes()
        packed = lz4.block.compress(raw, store_size=False)
        body = packed if len(packed) < len(raw) else raw
        return HDF5_HEADER.pack(len(raw), len(raw)) + struct.pack(">I", len(body)) + body
    raise ValueError(f"unknown compression {algorithm!r}")


class Compressor:
    """:func:`compress` that remembers the last ``size`` arrays it compressed (by identity), so
    that a simulator cycling through pre-rendered frames compresses each only once."""

    def __init__(self, algorithm: str, size: int = 64):
        self.algorithm, self._size = algorithm, size
        self._memo: dict[int, tuple[np.ndarray, bytes]] = {}

    def __call__(self, array: np.ndarray) -> bytes:
        hit = self._memo.get(id(array))
        if hit is not None and hit[0] is array:
            return hit[1]
        blob = compress(self.algorithm, array)
        if len(self._memo) >= self._size:
            self._memo.pop(next(iter(self._memo)))
        self._memo[id(array)] = (array, blob)  # holding the array keeps its id unique
        return blob
