"""Wire formats: detector streams in, msgpack documents out."""

from . import adzmq, eiger_v1, eiger_v2, formats, native
from .messages import DecodeError, Frame, Message, SeriesEnd, SeriesStart
from .serialization import UnsafePayloadError, packb, unpackb

__all__ = [
    "DecodeError",
    "Frame",
    "Message",
    "SeriesEnd",
    "SeriesStart",
    "UnsafePayloadError",
    "adzmq",
    "eiger_v1",
    "eiger_v2",
    "formats",
    "native",
    "packb",
    "unpackb",
]
