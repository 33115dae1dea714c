"""The shipped models through the public API: conventions, scale invariance, no retracing,
clear errors, and a reduced quality bar on a small fixed test set."""

import numpy as np
import pytest

from cdistream import InvalidPatternError, ModelLoadError, Reconstructor
from cdistream.inference import BUCKETS
from cdistream.physics import compare, diffraction_magnitudes, poisson_magnitudes, random_objects


@pytest.fixture(scope="module")
def rec():
    r = Reconstructor.load()
    r.warm_up()
    return r


@pytest.fixture(scope="module")
def truth():
    return random_objects(100, seed=2024)  # a fixed set, not the training seed


@pytest.fixture(scope="module")
def magnitudes(truth):
    return diffraction_magnitudes(truth)


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
    for factor in (1e-3, 1e4):
        scaled = rec.reconstruct(magnitudes[:16] * factor)
        assert np.abs(scaled.amplitude - base.amplitude).max() < 1e-3
        np.testing.assert_allclose(scaled.chi2, base.chi2, rtol=1e-3, atol=1e-6)


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
def test_shipped_models_meet_a_reduced_quality_bar(rec, truth, magnitudes):
    res = rec.reconstruct(magnitudes)
    c = compare(res.complex_object(), truth)
    assert np.median(c.iou) >= 0.8
    assert np.median(c.phase_rmse) <= 0.2
    assert np.median(res.chi2) <= 0.06
    noisy = poisson_magnitudes(magnitudes, 1e4, np.random.default_rng(0))
    assert np.median(compare(rec.reconstruct(noisy).complex_object(), truth).iou) >= 0.75


@pytest.mark.slow
def test_refinement_moves_closer_to_the_data(rec, truth, magnitudes):
    plain = rec.reconstruct(magnitudes[:20])
    refined = rec.reconstruct(magnitudes[:20], refine=50)
    assert np.median(refined.chi2) < np.median(plain.chi2)
    assert np.median(compare(refined.complex_object(), truth[:20]).iou) >= 0.8
