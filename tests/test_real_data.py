"""The shipped model on a real measurement, read from ``../shared/data`` (never copied): frames
of the APS 34-ID-C gold crystal's rocking scan near its Bragg condition, through the product's
own offline path (TIFF series -> ROI -> networks -> archive), judged by the slices of the
scan's own 3D reconstruction (ours, and cohere-core's where it is installed), with ER/HIO on
the very ROIs the product cropped as a peer. A reduced version of the model card's real-data
bars (``models/MODEL_CARD.md``, "Real measurement")."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cdistream.bench.cohere import cohere_available
from cdistream.inference.gate import REFINE_ITERATIONS
from cdistream.physics import compare
from training.realdata import iterative_best, run_product, slice_chi2, yardstick

SCAN = Path(__file__).resolve().parents[2] / "shared/data/aps-34idc-au-scan54"
FRAMES = np.arange(95, 103)  # 8 of the 16 frames holding at least 20% of the Bragg frame's
HALF = 0.5  # the refined chi2 stays above this share of the 3D slices' own: no noise fitted
pytestmark = [
    pytest.mark.skipif(not SCAN.is_dir(), reason=f"the real scan is not at {SCAN}"),
    pytest.mark.slow,
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def measured(shipped):
    """The frames reconstructed by the product, alone (with the whole scan in 3D: its slices,
    ours and cohere-core's) and with the default refinement, and ER/HIO's best of 2 random
    starts on the same ROIs (timed in this process)."""
    frames = SCAN / "frames"
    nn = run_product(frames, shipped, 0, FRAMES, volume=True, cohere=cohere_available())
    refined = run_product(frames, shipped, REFINE_ITERATIONS, FRAMES)
    m = np.sqrt(nn.counts).astype(np.float32)
    t0 = time.perf_counter()
    shipped.reconstruct(m, refine=REFINE_ITERATIONS, valid=nn.valid)
    refine_s = time.perf_counter() - t0
    er, er_chi2, er_s = iterative_best(nn.counts, nn.valid, starts=2)
    return nn, refined, er, er_chi2, refine_s, er_s


def test_every_frame_is_reconstructed_and_consecutive_frames_agree(measured):
    nn, refined, *_ = measured
    assert len(nn.chi2) == len(FRAMES) == len(refined.chi2)
    consecutive = compare(nn.objects[1:], nn.objects[:-1]).iou
    assert np.median(consecutive) >= 0.8, consecutive
    # refined, frames fit to the noise agree less (0.78 over the 16 frames: the model card)
    consecutive = compare(refined.objects[1:], refined.objects[:-1]).iou
    assert np.median(consecutive) >= 0.7, consecutive


def test_the_default_refinement_draws_the_3d_crystal_and_stops_at_its_noise(measured):
    """By the scan's own 3D reconstruction: the refined frames' support agrees with its slices at
    least as well as the networks' own, and their chi2 stays above half of what those slices,
    3D-consistent images of this crystal, reach on the same frames (below it is noise)."""
    nn, refined, *_ = measured
    for engine, slices in nn.slices.items():
        before = yardstick(nn.objects, slices)["iou"]["median"]
        after = yardstick(refined.objects, slices)["iou"]["median"]
        assert after >= before, (engine, after, before)
        floor = np.median(slice_chi2(slices, nn.counts, nn.valid))
        assert np.median(refined.chi2) >= HALF * floor, (engine, refined.chi2, floor)
        assert np.median(refined.chi2) < np.median(nn.chi2), "closer to the data than the networks"


def test_the_default_refinement_is_ten_times_faster_than_er_hio(measured):
    nn, refined, _, er_chi2, refine_s, er_s = measured
    assert np.all(refined.chi2 <= nn.chi2 + 1e-6), "never worse than the networks alone"
    assert er_s * 2 / refine_s >= 10, "4 ER/HIO runs take ten times as long (2 timed here)"


@pytest.mark.xfail(strict=True, reason="the networks alone misfit the real scan several times"
                   " worse than ER/HIO: models/MODEL_CARD.md, 'Real measurement'")
def test_the_networks_alone_fit_within_twice_er_hio(measured):
    nn, _, _, er_chi2, *_ = measured
    assert np.median(nn.chi2) <= 2 * np.median(er_chi2)


def test_the_refined_support_agrees_with_er_hio_as_well_as_er_hio_with_itself(measured):
    """ER/HIO's support is not fixed by these patterns: from other seeds it lands elsewhere.
    The bar the card replaces (IoU >= 0.85 with ER/HIO) is measured against that spread."""
    nn, refined, er, *_ = measured
    again, _, _ = iterative_best(nn.counts, nn.valid, starts=2, first_seed=2)
    itself = np.median(compare(again, er).iou)
    assert itself < 0.85, "ER/HIO reproduces itself here: the card's argument no longer holds"
    assert np.median(compare(refined.objects, er).iou) >= itself
