"""Motor positions of a scan recorded in a SPEC data file (what 34-ID-C and many APS beamlines
write beside the detector's frames), read with APS' own ``spec2nexus``: one value per point,
so per detector frame of a step scan."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from cdistream.errors import CdistreamError

__all__ = ["SpecError", "ScanPositions", "parse_spec_spec", "scan_positions"]


class SpecError(CdistreamError):
    """A SPEC file, scan or column that is not there."""


class ScanPositions:
    """The scanned motor's name and its position at every point of one scan."""

    def __init__(self, motor: str, positions: np.ndarray, command: str):
        self.motor, self.positions, self.command = motor, positions, command

    def __len__(self) -> int:
        return len(self.positions)


def parse_spec_spec(text: str) -> tuple[str, int, str | None]:
    """``FILE:SCAN`` or ``FILE:SCAN:COLUMN`` -> (file, scan, column or None)."""
    parts = text.rsplit(":", 2)
    try:
        if len(parts) == 3 and not parts[1].isdigit():
            raise ValueError
        if len(parts) == 3:
            return parts[0], int(parts[1]), parts[2]
        return parts[0], int(parts[1]), None
    except (ValueError, IndexError):
        raise SpecError(f"{text!r}: expected FILE:SCAN or FILE:SCAN:COLUMN") from None


def scan_positions(path: str | Path, scan: int, column: str | None = None) -> ScanPositions:
    """The values of ``column`` (default: the scan's first column, the motor it scanned) at
    each point of ``scan`` in the SPEC file at ``path``."""
    from spec2nexus.spec import SpecDataFile

    if not Path(path).is_file():
        raise SpecError(f"{path}: no such file")
    for name in ("spec2nexus", "spec_common"):  # its notes on odd headers
        logging.getLogger(name).setLevel(logging.ERROR)
    notes = io.StringIO()
    with contextlib.redirect_stdout(notes), contextlib.redirect_stderr(notes):  # its chatter
        try:
            spec = SpecDataFile(str(path))
            entry = spec.getScan(scan)
            if entry is None:
                raise SpecError(f"{path}: no scan {scan}")
            entry.interpret()
        except SpecError:
            raise
        except Exception as exc:  # spec2nexus raises many kinds on a foreign file
            raise SpecError(f"{path}: not a readable SPEC file ({exc})") from None
    labels = list(entry.L)
    name = column or (labels[0] if labels else None)
    if name not in entry.data:
        raise SpecError(f"{path} scan {scan}: no column {name!r} (columns: {labels})")
    return ScanPositions(name, np.asarray(entry.data[name], float), str(entry.scanCmd).strip())
