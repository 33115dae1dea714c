"""Evaluate a trained model on a held-out test set: ambiguity-invariant metrics at several
photon counts, the network-seeded refinement against the ER/HIO baseline, and the paper's
figures (examples like its Fig. 3, the chi2 histogram with best and worst cases like Figs. 4-5).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cdistream.inference import Reconstruction, Reconstructor  # noqa: E402
from cdistream.inference.result import finish  # noqa: E402
from cdistream.physics import (  # noqa: E402
    align,
    compare,
    phase_retrieval,
    poisson_magnitudes,
    predicted_intensity,
)

from .dataset import Dataset  # noqa: E402

__all__ = ["PHOTON_LEVELS", "evaluate"]

log = logging.getLogger(__name__)
PHOTON_LEVELS = (None, 1e5, 1e4, 1e3)  # counts in the brightest pixel; None = noise-free
REFINE = 50
BASELINE_ITERATIONS = 620


def _scores(result: Reconstruction, truth: np.ndarray, seconds: float) -> dict[str, float]:
    scores = compare(result.complex_object(), truth).medians()
    scores["chi2"] = float(np.median(result.chi2))
    scores["ms_per_pattern"] = 1e3 * seconds / len(result)
    return scores


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _single_pattern_ms(fn, patterns: np.ndarray) -> float:
    """Median wall time of ``fn`` on one pattern at a time (the streaming case)."""
    times = [_timed(fn, p[None])[1] for p in patterns]
    return 1e3 * float(np.median(times))


def evaluate(model_path: Path, test: Dataset, out: Path, seed: int = 0) -> dict:
    """Measure everything the model card reports and write ``metrics.json`` and figures."""
    out.mkdir(parents=True, exist_ok=True)
    rec = Reconstructor.load(model_path)
    rec.warm_up()
    truth = test.objects()
    rng = np.random.default_rng(seed)
    metrics: dict = {"test_examples": len(test), "test_seed": test.meta["seed"], "noise": {}}

    for photons in PHOTON_LEVELS:
        m = (
            test.magnitudes
            if photons is None
            else poisson_magnitudes(test.magnitudes, photons, rng)
        )
        result, seconds = _timed(rec.reconstruct, m)
        key = "noise_free" if photons is None else f"photons_{photons:.0e}"
        metrics["noise"][key] = _scores(result, truth, seconds)
        log.info("%s: %s", key, metrics["noise"][key])
        if photons is None:
            nn_clean = result

    if rec.precision != "float32":  # the same weights in float32, for comparison
        exact = Reconstructor.load(model_path, precision="float32")
        exact.warm_up()
        result, seconds = _timed(exact.reconstruct, test.magnitudes)
        metrics["noise_free_float32"] = _scores(result, truth, seconds)

    refined, t_refine = _timed(rec.reconstruct, test.magnitudes, refine=REFINE)

    def baseline(m: np.ndarray) -> Reconstruction:  # same output conventions as the network
        obj = phase_retrieval(m, BASELINE_ITERATIONS, seed=seed)
        return finish(m, np.abs(obj), np.angle(obj))

    base_result, t_base = _timed(baseline, test.magnitudes)
    few = test.magnitudes[:20]
    metrics["refine"] = {
        "iterations": REFINE,
        "nn_plus_refine": _scores(refined, truth, t_refine),
        "er_hio_random_start": _scores(base_result, truth, t_base),
        "single_pattern_ms": {
            "nn": _single_pattern_ms(rec.reconstruct, few),
            "nn_plus_refine": _single_pattern_ms(lambda p: rec.reconstruct(p, refine=REFINE), few),
            "er_hio_620": _single_pattern_ms(baseline, few),
        },
    }
    r = metrics["refine"]
    r["speedup_batched"] = t_base / t_refine
    r["speedup_single"] = (
        r["single_pattern_ms"]["er_hio_620"] / r["single_pattern_ms"]["nn_plus_refine"]
    )
    log.info("refine: %s", json.dumps(r))
    metrics["device"] = rec.device
    metrics["precision"] = rec.precision

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_examples(test, nn_clean, base_result, out / "examples.png")
    plot_chi2(test, nn_clean, out / "chi2.png")
    return metrics


def _show(ax, image, title, cmap="gray", vmin=None, vmax=None):
    ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_examples(test: Dataset, nn: Reconstruction, base: Reconstruction, path: Path, k: int = 6):
    """Fig. 3 of the paper: input, true and predicted structure and phase, ER/HIO result."""
    truth = test.objects()[:k]
    nn_aligned, _ = align(nn.complex_object()[:k], truth)
    base_aligned, _ = align(base.complex_object()[:k], truth)
    rows = [
        "input |F| (log)",
        "true amplitude",
        "sCDI amplitude",
        "true phase",
        "pCDI phase",
        "ER/HIO amplitude",
        "ER/HIO phase",
    ]
    fig, axes = plt.subplots(len(rows), k, figsize=(1.6 * k, 1.6 * len(rows)))
    for j in range(k):
        support = np.abs(truth[j]) > 0.1
        cols = [
            (np.log10(test.magnitudes[j] + 1e-3 * test.magnitudes[j].max()), "viridis", None, None),
            (np.abs(truth[j]), "gray", 0, 1),
            (np.abs(nn_aligned[j]), "gray", 0, 1),
            (np.where(support, np.angle(truth[j]), 0), "twilight_shifted", -np.pi, np.pi),
            (
                np.where(np.abs(nn_aligned[j]) > 0.1, np.angle(nn_aligned[j]), 0),
                "twilight_shifted",
                -np.pi,
                np.pi,
            ),
            (np.abs(base_aligned[j]) / np.abs(base_aligned[j]).max(), "gray", 0, 1),
            (
                np.where(
                    np.abs(base_aligned[j]) > 0.1 * np.abs(base_aligned[j]).max(),
                    np.angle(base_aligned[j]),
                    0,
                ),
                "twilight_shifted",
                -np.pi,
                np.pi,
            ),
        ]
        for i, (img, cmap, lo, hi) in enumerate(cols):
            _show(axes[i, j], img, rows[i] if j == 0 else "", cmap, lo, hi)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_chi2(test: Dataset, nn: Reconstruction, path: Path, k: int = 5):
    """Figs. 4-5 of the paper: chi2 histogram, the best and the worst predictions."""
    order = np.argsort(nn.chi2)
    picks = {"best": order[:k], "worst": order[-k:][::-1]}
    fig = plt.figure(figsize=(2.0 * k + 3, 9))
    grid = fig.add_gridspec(6, k + 1)
    ax = fig.add_subplot(grid[:, 0])
    ax.hist(nn.chi2, bins=50, color="steelblue")
    ax.set_xlabel("chi2")
    ax.set_ylabel("test patterns")
    ax.set_title(f"median chi2 {np.median(nn.chi2):.3f}", fontsize=8)
    truth = test.objects()
    for row0, (label, idx) in zip((0, 3), picks.items(), strict=True):
        aligned, _ = align(nn.complex_object()[idx], truth[idx])
        pred_i = predicted_intensity(nn.amplitude[idx], nn.phase[idx])
        for j, i in enumerate(idx):
            _show(
                fig.add_subplot(grid[row0, j + 1]),
                np.log10(test.magnitudes[i] ** 2 + 1e-6),
                f"{label}: chi2 {nn.chi2[i]:.3f}",
                "viridis",
            )
            _show(
                fig.add_subplot(grid[row0 + 1, j + 1]),
                np.log10(pred_i[j] + 1e-6),
                "predicted I",
                "viridis",
            )
            both = np.concatenate([np.abs(truth[i]), np.abs(aligned[j])], axis=1)
            _show(fig.add_subplot(grid[row0 + 2, j + 1]), both, "true | predicted", "gray", 0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
