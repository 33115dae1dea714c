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
    "support_area",
    "phase_mean",
    "phase_std",
    "peak_row",
    "peak_col",
    "latency",
)


class ReconstructionCallback(CallbackBase):
    """Finds the reconstruction fields in each descriptor and filters events on chi2."""

    def __init__(self, max_chi2: float = 0.1):
        super().__init__()
        self.max_chi2 = max_chi2
        self.accepted = 0
        self.skipped = 0
        self._keys: dict[str, dict[str, str]] = {}

    def descriptor(self, doc):
        keys = {}
        for name in doc["data_keys"]:
            for field in FIELDS:
                if name == field or name.endswith("_" + field):
                    keys.setdefault(field, name)
        if "chi2" in keys:
            self._keys[doc["uid"]] = keys
        return doc

    def event(self, doc):
        keys = self._keys.get(doc["descriptor"])
        if keys is None:
            return doc
        data = {field: doc["data"][name] for field, name in keys.items() if name in doc["data"]}
        if not data["chi2"] <= self.max_chi2:  # NaN is not good either
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
