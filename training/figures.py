"""The model card's figures: reconstructions beside the truth (like the paper's Fig. 3) and the
trust gate (chi2 against IoU). Phase panels use a cyclic colour map with a colour bar in
radians; amplitude panels carry colour bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cdistream.physics import align  # noqa: E402
from cdistream.plotting import display_phase, show_amplitude, show_pattern, show_phase  # noqa: E402

__all__ = ["plot_examples", "plot_gate"]


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
