"""Callbacks for reconstruction events, from the service's own runs (keys ``chi2``, ``phase``
...) or from a plan that reads a ReconstructionMonitor (keys ``recon_chi2`` ...).

Derive from :class:`ReconstructionCallback` and override :meth:`reconstruction`; results whose
chi2 is above ``max_chi2`` never reach it (they are counted in ``skipped``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bluesky.callbacks.core import CallbackBase

__all__ = ["ReconstructionCallback", "ReconstructionImage", "ReconstructionTable"]

log = logging.getLogger(__name__)
FIELDS = (
    "frame",
    "chi2",
    "amplitude",
    "phase",
    "support",
    "support_area",
    "phase_mean",
    "phase_std",
    "peak_row",
    "peak_col",
    "latency",
)


class ReconstructionCallback(CallbackBase):
    """Finds the reconstruction fields in each descriptor (or, joining a run in progress, in
    the first event of a stream) and filters events on chi2; malformed events are counted in
    ``ignored``, never raised."""

    def __init__(self, max_chi2: float = 0.1):
        super().__init__()
        self.max_chi2 = max_chi2
        self.accepted = 0
        self.skipped = 0
        self.ignored = 0  # malformed or foreign events
        self._keys: dict[str, dict[str, str]] = {}

    @staticmethod
    def _fields(names) -> dict[str, str]:
        keys: dict[str, str] = {}
        for name in names:
            for field in FIELDS:
                if name == field or name.endswith("_" + field):
                    keys.setdefault(field, name)
        return keys if "chi2" in keys and "amplitude" in keys else {}

    def descriptor(self, doc):
        self._keys[doc["uid"]] = self._fields(doc["data_keys"])
        return doc

    def event(self, doc):
        try:
            descriptor, values = doc["descriptor"], doc["data"]
            if descriptor not in self._keys:  # joined mid-run: learn the fields from the event
                self._keys[descriptor] = self._fields(values)
            keys = self._keys[descriptor]
            if not keys:
                return doc
            data = {field: values[name] for field, name in keys.items() if name in values}
            chi2 = float(data["chi2"])
        except Exception as exc:  # a malformed or foreign event: count it, never raise
            self.ignored += 1
            log.warning("%s ignored an event: %r", type(self).__name__, exc)
            return doc
        if not chi2 <= self.max_chi2:  # NaN is not good either
            self.skipped += 1
            return doc
        self.accepted += 1
        self.reconstruction(data)
        return doc

    def reconstruction(self, data: dict) -> None:
        """Called once per accepted reconstruction with the fields found (see FIELDS)."""


class ReconstructionTable(ReconstructionCallback):
    """A live table of the key numbers, one row per accepted reconstruction."""

    COLUMNS = (
        ("frame", "{:>7d}"),
        ("chi2", "{:>8.4f}"),
        ("peak_row", "{:>8d}"),
        ("peak_col", "{:>8d}"),
        ("support_area", "{:>8d}"),
        ("phase_std", "{:>9.3f}"),
    )

    def __init__(self, max_chi2: float = 0.1, out: Callable[[str], None] = log.info):
        super().__init__(max_chi2)
        self.out = out
        self.rows: list[str] = []

    def start(self, doc):
        self.out(" ".join(f"{name:>{len(fmt.format(0))}}" for name, fmt in self.COLUMNS))
        return super().start(doc)

    def reconstruction(self, data: dict) -> None:
        cells = []
        for name, fmt in self.COLUMNS:
            value = data.get(name)
            cells.append(
                " " * len(fmt.format(0))
                if value is None
                else fmt.format(int(value) if "d}" in fmt else float(value))
            )
        row = " ".join(cells)
        self.rows.append(row)
        self.out(row)


class ReconstructionImage(ReconstructionCallback):
    """A live matplotlib figure of the latest accepted amplitude and phase; works off-screen
    (``save`` writes a PNG) and in an interactive session."""

    def __init__(self, max_chi2: float = 0.1, figure=None):
        super().__init__(max_chi2)
        import matplotlib.pyplot as plt

        self.figure = figure or plt.figure(figsize=(7, 3.2))
        self._axes = self.figure.subplots(1, 2)
        blank = np.zeros((32, 32))
        self._amp = self._axes[0].imshow(blank, cmap="gray", vmin=0, vmax=1)
        self._phase = self._axes[1].imshow(blank, cmap="twilight_shifted", vmin=-np.pi, vmax=np.pi)
        self.figure.colorbar(self._phase, ax=self._axes[1], label="phase (rad)")
        self._axes[0].set_title("amplitude")
        self._axes[1].set_title("phase")

    def reconstruction(self, data: dict) -> None:
        self._amp.set_data(np.asarray(data["amplitude"]))
        self._phase.set_data(np.asarray(data["phase"]))
        self.figure.suptitle(f"frame {data.get('frame')}  chi2 {float(data['chi2']):.4f}")
        self.figure.canvas.draw_idle()

    def save(self, path: str | Path) -> Path:
        self.figure.savefig(path, dpi=100)
        return Path(path)
