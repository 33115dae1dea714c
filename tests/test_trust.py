"""The trust gate (chi2 threshold, refinement within a time budget) and the registration that
keeps one orientation through a series; on real arrays and a real (tiny) network."""

import numpy as np

from cdistream.inference.gate import TrustGate, threshold_catching
from cdistream.inference.registration import SeriesRegistration
from cdistream.inference.result import Reconstruction, finish
from cdistream.physics import compare, diffraction_magnitudes, twin
from sim_detector.crystals import CrystalRecipe, crystals


def test_threshold_catches_the_asked_share_of_bad_reconstructions():
    rng = np.random.default_rng(0)
    iou = rng.random(2000)
    chi2 = (1 - iou) * rng.lognormal(0, 0.5, 2000)  # worse images misfit more, noisily
    threshold = threshold_catching(chi2, iou, share=0.9)
    bad = iou < 0.7
    assert (chi2[bad] > threshold).mean() >= 0.9
    assert (chi2[bad] > threshold * 1.2).mean() < 0.9, "the largest such threshold"


def _series(frames: int, recipe: CrystalRecipe, seed: int = 0) -> np.ndarray:
    """A crystal whose strain grows from almost nothing: early frames are nearly
    centro-symmetric, so a single pattern cannot tell them from their twins."""
    base = crystals(1, seed, recipe)[0].obj
    amp, phase = np.abs(base), np.angle(base)
    return np.stack([amp * np.exp(1j * phase * s) for s in np.linspace(0.02, 1, frames)])


def test_registration_keeps_one_orientation_through_a_series():
    truth = _series(60, CrystalRecipe(families=("ellipse",), min_extent=9, max_extent=12))
    rng = np.random.default_rng(1)
    flipped = rng.random(60) < 0.5  # the networks pick either twin, anywhere in the window
    shown = np.stack([twin(t) if f else t for t, f in zip(truth, flipped, strict=True)])
    shown = np.stack([np.roll(s, tuple(rng.integers(-3, 4, 2)), (0, 1)) for s in shown])
    shown = shown * np.exp(1j * rng.uniform(-3, 3, (60, 1, 1)))
    raw = finish(diffraction_magnitudes(truth), np.abs(shown), np.angle(shown))
    registration = SeriesRegistration()
    batches = [registration.register(raw.select(slice(k, k + 8))) for k in range(0, 60, 8)]
    published = Reconstruction.concatenate(batches)
    twinned = compare(published.complex_object(), truth).twinned
    assert np.count_nonzero(np.diff(twinned.astype(int))) <= 1, "at most one flip"
    obj = published.complex_object()
    steps = np.angle(np.sum(obj[1:] * np.conj(obj[:-1]), axis=(1, 2)))
    assert np.abs(steps).max() < 0.3, "the global phase stays continuous from frame to frame"
    registration.reset()
    first = registration.register(raw.select(slice(0, 1)))
    np.testing.assert_allclose(first.amplitude, raw.amplitude[:1], atol=1e-6)


def test_gate_refines_the_worst_frames_first_within_its_budget(tiny_reconstructor):
    truth = np.stack([c.obj for c in crystals(12, 3)])
    m = diffraction_magnitudes(truth)
    raw = tiny_reconstructor.predict(m)
    result = finish(m, *raw)  # an untrained network: every frame misfits
    gate = TrustGate(threshold=1e-3, iterations=20)
    everything = gate.apply(m, None, raw, result, budget_s=60.0)
    assert everything.refined.all() and everything.skipped == 0
    # never worse; an untrained network's support is the whole window, where the held-out
    # pixels can learn nothing and the refinement may keep the start
    assert np.all(everything.result.chi2 <= result.chi2)
    assert np.count_nonzero(everything.result.chi2 < result.chi2) >= 1
    assert np.array_equal(everything.trusted, everything.result.chi2 <= 1e-3)
    hurried = gate.apply(m, None, raw, result, budget_s=1e-9)
    assert hurried.refined.sum() == 1 and hurried.skipped == 11
    assert hurried.refined[np.argmax(result.chi2)], "the worst frame goes first"
    calm = TrustGate(threshold=np.inf).apply(m, None, raw, result, budget_s=1.0)
    assert not calm.refined.any() and calm.trusted.all()


def test_gate_with_no_flagged_frames_costs_nothing(tiny_reconstructor):
    m = diffraction_magnitudes(np.stack([c.obj for c in crystals(3, 4)]))
    raw = tiny_reconstructor.predict(m)
    result = finish(m, *raw)
    outcome = TrustGate(threshold=10.0).apply(m, None, raw, result, budget_s=0.0)
    assert outcome.result is result and not outcome.refined.any()
