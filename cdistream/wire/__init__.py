"""Wire formats: detector streams in, msgpack documents out."""

from . import native
from .messages import DecodeError, Frame, Message, SeriesEnd, SeriesStart
from .serialization import UnsafePayloadError, packb, unpackb

__all__ = [
    "DecodeError",
    "Frame",
    "Message",
    "SeriesEnd",
    "SeriesStart",
    "UnsafePayloadError",
    "native",
    "packb",
    "unpackb",
]
