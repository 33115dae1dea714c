"""The model card's figures: reconstructions beside the truth (like the paper's Fig. 3) and the
trust gate (chi2 against IoU). Phase panels use a cyclic colour map with a colour bar in
radians; amplitude panels carry colour bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cdistream.physics import align, centre  # noqa: E402
from cdistream.plotting import display_phase, show_amplitude, show_pattern, show_phase  # noqa: E402

__all__ = ["plot_examples", "plot_gate", "plot_real"]


def plot_examples(test, results: dict, path: Path, condition: str = "noise_free") -> Path:
    """Input, truth, networks, ER/HIO for one example per size bin (and one more)."""
    bins = test.bins()
    picks = [int(np.flatnonzero(bins == b)[0]) for b in dict.fromkeys(bins) if (bins == b).any()]
    picks = sorted(picks)[:6]
    truth = test.objects[picks]
    methods = [("nn", "sCDI/pCDI"), ("er_hio", "ER/HIO 620")]
    aligned = {
        key: align(results[(condition, key)].complex_object()[picks], truth)[0]
        for key, _ in methods
        if (condition, key) in results
    }
    rows = 2 + 2 * len(aligned) + 1
    fig, axes = plt.subplots(rows, len(picks), figsize=(2.1 * len(picks), 1.75 * rows))
    for j, k in enumerate(picks):
        m = test.magnitudes[condition][k]
        show_pattern(fig, axes[0, j], m, f"input, {test.extent[k]:.0f} px across")
        show_amplitude(fig, axes[1, j], np.abs(truth[j]), "true amplitude")
        show_phase(fig, axes[2, j], display_phase(truth[j]), "true phase")
        row = 3
        for key, label in methods:
            if key not in aligned:
                continue
            obj = aligned[key][j]
            amp = np.abs(obj) / max(np.abs(obj).max(), 1e-30)
            show_amplitude(fig, axes[row, j], amp, f"{label} amplitude")
            show_phase(fig, axes[row + 1, j], display_phase(obj), f"{label} phase")
            row += 2
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gate(gate: dict, conditions: dict, path: Path) -> Path:
    """chi2 against IoU for the networks' reconstructions, with the default threshold."""
    chi2 = np.asarray(gate["chi2_iou_sample"]["chi2"])
    iou = np.asarray(gate["chi2_iou_sample"]["iou"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bad = iou < 0.7
    left.scatter(chi2[~bad], iou[~bad], s=3, alpha=0.4, label="IoU >= 0.7")
    left.scatter(chi2[bad], iou[bad], s=3, alpha=0.6, color="crimson", label="IoU < 0.7")
    left.axvline(gate["default_threshold"], color="k", ls="--",
                 label=f"refine above {gate['default_threshold']:g}")
    left.axhline(0.7, color="gray", lw=0.5)
    left.set_xscale("log")
    left.set_xlabel("chi2 (reciprocal-space misfit)")
    left.set_ylabel("support IoU against the truth")
    left.set_title(f"Spearman(chi2, 1 - IoU) = {gate['spearman_chi2_vs_1_minus_iou']:.2f};"
                   f" catches {gate['default_catches']:.0%} of IoU < 0.7", fontsize=8)
    left.legend(fontsize=7)
    names = list(conditions)
    width = 0.8 / 4
    for i, method in enumerate(("nn", "nn_refine", "er_hio", "cohere")):
        values = [conditions[n].get(method, {}).get("iou", np.nan) for n in names]
        right.bar(np.arange(len(names)) + i * width, values, width, label=method)
    right.set_xticks(np.arange(len(names)) + 1.5 * width)
    right.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    right.set_ylabel("median support IoU")
    right.set_ylim(0, 1)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_REAL_LABELS = {"nn": "networks", "nn_refine": "networks + refine", "er_hio": "ER/HIO best of 4",
                "cohere": "cohere-core best of 4"}


def plot_real(magnitudes: np.ndarray, frames: np.ndarray, objects: dict, path: Path,
              shown: int = 6, crop: int = 7) -> Path:
    """The real scan: per shown frame the measured pattern, then amplitude and phase of each
    method, all registered (twin, shift, global phase) on ER/HIO's, the window's centre."""
    picks = np.linspace(0, len(frames) - 1, min(shown, len(frames))).round().astype(int)
    reference = centre(objects.get("er_hio", next(iter(objects.values())))[picks])
    rows = 1 + 2 * len(objects)
    fig, axes = plt.subplots(rows, len(picks), figsize=(2.1 * len(picks), 1.75 * rows),
                             squeeze=False)
    n = magnitudes.shape[-1]
    view = slice(crop, n - crop)
    for j, k in enumerate(picks):
        show_pattern(fig, axes[0, j], magnitudes[k], f"frame {frames[k]}")
    for i, (name, obj) in enumerate(objects.items()):
        aligned = align(obj[picks], reference)[0]
        for j in range(len(picks)):
            o = aligned[j]
            amp = np.abs(o) / max(float(np.abs(o).max()), 1e-30)
            label = _REAL_LABELS.get(name, name)
            show_amplitude(fig, axes[1 + 2 * i, j], amp[view, view], f"{label}")
            show_phase(fig, axes[2 + 2 * i, j], display_phase(o)[view, view], f"{label} phase")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
