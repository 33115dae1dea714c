"""Evaluate a trained model on the independent test sets (:mod:`training.holdout`): the
networks alone, the networks + 50 refinement iterations, 620 ER/HIO iterations (ours) and
cohere-core's 620 (when installed), per measured condition and per object-size bin, the trust
gate's figures, and the figures of the model card. Every score is ambiguity-invariant.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from cdistream.bench.cohere import cohere_available, cohere_phase_retrieval
from cdistream.inference import Reconstruction, Reconstructor
from cdistream.inference.gate import REFINE_ABOVE, REFINE_ITERATIONS, threshold_catching
from cdistream.inference.result import finish
from cdistream.physics import compare, fit_ramp, phase_retrieval

from . import holdout, realdata
from .card import write_card
from .figures import plot_examples, plot_gate

__all__ = ["BASELINE_CONDITIONS", "evaluate_and_card"]

log = logging.getLogger(__name__)

BASELINE_ITERATIONS = 620
# the conditions on which the iterative methods run too (they are slow: ~1 min a condition
# each, and `make models` stays within 150 minutes); cohere-core on fewer still
BASELINE_CONDITIONS = (
    "noise_free",
    "photons_1e4",
    "photons_1e3",
    "background",
    "coherence_0.7",
    "masked_stripe",
)
COHERE_CONDITIONS = ("noise_free", "photons_1e4", "coherence_0.7")
PTP_BINS = (0, 1, 2, 3, 4, 5, 2 * np.pi + 0.01)  # radians of strain, peak to peak


def _medians(c, chi2: np.ndarray, sel: np.ndarray) -> dict[str, float]:
    return {
        "iou": float(np.median(c.iou[sel])),
        "phase_rmse": float(np.median(c.phase_rmse[sel])),
        "chi2": float(np.median(chi2[sel])),
        "amplitude_error": float(np.median(c.amplitude_error[sel])),
        "count": int(sel.sum()),
    }


def corner_amplitude(amplitude: np.ndarray) -> np.ndarray:
    """Per image, the largest amplitude (of the maximum) in the window's bottom-left 4 x 4
    corner, far from any centred crystal: where networks trained without the out-of-support
    term drew a spurious blob."""
    peak = np.maximum(amplitude.max(axis=(1, 2)), 1e-12)
    return amplitude[:, -4:, :4].max(axis=(1, 2)) / peak


def _score(result: Reconstruction, test: holdout.HoldoutSet, seconds: float) -> dict:
    c = compare(result.complex_object(), test.objects)
    every = np.ones(len(test), bool)
    bins = test.bins()
    out = _medians(c, result.chi2, every)
    out["twin_share"] = float(np.mean(c.twinned))
    out["corner_share"] = float(np.mean(corner_amplitude(result.amplitude) > 0.1))
    out["ms_per_pattern"] = 1e3 * seconds / len(test)
    out["bins"] = {label: _medians(c, result.chi2, bins == label) for label in holdout.BIN_LABELS}
    ptp = np.digitize(test.phase_ptp, PTP_BINS[1:-1])
    out["phase_ptp_bins"] = {
        f"{PTP_BINS[k]:.0f}-{min(PTP_BINS[k + 1], 2 * np.pi):.1f}": _medians(
            c, result.chi2, ptp == k
        )
        for k in range(len(PTP_BINS) - 1)
    }
    out["_iou"], out["_chi2"] = c.iou, result.chi2  # for the gate; dropped before saving
    return out


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _iterative(objects: np.ndarray, measured: np.ndarray, valid: np.ndarray | None):
    amp = np.abs(objects)
    amp = amp / np.maximum(amp.max(axis=(1, 2), keepdims=True), 1e-30)
    return finish(measured, amp, np.angle(objects), valid, fit_ramp(objects, amp * (amp > 0.1)))


def _ours(m: np.ndarray, valid: np.ndarray) -> Reconstruction:
    return _iterative(phase_retrieval(m, BASELINE_ITERATIONS, seed=0, valid=valid), m, valid)


def _cohere(m: np.ndarray, valid: np.ndarray) -> Reconstruction:
    return _iterative(cohere_phase_retrieval(m, seed=0), m, valid)


def _single_ms(fn, patterns: np.ndarray, valid: np.ndarray) -> float:
    times = [_timed(fn, p[None], v[None])[1] for p, v in zip(patterns, valid, strict=True)]
    return 1e3 * float(np.median(times))


# the other test sets: slices of 3D crystals (independent) and the training recipe's fresh seed
EXTRA_BASELINE_CONDITIONS = ("noise_free",)


def _evaluate_set(methods: dict, test: holdout.HoldoutSet, baseline: tuple[str, ...]) -> dict:
    """Every method on every condition of ``test`` (the slow ones on ``baseline`` only)."""
    out: dict = {"test_examples": len(test), "meta": test.meta, "conditions": {}}
    for name in test.magnitudes:
        m, v = test.magnitudes[name], test.valid[name]
        out["conditions"][name] = {}
        for method, fn in methods.items():
            if method != "nn" and name not in baseline:
                continue
            result, seconds = _timed(fn, m, v)
            score = _score(result, test, seconds)
            score.pop("_iou"), score.pop("_chi2")
            out["conditions"][name][method] = score
            log.info("%s / %s / %s: IoU %.3f, phase %.3f rad, chi2 %.4f", test.meta["generator"],
                     name, method, score["iou"], score["phase_rmse"], score["chi2"])
    return out


def evaluate_extra(model_path: Path, sets: dict[str, holdout.HoldoutSet]) -> dict:
    """The networks, the networks + refinement and our ER/HIO on each further test set."""
    rec = Reconstructor.load(model_path)
    rec.warm_up()
    methods = {
        "nn": lambda m, v: rec.reconstruct(m, valid=v),
        "nn_refine": lambda m, v: rec.reconstruct(m, refine=REFINE_ITERATIONS, valid=v),
        "er_hio": _ours,
    }
    return {name: _evaluate_set(methods, test, EXTRA_BASELINE_CONDITIONS)
            for name, test in sets.items()}


def evaluate(model_path: Path, test: holdout.HoldoutSet, out: Path, cohere: str = "auto") -> dict:
    """Measure everything the model card reports; write ``metrics.json`` and the figures."""
    rec = Reconstructor.load(model_path)
    rec.warm_up()
    use_cohere = cohere == "yes" or (cohere == "auto" and cohere_available())
    methods = {
        "nn": lambda m, v: rec.reconstruct(m, valid=v),
        "nn_refine": lambda m, v: rec.reconstruct(m, refine=REFINE_ITERATIONS, valid=v),
        "er_hio": _ours,
    }
    if use_cohere:
        methods["cohere"] = _cohere
    metrics: dict = {
        "test_examples": len(test),
        "test_seed": test.meta["seed"],
        "device": rec.device,
        "precision": rec.precision,
        "conditions": {},
    }
    results = {}
    for name in test.magnitudes:
        m, v = test.magnitudes[name], test.valid[name]
        metrics["conditions"][name] = {}
        for method, fn in methods.items():
            if method != "nn" and name not in BASELINE_CONDITIONS:
                continue
            if method == "cohere" and name not in COHERE_CONDITIONS:
                continue
            result, seconds = _timed(fn, m, v)
            score = _score(result, test, seconds)
            metrics["conditions"][name][method] = score
            results[(name, method)] = result
            log.info("%s / %s: IoU %.3f, phase %.3f rad, chi2 %.4f, %.2f ms/pattern", name,
                     method, score["iou"], score["phase_rmse"], score["chi2"],
                     score["ms_per_pattern"])
    metrics["gate"] = _gate(metrics, rec, test)
    clean = test.magnitudes["noise_free"][:20], test.valid["noise_free"][:20]
    metrics["single_pattern_ms"] = {
        "nn": _single_ms(methods["nn"], *clean),
        "nn_refine": _single_ms(methods["nn_refine"], *clean),
        "er_hio": _single_ms(_ours, *clean),
    }
    if use_cohere:
        metrics["single_pattern_ms"]["cohere"] = metrics["conditions"]["noise_free"]["cohere"][
            "ms_per_pattern"
        ]
    plot_examples(test, results, out / "examples.png")
    plot_gate(metrics["gate"], metrics["conditions"], out / "gate.png")
    for per_method in metrics["conditions"].values():
        for score in per_method.values():
            score.pop("_iou"), score.pop("_chi2")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _gate(metrics: dict, rec: Reconstructor, test: holdout.HoldoutSet) -> dict:
    """How well chi2 ranks bad network reconstructions, pooled over every condition, and what
    the default threshold catches; what refining the flagged frames does to them."""
    iou = np.concatenate([c["nn"]["_iou"] for c in metrics["conditions"].values()])
    chi2 = np.concatenate([c["nn"]["_chi2"] for c in metrics["conditions"].values()])
    bad = iou < 0.7
    flagged = chi2 > REFINE_ABOVE
    gate = {
        "spearman_chi2_vs_1_minus_iou": float(spearmanr(chi2, 1 - iou).statistic),
        "bad_share": float(bad.mean()),
        "threshold_catching_90": threshold_catching(chi2, iou),
        "default_threshold": REFINE_ABOVE,
        "default_catches": float(flagged[bad].mean()) if bad.any() else 1.0,
        "default_flags_share": float(flagged.mean()),
        "good_flagged_share": float(flagged[~bad].mean()) if (~bad).any() else 0.0,
        "chi2_iou_sample": {  # for the figure
            "chi2": chi2[:: max(len(chi2) // 4000, 1)].tolist(),
            "iou": iou[:: max(len(iou) // 4000, 1)].tolist(),
        },
    }
    # refined where flagged, on the conditions every method ran on
    before, after = [], []
    for name in BASELINE_CONDITIONS:
        if name not in metrics["conditions"]:
            continue
        nn, refined = metrics["conditions"][name]["nn"], metrics["conditions"][name]["nn_refine"]
        sel = nn["_chi2"] > REFINE_ABOVE
        before.append(nn["_iou"][sel])
        after.append(refined["_iou"][sel])
    before, after = np.concatenate(before), np.concatenate(after)
    gate["flagged_iou_before_refine"] = float(np.median(before)) if len(before) else None
    gate["flagged_iou_after_refine"] = float(np.median(after)) if len(after) else None
    return gate


def evaluate_and_card(
    model_path: Path,
    test_path: Path,
    out: Path,
    cohere: str = "auto",
    command: str | None = None,
    started: float | None = None,
) -> dict:
    """Build the test sets if missing, evaluate, write metrics, figures and the card."""
    test_path = Path(test_path)
    if not test_path.exists():
        from .__main__ import DEFAULTS

        log.info("building the independent test sets at %s", test_path)
        holdout.save(holdout.build(DEFAULTS["test_count"], DEFAULTS["test_seed"]), test_path)
    test = holdout.load(test_path)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate(model_path, test, out, cohere)
    metrics["sets"] = evaluate_extra(model_path, _extra_sets(test_path.parent))
    scan = realdata.default_scan()
    if scan.is_dir():
        metrics["real"] = realdata.evaluate_scan(model_path, scan, REFINE_ITERATIONS,
                                                 out / "real.png")
        if cohere_available():
            metrics["real"]["volume"] = realdata.evaluate_volume(model_path, scan)
        from .adaptation import evaluate_adaptation

        metrics["adaptation"] = evaluate_adaptation(scan, model_path)
    else:
        log.warning("no real scan at %s: the card's real-data section stays empty", scan)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    total = None if started is None else time.monotonic() - started
    write_card(out, model_path, command, test_path, metrics, total)
    return metrics


def _extra_sets(workdir: Path) -> dict[str, holdout.HoldoutSet]:
    """The slices of 3D crystals (independent) and the training recipe's fresh seed, built
    once into ``workdir``."""
    from .__main__ import DEFAULTS

    count, seed = DEFAULTS["test_count"], DEFAULTS["test_seed"]
    builders = {"slices_3d": holdout.build_3d, "training_recipe": holdout.build_recipe}
    sets = {}
    for name, build in builders.items():
        path = Path(workdir) / f"{name}_{count}_seed{seed}.h5"
        if not path.exists():
            log.info("building the %s test set at %s", name, path)
            holdout.save(build(count, seed), path)
        sets[name] = holdout.load(path)
    return sets
