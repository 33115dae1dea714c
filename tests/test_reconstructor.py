"""The shipped models through the public API: conventions, scale invariance, masked pixels
ignored, no retracing, clear errors, and a reduced quality bar on a small fixed test set from
the independent generator (``sim_detector.crystals``, not the training recipe)."""

import numpy as np
import pytest

from cdistream import InvalidPatternError, ModelLoadError, Reconstructor
from cdistream.inference import BUCKETS
from cdistream.physics import compare
from training import holdout


@pytest.fixture(scope="module")
def rec():
    r = Reconstructor.load()
    r.warm_up()
    return r


@pytest.fixture(scope="module")
def test_set() -> holdout.HoldoutSet:
    """160 crystals from the independent generator, seeds the model never saw."""
    names = ("noise_free", "photons_1e4", "masked_stripe")
    return holdout.build(160, seed=2027, conditions={k: holdout.CONDITIONS[k] for k in names})


@pytest.fixture(scope="module")
def truth(test_set):
    return test_set.objects


@pytest.fixture(scope="module")
def magnitudes(test_set):
    return test_set.magnitudes["noise_free"]


def test_outputs_follow_the_conventions(rec, magnitudes):
    res = rec.reconstruct(magnitudes[:5])
    assert res.amplitude.shape == res.phase.shape == res.support.shape == (5, 32, 32)
    assert res.chi2.shape == (5,)
    assert res.amplitude.dtype == np.float32 and res.phase.dtype == np.float32
    assert res.support.dtype == bool
    np.testing.assert_array_equal(res.support, res.amplitude > 0.1)
    assert np.all(res.phase[~res.support] == 0)
    assert np.all(np.abs(res.phase) <= np.pi + 1e-6)
    assert np.all((res.amplitude >= 0) & (res.amplitude <= 1))
    single = rec.reconstruct(magnitudes[0])
    assert single.amplitude.shape == (1, 32, 32)
    # alone (XLA) or in a batch (oneDNN): the same within the precision computed in
    diff = np.abs(single.amplitude[0] - res.amplitude[0])
    assert np.median(diff) < 1e-4 and diff.max() < (0.05 if rec.precision == "bfloat16" else 1e-5)


def test_input_scale_does_not_matter(rec, magnitudes):
    base = rec.reconstruct(magnitudes[:16])
    for factor in (2.0**-10, 1e-3, 1e4):
        scaled = rec.reconstruct(magnitudes[:16] * factor)
        assert np.abs(scaled.amplitude - base.amplitude).max() < 1e-3
        np.testing.assert_allclose(scaled.chi2, base.chi2, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_input_scale_does_not_matter_to_the_refinement_either(rec, magnitudes):
    """Nothing in the refinement is an absolute count: its stopping rule is a ratio."""
    base = rec.reconstruct(magnitudes[:16], refine=50)
    for factor in (1e3, 1e6):
        scaled = rec.reconstruct(magnitudes[:16] * factor, refine=50)
        assert np.abs(scaled.amplitude - base.amplitude).max() < 1e-3
        np.testing.assert_allclose(scaled.chi2, base.chi2, rtol=1e-3, atol=1e-6)


def test_masked_pixels_are_ignored(rec, test_set):
    """Whatever a module gap or a dead pixel holds, the result is the same."""
    m, v = test_set.magnitudes["masked_stripe"][:16], test_set.valid["masked_stripe"][:16]
    assert (~v).any()
    base = rec.reconstruct(m, valid=v)
    garbage = np.where(v, m, np.random.default_rng(0).uniform(0, m.max(), m.shape))
    again = rec.reconstruct(garbage.astype(np.float32), valid=v)
    np.testing.assert_allclose(again.amplitude, base.amplitude, atol=1e-5)
    np.testing.assert_allclose(again.chi2, base.chi2, rtol=1e-4, atol=1e-7)


def test_bfloat16_keeps_the_float32_quality(rec, magnitudes, truth):
    exact = Reconstructor.load(precision="float32")
    fast = Reconstructor.load(precision="bfloat16")
    a, b = exact.reconstruct(magnitudes), fast.reconstruct(magnitudes)
    assert np.median(np.abs(a.amplitude - b.amplitude)) < 1e-3
    sa, sb = compare(a.complex_object(), truth), compare(b.complex_object(), truth)
    assert abs(np.median(sa.iou) - np.median(sb.iou)) < 0.01
    assert abs(np.median(sa.phase_rmse) - np.median(sb.phase_rmse)) < 0.01
    with pytest.raises(ValueError, match="precision"):
        Reconstructor.load(precision="float16")


def test_steady_state_never_retraces(rec, magnitudes):
    traced = rec.trace_count
    assert traced == len(BUCKETS), "warm_up traces each bucket exactly once"
    for k in (1, 3, 8, 20, 77, 100):
        rec.reconstruct(magnitudes[:k])
    assert rec.trace_count == traced


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 32, 32)), "no signal"),
        (np.full((32, 32), np.nan), "non-finite"),
        (-np.ones((32, 32)), "non-negative"),
        (np.ones((64, 64)), "shape"),
        (np.array([["a"] * 32] * 32), "numeric"),
    ],
)
def test_bad_patterns_raise_a_clear_error(rec, bad, match):
    with pytest.raises(InvalidPatternError, match=match):
        rec.reconstruct(bad)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no model"):
        Reconstructor.load(tmp_path)


@pytest.mark.slow
def test_shipped_models_meet_a_reduced_quality_bar(rec, test_set):
    """Below the model card's 1000-crystal figures by a sampling margin, per condition and
    for the small crystals (oversampling above 4) that the last model failed."""
    bins = test_set.bins()
    # phase: these 160 crystals read ~0.02 to 0.03 rad above the card's 1000 (noise-free 0.182
    # against 0.156; masked stripe 0.202 against 0.172; stage 1's networks: 0.193 against 0.168)
    # IoU: these 160 read 0.835, 0.837 and 0.778 computed in float32 (a CPU without
    # AVX512-BF16); CI passed a stripe bar of 0.78 before, on other CPUs: it sat on the figure.
    # A median of 160 moves by about 0.015 between samples
    for name, bar, phase in (("noise_free", 0.82, 0.2), ("photons_1e4", 0.82, 0.2),
                             ("masked_stripe", 0.76, 0.21)):
        res = rec.reconstruct(test_set.magnitudes[name], valid=test_set.valid[name])
        c = compare(res.complex_object(), test_set.objects)
        assert np.median(c.iou) >= bar, name
        assert np.median(c.phase_rmse) <= phase, name
        assert np.median(res.chi2) <= 0.03, name
        assert np.median(c.iou[bins == "<8"]) >= 0.7, name


@pytest.mark.slow
def test_refinement_moves_closer_to_the_data(rec, truth, magnitudes):
    plain = rec.reconstruct(magnitudes[:40])
    refined = rec.reconstruct(magnitudes[:40], refine=50)
    assert np.median(refined.chi2) < np.median(plain.chi2) / 5
    # ... and not away from the truth: on the model card's 1000 noise-free crystals the phase
    # error falls from 0.153 to 0.127 rad, but 40 are too few to see it (0.162 -> 0.173 here)
    before = compare(plain.complex_object(), truth[:40])
    after = compare(refined.complex_object(), truth[:40])
    assert np.median(after.phase_rmse) < np.median(before.phase_rmse) + 0.03
    assert np.median(after.iou) >= np.median(before.iou) - 0.02
