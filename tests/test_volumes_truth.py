"""The 3D engine held to a known truth (``training.volumes``): rocking scans of crystals from
the independent 3D generator (``sim_detector.crystals3d``), reconstructed as ``cdistream
reconstruct --3d`` does, scored against the object each cube was made from."""

from __future__ import annotations

import numpy as np
import pytest

from cdistream.physics.iterative3d import twin_3d
from training.volumes import evaluate, score, truth_cubes

pytestmark = pytest.mark.timeout(300)


def test_the_score_ignores_what_a_measurement_cannot_tell():
    """The truth scores perfectly against itself moved, as its twin, with a global phase and a
    phase ramp; a crystal that is not it does not."""
    first, other = truth_cubes(2, 5)
    z = np.arange(32)[:, None, None]
    moved = np.roll(twin_3d(first.truth), (3, -2, 5), axis=(0, 1, 2))
    moved = moved * np.exp(1j * (0.7 + 0.05 * z))
    same = score(moved, first.truth)
    assert same["iou_half_max"] > 0.99 and same["phase_rmse"] < 1e-6
    assert 400 <= first.voxels <= 1700 and first.magnitudes.shape == (32, 32, 32)
    assert score(other.truth, first.truth)["iou_half_max"] < 0.8


@pytest.mark.slow
def test_the_3d_engine_draws_each_crystal_as_it_was():
    """A reduced version of the model card's 3D bar: no crystal under support IoU 0.6."""
    out = evaluate(count=2, seed=11, cohere=False)
    worst = out["summary"]["ours"]["worst_iou_half_max"]
    assert worst >= 0.6, out["crystals"]
    assert out["summary"]["ours"]["phase_rmse"] < 0.3, out["summary"]
