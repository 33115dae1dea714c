"""EPICS PVAccess, in a room of its own: the detector input (``receiver``: areaDetector's
NDPluginPva), the live outputs for Phoebus (``output``), and reconstruction workers in
``pvapy-hpc-consumer`` processes (``pool`` and ``worker``, their results put back in frame
order by ``sequencer``). PvaPy is imported only when one of them is used."""

from .common import LOOPBACK_ENV, loopback_environment, ntndarray, pvaccess

__all__ = ["LOOPBACK_ENV", "loopback_environment", "ntndarray", "pvaccess"]
