"""Physics: the object recipe, the measurement model, the forward model's invariances, chi2,
ramps, the ambiguity-invariant comparison, the iterative baseline, and the independent
generator of the simulated detector checked against cdistream's own forward model."""

import numpy as np
import pytest

from cdistream.physics import (
    MeasurementRecipe,
    ObjectRecipe,
    blur_intensity,
    centre,
    centre_of_mass,
    chi2,
    compare,
    diffraction_magnitudes,
    extent,
    fit_ramp,
    measure,
    phase_retrieval,
    plane_fit,
    poisson_magnitudes,
    ramp_plane,
    ramp_to_offset,
    random_objects,
    remove_ramp,
    twin,
)
from sim_detector.crystals import CrystalRecipe, crystals
from sim_detector.farfield import Conditions, detector_counts, far_field, peak_centred

N = 32


@pytest.fixture(scope="module")
def objects():
    return random_objects(24, seed=7)


def _ramp(d_row: float, d_col: float) -> np.ndarray:
    rows, cols = np.mgrid[0:N, 0:N]
    return np.exp(2j * np.pi * (d_row * rows + d_col * cols) / N)


def test_objects_follow_the_recipe(objects):
    recipe = ObjectRecipe()
    amp, phase = np.abs(objects), np.angle(objects)
    assert objects.shape == (24, recipe.n, recipe.n)
    assert amp.max() <= 1 + 1e-6 and np.allclose(amp.max(axis=(1, 2)), 1)
    assert np.all(phase[amp <= 0.1] == 0), "phase must be 0 outside the object"
    assert np.all(np.abs(phase) <= np.pi + 1e-6)
    ptp = [np.ptp(np.angle(o)[a > 0.5]) for o, a in zip(objects, amp, strict=True)]
    assert max(ptp) > 2.0, "some objects must carry strong phase"


def test_objects_cover_the_oversampling_a_beamline_meets():
    sizes = extent(np.abs(random_objects(200, seed=3)))
    assert sizes.min() <= 5 and sizes.max() >= 18, "from ~4 to ~24 pixels across"
    assert 0.25 < np.mean(sizes < 8) < 0.6, "small, highly oversampled crystals are common"


def test_objects_are_reproducible():
    assert np.array_equal(random_objects(3, seed=5), random_objects(3, seed=5))
    assert not np.array_equal(random_objects(3, seed=5), random_objects(3, seed=6))


