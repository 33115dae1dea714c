"""The detector stream formats cdistream reads, by name, and ``auto``: recognise the format from
the first message and stick to it. Every decoder turns one multipart ZeroMQ message into zero or
more internal messages (:mod:`cdistream.wire.messages`); every encoder does the reverse."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import adzmq, eiger_v1, eiger_v2, native
from .messages import DecodeError, Message

__all__ = [
    "DEFAULT_SOCKET",
    "FORMATS",
    "AutoDecoder",
    "Decoder",
    "Encoder",
    "make_decoder",
    "make_encoder",
    "sniff",
]

log = logging.getLogger(__name__)


class Decoder(Protocol):
    name: str

    def decode(self, parts: Sequence[Any]) -> list[Message]: ...


class Encoder(Protocol):
    name: str

    def encode(self, message: Message) -> list[list[Any]]: ...


_DECODERS: dict[str, Callable[..., Decoder]] = {
    native.Decoder.name: native.Decoder,
    eiger_v1.NAME: eiger_v1.Decoder,
    eiger_v2.NAME: eiger_v2.Decoder,
    adzmq.NAME: adzmq.Decoder,
}
FORMATS = (*_DECODERS, "auto")
# the socket each format's sender uses: DECTRIS detectors PUSH, ADZMQ and cdistream PUBlish
DEFAULT_SOCKET = {
    "native": "sub",
    "eiger-v1": "pull",
    "eiger-v2": "pull",
    "adzmq": "sub",
    "auto": "sub",
}


def make_decoder(name: str, channel: str | None = None) -> Decoder:
    """A fresh decoder for format ``name``; ``channel`` picks the stream V2 channel."""
    if name == "auto":
        return AutoDecoder(channel)
    if name == eiger_v2.NAME:
        return eiger_v2.Decoder(channel)
    if name not in _DECODERS:
        raise ValueError(f"unknown format {name!r}; choose from {FORMATS}")
    return _DECODERS[name]()


def make_encoder(name: str, compression: str | None = None) -> Encoder:
    """An encoder for format ``name``; ``compression`` (``lz4``, ``bslz4`` or None) applies to
    the DECTRIS formats, which compress with bitshuffle+LZ4 unless told otherwise."""
    if name == eiger_v1.NAME:
        return eiger_v1.Encoder({None: "<", "none": "<", "lz4": "lz4<"}.get(compression, "bs-lz4<"))
    if name == eiger_v2.NAME:
        return eiger_v2.Encoder(None if compression in (None, "none") else compression)
    if name == adzmq.NAME:
        return adzmq.Encoder()
    if name == native.Encoder.name:
        return native.Encoder()
    raise ValueError(f"unknown format {name!r}")


def sniff(parts: Sequence[Any]) -> str | None:
    """The format one message is in, or None when it is none of them."""
    if not parts:
        return None
    first = bytes(memoryview(parts[0])[:4096])
    if not first:
        return None
    lead = first[0]
    if 0x80 <= lead <= 0x8F or lead in (0xDE, 0xDF):  # a msgpack map
        return native.Decoder.name
    if first.startswith(eiger_v2.SELF_DESCRIBED) or (len(parts) == 1 and 0xA0 <= lead <= 0xBB):
        return eiger_v2.NAME  # a CBOR map, alone in its message
    if first.lstrip()[:1] == b"{":
        try:
            htype = json.loads(bytes(memoryview(parts[0]))).get("htype")
        except Exception:  # not JSON, not an object, or nested too deep (RecursionError)
            return None
        if htype in (adzmq.HTYPE, [adzmq.HTYPE]):
            return adzmq.NAME
        if isinstance(htype, str) and htype.startswith(("dheader-", "dimage-", "dseries_end-")):
            return eiger_v1.NAME
    return None


def describe(parts: Sequence[Any]) -> str:
    """What a message looks like, for an error that says what was seen."""
    sizes = [memoryview(p).nbytes for p in parts]
    head = bytes(memoryview(parts[0])[:48]) if parts else b""
    return f"{len(parts)} part(s) of {sizes} bytes, starting {head!r}"


class AutoDecoder:
    """Recognises the format from the first message it understands, then decodes with it."""

    def __init__(self, channel: str | None = None):
        self._channel = channel
        self._decoder: Decoder | None = None

    @property
    def name(self) -> str:
        return self._decoder.name if self._decoder else "auto"

    def decode(self, parts: Sequence[Any]) -> list[Message]:
        if self._decoder is None:
            name = sniff(parts)
            if name is None:
                raise DecodeError(
                    "unrecognised_format",
                    f"not native, eiger-v1, eiger-v2 or adzmq: {describe(parts)}",
                )
            log.info("input recognised as %s", name)
            self._decoder = make_decoder(name, self._channel)
        return self._decoder.decode(parts)
