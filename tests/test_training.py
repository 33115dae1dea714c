"""The dataset writer, the ambiguity-aware loss and a short real training run."""

import json

import numpy as np
import pytest
import tensorflow as tf

from cdistream import Reconstructor
from cdistream.physics import centre_of_mass, diffraction_magnitudes
from training.dataset import generate, load
from training.losses import OFFSET_PULL, cdi_loss, twin_targets
from training.train import TrainConfig, train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "tiny.h5", 96, seed=3, workers=2)


def test_dataset_is_consistent_and_reproducible(tiny, tmp_path):
    data = load(tiny)
    assert data.magnitudes.shape == data.amplitude.shape == data.phase.shape == (96, 32, 32)
    assert data.magnitudes.dtype == np.float32 and data.meta["seed"] == 3
    # targets are the centred objects whose magnitudes were stored
    peak = data.magnitudes.max(axis=(1, 2), keepdims=True)
    recomputed = diffraction_magnitudes(data.objects())
    np.testing.assert_allclose(recomputed / peak, data.magnitudes / peak, atol=1e-5)
    com = centre_of_mass(data.amplitude)
    np.testing.assert_allclose(com, 16, atol=0.1)
    again = load(generate(tmp_path / "again.h5", 96, seed=3, workers=1))
    assert np.array_equal(again.magnitudes, data.magnitudes), "same seed, any worker count"


def test_loss_is_blind_to_twin_and_global_phase(tiny):
    data = load(tiny, limit=16)
    amp, phase = tf.constant(data.amplitude), tf.constant(data.phase)
    pred_amp = tf.clip_by_value(amp + 0.05, 0, 1)
    pred_phase = phase + 0.1 * tf.sin(phase)
    direct = cdi_loss(amp, phase, pred_amp, pred_phase)[0]
    amp_t, phase_t = twin_targets(amp, phase)
    swapped = cdi_loss(amp_t, phase_t, pred_amp, pred_phase)[0]
    offset = cdi_loss(amp, phase, pred_amp, pred_phase + 0.8)
    assert float(direct) == pytest.approx(float(swapped), rel=1e-5)
    # the phase term ignores the offset; only the weak pull towards the targets sees it
    assert float(offset[2]) == pytest.approx(
        float(cdi_loss(amp, phase, pred_amp, pred_phase)[2]), rel=1e-4
    )
    assert float(offset[0]) - float(direct) == pytest.approx(OFFSET_PULL * 0.8**2, rel=0.15)
    worse = cdi_loss(amp, phase, pred_amp, -pred_phase)[0]
    assert float(worse) > float(direct)


@pytest.mark.slow
def test_short_training_run_saves_a_loadable_model(tiny, tmp_path):
    out = tmp_path / "cdi_nn.keras"
    config = TrainConfig(epochs=2, batch_size=16, widths=(4, 8, 8), validation=16)
    train(load(tiny), out, config)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert len(summary["history"]) == 2
    assert all(np.isfinite(h["val_loss"]) for h in summary["history"])
    assert summary["history"][1]["loss"] < summary["history"][0]["loss"] * 1.5
    rec = Reconstructor.load(out)  # safe mode
    res = rec.reconstruct(load(tiny, limit=4).magnitudes)
    assert res.amplitude.shape == (4, 32, 32) and np.isfinite(res.chi2).all()
