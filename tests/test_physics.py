"""Physics: the object recipe, the forward model's invariances, chi2, the ambiguity-invariant
comparison and the iterative baseline."""

import numpy as np
import pytest

from cdistream.physics import (
    ObjectRecipe,
    centre,
    centre_of_mass,
    chi2,
    compare,
    diffraction_magnitudes,
    phase_retrieval,
    poisson_magnitudes,
    random_objects,
    twin,
)


@pytest.fixture(scope="module")
def objects():
    return random_objects(24, seed=7)


def test_objects_follow_the_recipe(objects):
    recipe = ObjectRecipe()
    amp, phase = np.abs(objects), np.angle(objects)
    assert objects.shape == (24, recipe.n, recipe.n)
    assert amp.max() <= 1 + 1e-6 and np.allclose(amp.max(axis=(1, 2)), 1)
    assert np.all(phase[amp <= 0.1] == 0), "phase must be 0 outside the object"
    assert np.all(np.abs(phase) <= np.pi + 1e-6)
    support = amp > 0.5
    for s in support:  # oversampled at least twice: extent at most N/2 in each direction
        rows, cols = np.flatnonzero(s.any(1)), np.flatnonzero(s.any(0))
        assert np.ptp(rows) + 1 <= recipe.n // 2 + 1 and np.ptp(cols) + 1 <= recipe.n // 2 + 1
    ptp = [np.ptp(np.angle(o)[a > 0.5]) for o, a in zip(objects, amp, strict=True)]
    assert max(ptp) > 2.0, "some objects must carry strong phase"


def test_objects_are_reproducible():
    assert np.array_equal(random_objects(3, seed=5), random_objects(3, seed=5))
    assert not np.array_equal(random_objects(3, seed=5), random_objects(3, seed=6))


def test_magnitudes_have_zero_frequency_at_centre():
    obj = np.zeros((32, 32), complex)
    obj[10:14, 12:15] = 1
    m = diffraction_magnitudes(obj)
    assert np.unravel_index(m.argmax(), m.shape) == (16, 16)
    assert m[16, 16] == pytest.approx(12)


def test_translation_twin_and_global_phase_leave_magnitudes_unchanged(objects):
    m = diffraction_magnitudes(objects)
    moved = np.roll(objects, (5, -3), axis=(1, 2)) * np.exp(1.3j)
    np.testing.assert_allclose(diffraction_magnitudes(moved), m, atol=1e-4)
    np.testing.assert_allclose(diffraction_magnitudes(twin(objects)), m, atol=1e-4)
    np.testing.assert_allclose(diffraction_magnitudes(centre(objects)), m, atol=1e-4)


def test_centre_puts_the_centre_of_mass_on_n_half(objects):
    moved = np.roll(objects, (9, 9), axis=(1, 2))
    assert np.abs(centre_of_mass(np.abs(moved)) - 16).max() > 3
    np.testing.assert_allclose(centre_of_mass(np.abs(centre(moved))), 16, atol=0.1)


def test_compare_sees_the_trivial_ambiguities_as_identical(objects):
    ambiguous = twin(np.roll(objects, (4, 7), axis=(1, 2))) * np.exp(-2.1j)
    c = compare(ambiguous, objects)
    np.testing.assert_allclose(c.iou, 1)
    np.testing.assert_allclose(c.phase_rmse, 0, atol=1e-9)
    np.testing.assert_allclose(c.amplitude_error, 0, atol=1e-9)
    assert c.twinned.all()
    assert not compare(objects, objects).twinned.any()


def test_compare_penalises_a_different_object(objects):
    c = compare(objects[1:], objects[:-1])
    assert np.median(c.iou) < 0.8 and np.median(c.amplitude_error) > 0.3
    flat = np.abs(objects)  # right shape, phase lost
    assert np.median(compare(flat, objects).phase_rmse) > 0.2


def test_chi2_is_zero_for_the_truth_and_scale_free(objects):
    m = diffraction_magnitudes(objects)
    amp, phase = np.abs(objects), np.angle(objects)
    np.testing.assert_allclose(chi2(m, amp, phase), 0, atol=1e-6)
    np.testing.assert_allclose(chi2(m * 1e3, amp * 0.5, phase), 0, atol=1e-6)
    assert np.all(chi2(m, amp, np.zeros_like(phase))[np.ptp(phase, axis=(1, 2)) > 1] > 1e-3)


def test_poisson_noise_counts_photons():
    rng = np.random.default_rng(0)
    m = diffraction_magnitudes(random_objects(4, seed=1))
    noisy = poisson_magnitudes(m, 1e4, rng)
    counts = noisy**2
    assert np.allclose(counts, np.round(counts), atol=1e-3), "intensities are integer counts"
    assert np.all(np.abs(counts.max(axis=(1, 2)) - 1e4) < 500)
    assert np.array_equal(
        poisson_magnitudes(m, 1e4, np.random.default_rng(3)),
        poisson_magnitudes(m, 1e4, np.random.default_rng(3)),
    )


def test_iterative_baseline_recovers_objects_without_strain(objects):
    flat = np.abs(objects[:8]).astype(complex)  # strong phase makes ER/HIO slow, as is known
    m = diffraction_magnitudes(flat)
    result = phase_retrieval(m, 620, seed=0)
    assert np.median(compare(result, flat).iou) > 0.8
    assert np.median(chi2(m, np.abs(result), np.angle(result))) < 1e-3
