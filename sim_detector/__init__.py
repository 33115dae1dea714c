"""A simulated pixel detector that streams Bragg CDI frames over ZeroMQ as a real one does."""

from .device import ReplayDetector, SimDetector
from .frames import DetectorModel
from .publisher import DetectorPublisher, SeriesReport, scenario_frames
from .scenario import SCENARIOS, FrameTruth, Scenario

__all__ = [
    "SCENARIOS",
    "DetectorModel",
    "DetectorPublisher",
    "FrameTruth",
    "Scenario",
    "ReplayDetector",
    "SeriesReport",
    "SimDetector",
    "scenario_frames",
]
