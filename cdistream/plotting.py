"""Figure panels with the product's conventions, for the demo, the live view and the model
card: phase on a cyclic colour map with a colour bar in radians, amplitude with a colour bar.
matplotlib is imported by the caller (any backend)."""

from __future__ import annotations

import numpy as np

from cdistream.physics import remove_ramp

__all__ = ["PHASE_CMAP", "display_phase", "show_amplitude", "show_pattern", "show_phase"]

PHASE_CMAP = "twilight"  # cyclic: -pi and pi look the same, as they are


def _panel(fig, ax, image, title, cmap, vmin=None, vmax=None, label=None):
    shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    if label:
        bar.set_label(label, fontsize=6)
    return shown


def display_phase(obj: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Phase of a complex object for display: its best-fit ramp removed inside the support
    (amplitude above ``threshold`` of the maximum), NaN (blank) outside."""
    amp = np.abs(obj) / max(float(np.abs(obj).max()), 1e-30)
    weight = amp * (amp > threshold)
    return np.where(weight > 0, remove_ramp(np.angle(obj), weight), np.nan)


def show_amplitude(fig, ax, amplitude, title="amplitude"):
    """Amplitude in [0, 1], grey, with its colour bar."""
    return _panel(fig, ax, amplitude, title, "gray", 0, 1, "amplitude")


def show_phase(fig, ax, phase, title="phase"):
    """Phase in radians on a cyclic colour map from -pi to pi, with its colour bar."""
    return _panel(fig, ax, phase, title, PHASE_CMAP, -np.pi, np.pi, "phase (rad)")


def show_pattern(fig, ax, magnitudes, title="measured pattern"):
    """A diffraction pattern as log10 of the intensity, with its colour bar."""
    intensity = np.asarray(magnitudes, float) ** 2
    floor = 1e-6 * max(float(intensity.max()), 1e-30)
    return _panel(fig, ax, np.log10(intensity + floor), title, "viridis", label="log10 I")
