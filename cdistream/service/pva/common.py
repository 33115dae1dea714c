"""PVAccess plumbing shared by the PVA input, the operator outputs and the simulated detector:
loopback-only discovery settings and NTNDArray construction through pvapy.

EPICS discovers channels with UDP broadcasts unless told otherwise. :func:`loopback_environment`
is what every test, benchmark, demo and subprocess of ours runs with; a beamline sets its own
``EPICS_PVA_*`` (see ``docs/scale-out.md``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from cdistream.wire.ntndarray import SCALAR_TYPES

__all__ = ["LOOPBACK_ENV", "loopback_environment", "ntndarray", "pvaccess"]

LOOPBACK_ENV = {
    "EPICS_PVA_AUTO_ADDR_LIST": "NO",
    "EPICS_PVA_ADDR_LIST": "127.0.0.1",
    "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
    "EPICS_PVAS_BEACON_ADDR_LIST": "127.0.0.1",
    "EPICS_CA_AUTO_ADDR_LIST": "NO",
    "EPICS_CA_ADDR_LIST": "127.0.0.1",
}
# the union field and pvData scalar type of each numpy dtype: the decoder's table, reversed
_FIELDS = {dtype: (field, kind) for kind, (field, dtype) in SCALAR_TYPES.items()}


def loopback_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with PVA and CA discovery kept on 127.0.0.1."""
    return {**(os.environ if env is None else env), **LOOPBACK_ENV}


def pvaccess():
    """pvapy's ``pvaccess`` module (imported on first use: only PVA users need it)."""
    try:
        import pvaccess as pva
    except ImportError as exc:  # pvapy is an optional extra
        from cdistream.errors import ConfigError

        raise ConfigError(f"PVA needs pvapy: pip install 'cdistream[pva]' ({exc})") from None
    return pva


def _attribute(pva, name: str, value: Any):
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int | np.integer):
        return pva.NtAttribute(name, pva.PvLong(int(value)))
    if isinstance(value, float | np.floating):
        return pva.NtAttribute(name, pva.PvDouble(float(value)))
    return pva.NtAttribute(name, pva.PvString(str(value)))


def ntndarray(
    image: np.ndarray,
    unique_id: int,
    timestamp: float,
    attributes: Mapping[str, Any] | None = None,
    codec: str = "",
):
    """An ``NtNdArray`` of a 2-D ``image`` as NDPluginPva publishes it: dimension [x, y],
    ``uniqueId``, ``dataTimeStamp``/``timeStamp`` (POSIX seconds), NDAttributes; ``codec``
    ``lz4`` or ``bslz4`` compresses as NDPluginCodec does (bytes in ``ubyteValue``, the
    original scalar type in ``codec.parameters``)."""
    pva = pvaccess()
    image = np.ascontiguousarray(image)
    field, kind = _FIELDS[image.dtype.name]
    nt = pva.NtNdArray()
    if codec:
        from cdistream.wire.compression import compress

        if codec == "lz4":
            blob = np.frombuffer(compress("lz4-block", image), np.uint8)
        elif codec == "bslz4":
            import bitshuffle

            blob = bitshuffle.compress_lz4(image, 0).view(np.uint8)
        else:
            raise ValueError(f"codec {codec!r}: none, lz4 or bslz4")
        nt["value"] = {"ubyteValue": blob}
        nt["codec"] = {"name": codec, "parameters": pva.PvInt(kind)}
        nt["compressedSize"] = int(blob.size)
    else:
        nt["value"] = {field: image.reshape(-1)}
        nt["compressedSize"] = int(image.nbytes)
    nt["uncompressedSize"] = int(image.nbytes)
    rows, cols = image.shape
    nt["dimension"] = [
        pva.PvDimension(cols, 0, cols, 1, False),
        pva.PvDimension(rows, 0, rows, 1, False),
    ]
    nt["uniqueId"] = int(unique_id)
    seconds = int(timestamp)
    stamp = {"secondsPastEpoch": seconds, "nanoseconds": int((timestamp - seconds) * 1e9)}
    nt["dataTimeStamp"] = stamp
    nt["timeStamp"] = stamp
    if attributes:
        nt["attribute"] = [_attribute(pva, k, v) for k, v in attributes.items()]
    return nt