def test_measurement_centres_the_brightest_pixel_and_masks_defects(objects):
    recipe = MeasurementRecipe(noise_free_share=0.0, mask_share=1.0, saturation_share=0.0)
    meas = measure(objects, np.random.default_rng(0), recipe)
    assert meas.magnitudes.shape == meas.valid.shape == objects.shape
    assert (~meas.valid).any(axis=(1, 2)).all(), "every pattern is crossed by a masked gap"
    assert np.all(meas.magnitudes[~meas.valid] == 0)
    counts = meas.magnitudes.astype(np.float64) ** 2
    assert np.allclose(counts, np.round(counts), atol=1e-2), "noisy patterns hold counts"
    peaks = np.stack(np.unravel_index(counts.reshape(24, -1).argmax(1), (N, N)), 1)
    assert np.abs(peaks - N // 2).max() <= 2, "the ROI centres on the Bragg peak"
    again = measure(objects, np.random.default_rng(0), recipe)
    assert np.array_equal(again.magnitudes, meas.magnitudes)


def test_partial_coherence_blurs_but_keeps_the_intensity(objects):
    intensity = diffraction_magnitudes(objects[:4]).astype(np.float64) ** 2
    blurred = blur_intensity(intensity, np.full(4, 0.8))
    np.testing.assert_allclose(blurred.sum(axis=(1, 2)), intensity.sum(axis=(1, 2)), rtol=1e-3)
    assert (blurred.max(axis=(1, 2)) < intensity.max(axis=(1, 2))).all()


def test_magnitudes_have_zero_frequency_at_centre():
    obj = np.zeros((N, N), complex)
    obj[10:14, 12:15] = 1
    m = diffraction_magnitudes(obj)
    assert np.unravel_index(m.argmax(), m.shape) == (16, 16)
    assert m[16, 16] == pytest.approx(12)


def test_the_simulated_detector_computes_the_same_far_field_independently(objects):
    """Two implementations, one by FFT (cdistream.physics), one by explicit Fourier sums
    (sim_detector.farfield), agree; a sub-pixel offset moves the pattern's centre."""
    for obj in objects[:4]:
        np.testing.assert_allclose(
            far_field(obj), diffraction_magnitudes(obj).astype(np.float64) ** 2, rtol=1e-3,
            atol=1e-3,
        )
        shifted = far_field(obj, (0.3, -0.2))
        ramp = diffraction_magnitudes(obj * _ramp(0.3, -0.2)).astype(np.float64) ** 2
        np.testing.assert_allclose(shifted, ramp, rtol=1e-3, atol=1e-3)
    centred = peak_centred(objects[0], (0.0, 0.0))
    assert np.unravel_index(centred.argmax(), centred.shape) == (16, 16)
    counts = detector_counts(centred, Conditions(1e4, 0.5), np.random.default_rng(0))
    assert counts.max() == pytest.approx(1e4, rel=0.1) and (counts == np.round(counts)).all()


def test_the_independent_crystals_span_their_documented_ranges():
    drawn = crystals(60, seed=1)
    sizes = extent(np.abs(np.stack([c.obj for c in drawn])))
    assert sizes.min() < 8 and sizes.max() >= 14
    assert {c.family for c in drawn} == {"cloud", "habit", "ellipse", "rod"}
    assert max(c.phase_ptp for c in drawn) > 4
    recipe = CrystalRecipe(families=("ellipse",), min_extent=8, max_extent=12)
    assert {c.family for c in crystals(5, 2, recipe)} == {"ellipse"}


def test_translation_twin_and_global_phase_leave_magnitudes_unchanged(objects):
    m = diffraction_magnitudes(objects)
    moved = np.roll(objects, (5, -3), axis=(1, 2)) * np.exp(1.3j)
    np.testing.assert_allclose(diffraction_magnitudes(moved), m, atol=1e-4)
    np.testing.assert_allclose(diffraction_magnitudes(twin(objects)), m, atol=1e-4)
    np.testing.assert_allclose(diffraction_magnitudes(centre(objects)), m, atol=1e-4)


def test_centre_puts_the_centre_of_mass_on_n_half(objects):
    moved = np.roll(objects, (9, 9), axis=(1, 2))
    assert np.abs(centre_of_mass(np.abs(moved)) - 16).max() > 3
    np.testing.assert_allclose(centre_of_mass(np.abs(centre(moved))), 16, atol=0.2)


def test_ramps_are_found_through_phase_wrapping(objects):
    weight = np.abs(objects) * (np.abs(objects) > 0.1)
    ramped = objects * _ramp(1.7, -0.6) * np.exp(2.0j)  # 1.7 fringes: the phase wraps
    coef = fit_ramp(ramped, weight) - fit_ramp(objects, weight)
    np.testing.assert_allclose(ramp_to_offset(coef, N), np.tile([1.7, -0.6], (24, 1)), atol=1e-6)
    before = remove_ramp(np.angle(objects), weight)
    after = remove_ramp(np.angle(ramped), weight)
    assert np.abs(np.angle(np.exp(1j * (before - after)))).max() < 1e-5
    plane = np.array([[0.2, -0.1, 0.5]])
    np.testing.assert_allclose(plane_fit(ramp_plane(plane, N), np.ones((1, N, N))), plane,
                               atol=1e-5)


def test_compare_sees_the_ambiguities_and_the_ramp_as_identical(objects):
    amp = np.abs(objects)
    rim = np.maximum(amp[:, [0, -1]].max(axis=(1, 2)), amp[:, :, [0, -1]].max(axis=(1, 2)))
    objects = objects[rim < 0.05]  # a ramp fits a periodic window only inside the crystal
    ambiguous = twin(np.roll(objects, (4, 7), axis=(1, 2))) * np.exp(-2.1j) * _ramp(0.4, -1.3)
    c = compare(ambiguous, objects)
    np.testing.assert_allclose(c.iou, 1)
    assert np.median(c.phase_rmse) < 1e-6 and c.phase_rmse.max() < 0.06  # tails at the edge
    np.testing.assert_allclose(c.amplitude_error, 0, atol=1e-9)
    assert c.twinned.all()
    assert not compare(objects, objects).twinned.any()


def test_compare_penalises_a_different_object(objects):
    c = compare(objects[1:], objects[:-1])
    assert np.median(c.iou) < 0.8 and np.median(c.amplitude_error) > 0.3
    flat = np.abs(objects)  # right shape, phase lost
    strong = [np.ptp(np.angle(o)) > 1.5 for o in objects]
    assert np.median(compare(flat, objects).phase_rmse[strong]) > 0.2


def test_chi2_is_zero_for_the_truth_scale_free_and_blind_to_masked_pixels(objects):
    m = diffraction_magnitudes(objects)
    amp, phase = np.abs(objects), np.angle(objects)
    np.testing.assert_allclose(chi2(m, amp, phase), 0, atol=1e-6)
    np.testing.assert_allclose(chi2(m * 1e3, amp * 0.5, phase), 0, atol=1e-6)
    assert np.all(chi2(m, amp, np.zeros_like(phase))[np.ptp(phase, axis=(1, 2)) > 1] > 1e-3)
    valid = np.ones_like(m, bool)
    valid[:, 15:18] = False
    broken = m.copy()
    broken[:, 15:18] = 0  # a module gap across the peak: no signal, which chi2 must not count
    np.testing.assert_allclose(chi2(broken, amp, phase, valid), 0, atol=1e-6)
    assert np.all(chi2(broken, amp, phase) > 1e-3)


def test_poisson_noise_counts_photons():
    rng = np.random.default_rng(0)
    m = diffraction_magnitudes(random_objects(4, seed=1))
    noisy = poisson_magnitudes(m, 1e4, rng)
    counts = noisy**2
    assert np.allclose(counts, np.round(counts), atol=1e-3), "intensities are integer counts"
    assert np.all(np.abs(counts.max(axis=(1, 2)) - 1e4) < 500)


def test_iterative_baseline_recovers_objects_without_strain_even_with_a_gap(objects):
    flat = np.abs(objects[:8]).astype(complex)  # strong phase makes ER/HIO slow, as is known
    flat = flat[extent(np.abs(flat)) >= 6]  # crystals the 620 iterations resolve reliably
    m = diffraction_magnitudes(flat)
    result = phase_retrieval(m, 620, seed=0)
    assert np.median(compare(result, flat).iou) > 0.8
    assert np.median(chi2(m, np.abs(result), np.angle(result))) < 1e-3
    valid = np.ones_like(m, bool)
    valid[:, 5:7] = False  # masked pixels are left free, not forced to zero
    gapped = phase_retrieval(m * valid, 620, seed=0, valid=valid)
    assert np.median(compare(gapped, flat).iou) > 0.8


@pytest.mark.slow
def test_cohere_core_repeats_its_reconstruction_for_a_seed_and_recovers_flat_crystals(objects):
    """The card's peer engine: cohere reseeds numpy from the clock, so without our seeded start
    its baselines moved between two runs of the same command."""
    from cdistream.bench.cohere import cohere_phase_retrieval

    flat = np.abs(objects[:8]).astype(complex)
    flat = flat[extent(np.abs(flat)) >= 6][:1]
    m = diffraction_magnitudes(flat)
    first = cohere_phase_retrieval(m, seed=4)
    np.testing.assert_array_equal(first, cohere_phase_retrieval(m, seed=4))
    assert not np.array_equal(first, cohere_phase_retrieval(m, seed=5))
    assert compare(first, flat).iou[0] > 0.8
    assert chi2(m, np.abs(first), np.angle(first))[0] < 1e-3


def test_a_frame_is_the_fourier_transform_of_the_crystals_weighted_projection():
    """The Fourier slice theorem both 3D generators rest on, checked between them: the
    simulated detector's explicit 3D sum over the voxels, on a crystal whose voxels sit on the
    window's grid and whose rocking axis is the beam's, equals the 2D FFT of its projection
    weighted by the rocking offset's phase factor (what the training recipe computes)."""
    from sim_detector.crystals3d import Crystal3D

    rng = np.random.default_rng(4)
    n = 32
    grid = np.stack(np.meshgrid(*[np.arange(-5, 6)] * 3, indexing="ij"), -1).reshape(-1, 3)
    inside = (np.abs(grid) @ np.ones(3) <= 7) & (np.abs(grid).max(axis=1) <= 5)
    positions = grid[inside].astype(float)
    density = np.exp(1j * 0.3 * rng.normal(size=len(positions)))
    crystal = Crystal3D(positions, density, np.array([0.0, 0.0, 1.0]), "test", 11.0)
    for q in (0.0, 0.05, -0.12):
        projection = np.zeros((n, n), complex)
        weights = density * np.exp(-2j * np.pi * q * positions[:, 2])
        np.add.at(projection, (positions[:, 0].astype(int) + n // 2,
                               positions[:, 1].astype(int) + n // 2), weights)
        expected = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(projection)))
        scale = np.abs(expected).max()
        np.testing.assert_allclose(crystal.field(q, n), expected, atol=1e-9 * scale)


def test_training_frames_of_3d_crystals_are_thickness_maps():
    """A slice at the Bragg condition is the crystal's projection: its amplitude varies with
    the thickness (a rounded crystal is thickest in the middle), not a flat top."""
    from cdistream.physics import Crystal3DRecipe, random_crystal_slice

    rng = np.random.default_rng(2)
    recipe = Crystal3DRecipe(min_extent=12, max_extent=14, rocking_centre_share=1.0,
                             max_phase_ptp=0.0, dislocation_share=0.0)
    spreads = []
    for _ in range(6):
        obj, info = random_crystal_slice(rng, recipe)
        amp = np.abs(obj)
        assert amp.max() == pytest.approx(1.0) and abs(info["rocking"]) <= 0.5
        spreads.append(np.std(amp[amp > 0.5]))
    assert np.median(spreads) > 0.05, "inside the crystal the amplitude is not flat"
