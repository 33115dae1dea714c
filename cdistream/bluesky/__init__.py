"""Bluesky integration: an ophyd device on the feedback channel, callbacks for reconstruction
events, and a threaded RemoteDispatcher for consuming documents outside a RunEngine."""

from .callbacks import ReconstructionCallback, ReconstructionImage, ReconstructionTable
from .consumer import RemoteConsumer
from .monitor import FrameRejected, ReconstructionMonitor, ReconstructionTimeout

__all__ = [
    "FrameRejected",
    "ReconstructionCallback",
    "ReconstructionImage",
    "ReconstructionMonitor",
    "ReconstructionTable",
    "ReconstructionTimeout",
    "RemoteConsumer",
]
