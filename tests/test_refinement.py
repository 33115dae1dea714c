"""The refinement that stops at the data's noise (:mod:`cdistream.physics.refinement`), on
crystals of the independent generator (``sim_detector.crystals``) measured with Poisson noise
by ``sim_detector.farfield``: code that shares nothing with the refinement."""

from __future__ import annotations

import numpy as np
import pytest

from cdistream.physics import RefineSettings, compare, refine_cross_validated
from cdistream.physics.refinement import held_out_pixels
from sim_detector.crystals import crystals
from sim_detector.farfield import Conditions, detector_counts, peak_centred

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def measured():
    """40 crystals at 1e3 photons in the brightest pixel and their truth."""
    drawn = crystals(40, 11)
    truth = np.stack([c.obj for c in drawn])
    rng = np.random.default_rng(5)
    counts = np.stack([
        detector_counts(peak_centred(o, (0.0, 0.0)), Conditions(1e3, 0.0, 0.0), rng)
        for o in truth
    ])
    return truth, np.sqrt(counts)


def _start(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A rough start, as a network draws one: the truth's amplitude blurred, half its phase,
    in its support dilated by a pixel. (A centro-symmetric start, such as a flat support with
    no phase, sits between the object and its twin, where rounding decides the way.)"""
    from scipy.ndimage import binary_dilation, gaussian_filter

    amp = np.abs(truth)
    support = binary_dilation(amp > 0.1 * amp.max(axis=(1, 2), keepdims=True),
                              structure=np.ones((1, 3, 3), bool))
    blurred = gaussian_filter(amp, (0, 1.0, 1.0))
    return blurred * np.exp(0.5j * np.angle(truth)) * support, support


def test_the_refined_image_does_not_depend_on_the_input_scale(measured):
    truth, m = measured
    start, support = _start(truth)
    images = [refine_cross_validated(m * scale, start, support, 30)[0]
              for scale in (1.0, 1e3, 1e6)]
    first = images[0] / np.abs(images[0]).max(axis=(1, 2), keepdims=True)
    for other in images[1:]:
        other = other / np.abs(other).max(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(other, first, atol=1e-6)


def test_the_held_out_pixels_keep_the_image_that_predicts_them_best(measured):
    """Each frame's kept iterate is the one whose held-out misfit was lowest (never above the
    start's), the image comes closer to the truth than the start, and the held-out pixels are
    one fixed pattern of about the share asked for."""
    truth, m = measured
    start, support = _start(truth)
    refined, held = refine_cross_validated(m, start, support, 60)
    assert np.all(held.misfit_kept <= held.misfit_start)
    assert np.all((held.iterations >= 0) & (held.iterations <= 60))
    assert compare(refined, truth).iou.mean() > compare(start, truth).iou.mean()
    share = held_out_pixels(32, RefineSettings().held_out).mean()
    assert 0.03 < share < 0.07


def test_more_iterations_never_keep_a_worse_fit_to_the_held_out_pixels(measured):
    truth, m = measured
    start, support = _start(truth)
    _, short = refine_cross_validated(m, start, support, 20)
    _, long = refine_cross_validated(m, start, support, 80)
    assert np.all(long.misfit_kept <= short.misfit_kept + 1e-12)
