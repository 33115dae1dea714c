"""The crystal-set writer, the training batches, the ambiguity-aware loss, a short real training
run, and the model card's evaluation on a tiny independent test set."""

import json
import shutil

import h5py
import keras
import numpy as np
import pytest
from keras import ops

from cdistream import Reconstructor
from cdistream.adaptation.losses import (
    amplitude_misfit,
    cdi_loss,
    intensity_misfit,
    outside_support,
    reciprocal_misfit,
    twin_targets,
)
from cdistream.physics import (
    Crystal3DRecipe,
    centre_of_mass,
    chi2,
    diffraction_magnitudes,
    random_crystal_slices,
    twin,
)
from training.dataset import Batches, drawn_with, generate, load
from training.train import TrainConfig, train

N = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "tiny.h5", 96, seed=3, workers=2)


def test_crystal_sets_are_consistent_and_reproducible(tiny, tmp_path):
    data = load(tiny)
    assert data.objects.shape == data.amplitude.shape == data.phase.shape == (96, N, N)
    assert data.meta["seed"] == 3
    # the targets are the crystals centred: the same magnitudes, centre of mass at N//2
    centred = data.amplitude * np.exp(1j * data.phase)
    np.testing.assert_allclose(
        diffraction_magnitudes(centred), diffraction_magnitudes(data.objects), atol=2e-3
    )
    # (a small 3D slice rings after its sub-pixel shift: its centre of mass moves a little)
    np.testing.assert_allclose(centre_of_mass(data.amplitude), 16, atol=0.3)
    again = load(generate(tmp_path / "again.h5", 96, seed=3, workers=1))
    assert np.array_equal(again.objects, data.objects), "same seed, any worker count"


def test_batches_draw_new_conditions_each_epoch_reproducibly(tiny):
    data = load(tiny)
    first = Batches(data, 16, seed=5)
    inputs, target = first[0]
    assert inputs["magnitudes"].shape == inputs["valid"].shape == (16, N, N)
    assert target.shape == (16, N, N, 4)
    np.testing.assert_array_equal(target[..., 2], inputs["magnitudes"])
    again = Batches(data, 16, seed=5)
    np.testing.assert_array_equal(again[0][0]["magnitudes"], inputs["magnitudes"])
    first.on_epoch_end()
    assert not np.array_equal(first[0][0]["magnitudes"], inputs["magnitudes"])
    fixed = Batches(data, 16, seed=5, fixed=True)
    fixed.on_epoch_end()
    reference = Batches(data, 16, seed=5, fixed=True)
    np.testing.assert_array_equal(fixed[1][0]["magnitudes"], reference[1][0]["magnitudes"])


def _as_tensors(*arrays):
    return [ops.convert_to_tensor(np.asarray(a, np.float32)) for a in arrays]


def test_loss_is_blind_to_twin_global_phase_and_ramp(tiny):
    data = load(tiny, limit=16)
    amp, phase = _as_tensors(data.amplitude, data.phase)
    pred_amp = ops.clip(amp + 0.05, 0, 1)
    pred_phase = phase + 0.1 * ops.sin(phase)
    direct = float(cdi_loss(amp, phase, pred_amp, pred_phase)[0])
    amp_t, phase_t = twin_targets(amp, phase)
    swapped = float(cdi_loss(amp_t, phase_t, pred_amp, pred_phase)[0])
    assert swapped == pytest.approx(direct, rel=1e-5)
    rows, cols = np.mgrid[0:N, 0:N].astype(np.float32)
    ramp = ops.convert_to_tensor(0.8 + 0.3 * rows - 0.2 * cols)
    shifted = float(cdi_loss(amp, phase, pred_amp, pred_phase + ramp)[0])
    assert shifted == pytest.approx(direct, rel=1e-3), "offset and ramp are not strain"
    assert float(cdi_loss(amp, phase, pred_amp, -pred_phase)[0]) > direct


def test_reciprocal_misfit_is_zero_for_any_twin_or_shift_of_the_truth(tiny):
    data = load(tiny, limit=8)
    m = diffraction_magnitudes(data.objects)
    valid = np.ones_like(m)
    for obj in (data.objects, twin(np.roll(data.objects, (3, -5), axis=(1, 2)))):
        amp, phase, mm, vv = _as_tensors(np.abs(obj), np.angle(obj), m * 7.0, valid)
        assert float(ops.max(reciprocal_misfit(amp, phase, mm, vv))) < 1e-4
    amp, phase, mm, vv = _as_tensors(np.abs(data.objects), np.zeros((8, N, N)), m, valid)
    assert float(ops.mean(reciprocal_misfit(amp, phase, mm, vv))) > 1e-3


def test_outside_support_penalises_only_amplitude_the_crystal_cannot_have(tiny):
    data = load(tiny, limit=8)
    amp, phase = _as_tensors(data.amplitude, data.phase)
    own = ops.convert_to_numpy(outside_support(amp, amp))  # the targets' faint floor only
    assert own.max() < 0.005
    twin_amp, _ = twin_targets(amp, phase)
    nudged = ops.roll(amp, (1, -1), axis=(1, 2))  # within the support grown by 2 px
    for pred in (twin_amp, nudged):
        np.testing.assert_allclose(ops.convert_to_numpy(outside_support(amp, pred)), own,
                                   atol=5e-4)
    blob = np.zeros((8, N, N), np.float32)
    blob[:, -3:, :3] = 0.3  # the corner the networks used to draw in, far from any crystal
    assert np.asarray(data.amplitude)[:, -5:, :5].max() < 0.05
    penalty = ops.convert_to_numpy(outside_support(amp, amp + blob))
    np.testing.assert_allclose(penalty - own, 9 * 0.3 / N**2, rtol=1e-3)
    with_it = float(cdi_loss(amp, phase, amp + blob, phase, support_weight=10.0)[0])
    without = float(cdi_loss(amp, phase, amp + blob, phase)[0])
    assert with_it == pytest.approx(without + 10.0 * float(penalty.mean()), rel=1e-4)


def test_amplitude_misfit_weighs_the_crystal_by_its_area_and_counts_in_the_twin_choice(tiny):
    data = load(tiny, limit=8)
    amp, phase = _as_tensors(data.amplitude, data.phase)
    assert float(ops.max(amplitude_misfit(amp, amp))) == 0.0
    halo = np.full((8, N, N), 0.02, np.float32)  # a faint halo over the whole window
    area = (np.asarray(data.amplitude) > 0.05).sum((1, 2))
    np.testing.assert_allclose(ops.convert_to_numpy(amplitude_misfit(amp, amp + halo)),
                               0.02 * N**2 / (area + 1), rtol=1e-4)
    twin_amp, twin_phase = twin_targets(amp, phase)
    for pred in ((amp, phase), (twin_amp, twin_phase)):  # either image is right
        assert float(cdi_loss(amp, phase, *pred, amplitude_weight=10.0)[0]) == pytest.approx(
            float(cdi_loss(amp, phase, *pred)[0]), abs=1e-5)
    with_it = float(cdi_loss(amp, phase, amp + halo, phase, amplitude_weight=10.0)[0])
    without = float(cdi_loss(amp, phase, amp + halo, phase)[0])
    penalty = ops.convert_to_numpy(amplitude_misfit(amp, amp + halo))
    assert with_it == pytest.approx(without + 10.0 * float(penalty.mean()), rel=1e-4)


def test_intensity_misfit_is_the_products_chi2(tiny):
    data = load(tiny, limit=8)
    other = load(tiny).objects[8:16]
    magnitudes = 300 * diffraction_magnitudes(data.objects).astype(np.float32)  # any scale
    valid = np.ones_like(magnitudes)
    valid[:, 5, :] = 0  # a gap
    amp, phase = np.abs(other).astype(np.float32), np.angle(other).astype(np.float32)
    ours = ops.convert_to_numpy(intensity_misfit(amp, phase, magnitudes, valid))
    np.testing.assert_allclose(ours, chi2(magnitudes, amp, phase, valid), rtol=1e-3, atol=1e-6)
    own = ops.convert_to_numpy(intensity_misfit(np.abs(data.objects).astype(np.float32),
                                                np.angle(data.objects).astype(np.float32),
                                                magnitudes, valid))
    assert own.max() < 1e-5 < ours.min()
    a, p = _as_tensors(data.amplitude, data.phase)
    with_it = float(cdi_loss(a, p, amp, phase, magnitudes, valid, intensity_weight=3.0)[0])
    without = float(cdi_loss(a, p, amp, phase, magnitudes, valid)[0])
    assert with_it == pytest.approx(without + 3.0 * float(ours.mean()), rel=1e-4)


def test_the_3d_recipe_draws_bright_cores_relaxed_rims_and_skirts_only_when_asked():
    plain = Crystal3DRecipe(min_extent=10, max_extent=14)
    wide = Crystal3DRecipe(min_extent=10, max_extent=14, graded_share=1.0, max_grade_power=3.0,
                           shell_share=1.0)
    skirted = Crystal3DRecipe(min_extent=10, max_extent=14, skirt_share=1.0)
    same = random_crystal_slices(6, 4, plain)
    np.testing.assert_array_equal(same, random_crystal_slices(6, 4, Crystal3DRecipe(
        min_extent=10, max_extent=14, graded_share=0.0, shell_share=0.0, skirt_share=0.0)))

    def core_share(objects):  # half-maximum area over the 10% support: lower is more peaked
        a = np.abs(objects) / np.abs(objects).max(axis=(1, 2), keepdims=True)
        return np.median((a > 0.5).sum((1, 2)) / (a > 0.1).sum((1, 2)))

    assert core_share(random_crystal_slices(40, 5, wide)) < core_share(
        random_crystal_slices(40, 5, plain)) - 0.05

    def faint_area(objects):  # pixels between 3% and 20% of the maximum: the skirt
        a = np.abs(objects) / np.abs(objects).max(axis=(1, 2), keepdims=True)
        return np.median(((a > 0.03) & (a < 0.2)).sum((1, 2)))

    assert faint_area(random_crystal_slices(40, 5, skirted)) > 1.5 * faint_area(
        random_crystal_slices(40, 5, plain))


def test_make_models_draws_a_set_again_when_its_recipe_changed(tiny, tmp_path):
    from dataclasses import replace

    default = Crystal3DRecipe()
    assert drawn_with(tiny, default)
    assert not drawn_with(tiny, replace(default, skirt_share=0.5))
    assert not drawn_with(tmp_path / "missing.h5", default)
    older = tmp_path / "older.h5"  # as written before the skirt knobs existed: they read as off
    shutil.copy(tiny, older)
    with h5py.File(older, "r+") as f:
        recipe = json.loads(f.attrs["recipe_3d"])
        f.attrs["recipe_3d"] = json.dumps({k: v for k, v in recipe.items() if "skirt" not in k})
    assert drawn_with(older, default)
    assert not drawn_with(older, replace(default, skirt_share=0.5))


@pytest.mark.slow
def test_a_second_stage_starts_from_the_first(tiny, tmp_path):
    first = tmp_path / "stage1.keras"
    train(load(tiny), first, TrainConfig(epochs=1, batch_size=16, widths=(4, 8, 8), validation=16))
    second = tmp_path / "stage2.keras"
    config = TrainConfig(epochs=1, batch_size=16, widths=(4, 8, 8), validation=16,
                         learning_rate=0.0, warmup_epochs=0.0, initial=str(first),
                         support_weight=10.0, intensity_weight=3.0, amplitude_weight=10.0)
    skirted = generate(tmp_path / "skirted.h5", 48, seed=4, workers=1,
                       recipe_3d=Crystal3DRecipe(skirt_share=1.0))
    train(load(skirted), second, config)
    summary = json.loads(second.with_suffix(".json").read_text())
    assert summary["initial_summary"]["epochs"] == 1 and summary["initial"] == str(first)
    # each stage records the set it learnt from, which the model card reports
    assert summary["data"]["recipe_3d"]["skirt_share"] == 1.0
    assert summary["initial_summary"]["data"]["recipe_3d"]["skirt_share"] == 0.0
    assert summary["initial_summary"]["data"]["seed"] == 3
    from training.card import _polish_lines  # the card names every loss term stage 2 weighted

    text = " ".join(_polish_lines(summary, None))
    for term in ("outside_support", "amplitude_misfit", "intensity_misfit"):
        assert f"`cdistream.adaptation.losses.{term}`" in text
    from cdistream.inference import model as _registers_layers  # noqa: F401

    a = keras.saving.load_model(first, compile=False, safe_mode=True).get_weights()
    b = keras.saving.load_model(second, compile=False, safe_mode=True).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), "lr 0: unchanged"


@pytest.mark.slow
def test_short_training_run_saves_a_loadable_float32_model(tiny, tmp_path):
    out = tmp_path / "cdi_nn.keras"
    config = TrainConfig(epochs=2, batch_size=16, widths=(4, 8, 8), validation=16)
    train(load(tiny), out, config)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert len(summary["history"]) == 2
    assert all(np.isfinite(h["val_loss"]) for h in summary["history"])
    rec = Reconstructor.load(out, precision="float32")  # safe mode, float32 as saved
    objects = load(tiny, limit=4).objects
    res = rec.reconstruct(diffraction_magnitudes(objects))
    assert res.amplitude.shape == (4, N, N) and np.isfinite(res.chi2).all()


def test_the_card_says_per_frame_which_support_matches_the_3d_reconstruction():
    from training.card import _per_frame

    def method(chi2, iou):
        return {"chi2": chi2, "wrapped_iou_vs_3d": iou}

    real = {
        "frames": [10, 11, 12, 13],
        "roi_counts": [100.0, 900.0, 1000.0, 300.0],  # 11 and 12 bright, 10 and 13 flanks
        "methods": {
            "nn": method([0.03, 0.02, 0.02, 0.04], [0.9, 0.6, 0.7, 0.8]),
            "er_hio": method([0.01, 0.01, 0.01, 0.01], [0.3, 0.95, 0.85, 0.4]),
        },
    }
    lines = _per_frame(real, ["nn", "er_hio"])
    rows = [line for line in lines if line.startswith("| 1")]
    assert rows[0] == "| 10 | 0.0300 | 0.0100 | 0.90 | 0.30 |"
    summary = lines[-1]
    assert "on the 2 frames whose ROI holds at least half" in summary
    assert "networks alone 0.65, ER/HIO 620 (ours) 0.90; on the 2 frames" in summary
    assert "flanks, networks alone 0.85, ER/HIO 620 (ours) 0.35." in summary
    # an older metrics file without the 3D columns still renders its chi2 table
    for m in real["methods"].values():
        del m["wrapped_iou_vs_3d"]
    assert _per_frame(real, ["nn", "er_hio"])[-1] == "| 13 | 0.0400 | 0.0100 |"
